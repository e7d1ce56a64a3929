"""Case management: caseload assignment decisions (automatic, chosen, cap override, reassigned).

Revision ID: 0012_cases
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_cases"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "case_assignments",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("care_manager", sa.String(140), nullable=False),
        sa.Column("previous_manager", sa.String(140), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("load_before", sa.Float(), nullable=False),
        sa.Column("cap", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_assignments"),
    )
    op.create_index("ix_case_assignments_case", "case_assignments", ["case_id", "id"])
    op.create_index("ix_case_assignments_manager", "case_assignments", ["care_manager", "id"])


def downgrade() -> None:
    op.drop_index("ix_case_assignments_manager", table_name="case_assignments")
    op.drop_index("ix_case_assignments_case", table_name="case_assignments")
    op.drop_table("case_assignments")
