"""PCCM: assignment decisions with their reasons, members left unassigned, PCPs that left.

Revision ID: 0010_pccm
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_pccm"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pccm_assignments",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("pcp_id", sa.String(64), nullable=False),
        sa.Column("practice_id", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_on", sa.String(10), nullable=False),
        sa.Column("effective_on", sa.String(10), nullable=False),
        sa.Column("change_until", sa.String(10), nullable=False),
        sa.Column("distance_miles", sa.Float(), nullable=True),
        sa.Column("outside_standard", sa.Boolean(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_on", sa.String(10), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pccm_assignments"),
        sa.UniqueConstraint("program", "patient_id", "seq", name="uq_pccm_assignments_seq"),
    )
    op.create_index(
        "ix_pccm_assignments_patient", "pccm_assignments", ["program", "patient_id", "status"]
    )
    op.create_index("ix_pccm_assignments_pcp", "pccm_assignments", ["program", "status", "pcp_id"])
    op.create_table(
        "pccm_unassigned",
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("program", "patient_id", name="pk_pccm_unassigned"),
    )
    op.create_table(
        "pccm_pcp_status",
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("pcp_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("program", "pcp_id", name="pk_pccm_pcp_status"),
    )


def downgrade() -> None:
    op.drop_table("pccm_pcp_status")
    op.drop_table("pccm_unassigned")
    op.drop_index("ix_pccm_assignments_pcp", table_name="pccm_assignments")
    op.drop_index("ix_pccm_assignments_patient", table_name="pccm_assignments")
    op.drop_table("pccm_assignments")
