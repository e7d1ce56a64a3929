"""Push to EHRs: the last pushed version, EHR id, ETag and conflicts of each resource.

Revision ID: 0007_push
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_push"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_state",
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("local_id", sa.String(64), nullable=False),
        sa.Column("ehr_id", sa.String(64), nullable=True),
        sa.Column("ehr_version", sa.String(64), nullable=True),
        sa.Column("pushed_version", sa.Integer(), nullable=True),
        sa.Column("pushed_content", sa.Text(), nullable=True),
        sa.Column("conflict", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("conflict_reason", sa.String(255), nullable=True),
        sa.Column("conflict_version", sa.Integer(), nullable=True),
        sa.Column("conflict_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection", "res_type", "local_id", name="pk_push_state"),
    )
    # Open conflicts, for the people who resolve them.
    op.create_index(
        "ix_push_state_conflict",
        "push_state",
        ["connection"],
        postgresql_where=sa.text("conflict"),
        sqlite_where=sa.text("conflict"),
    )


def downgrade() -> None:
    op.drop_index("ix_push_state_conflict", table_name="push_state")
    op.drop_table("push_state")
