"""30-day readmissions found (index and readmission encounters, days between, planned or not).

Revision ID: 0011_readmissions
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_readmissions"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "readmissions",
        sa.Column("readmission_encounter", sa.String(64), nullable=False),
        sa.Column("index_encounter", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("index_discharged", sa.Date(), nullable=False),
        sa.Column("readmitted", sa.Date(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("planned", sa.Boolean(), nullable=False),
        sa.Column("planned_rule", sa.String(64), nullable=True),
        sa.Column("facility", sa.String(64), nullable=True),
        sa.Column("task", sa.String(64), nullable=True),
        sa.Column("detected_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("readmission_encounter", name="pk_readmissions"),
    )
    op.create_index("ix_readmissions_readmitted", "readmissions", ["readmitted"])
    op.create_index("ix_readmissions_patient", "readmissions", ["patient"])


def downgrade() -> None:
    op.drop_index("ix_readmissions_patient", table_name="readmissions")
    op.drop_index("ix_readmissions_readmitted", table_name="readmissions")
    op.drop_table("readmissions")
