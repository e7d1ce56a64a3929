"""Audit journal offsets: bytes of each local audit journal already stored as AuditEvents.

Revision ID: 0013_audit_journal
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_audit_journal"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_journals",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("ingested", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_audit_journals"),
    )


def downgrade() -> None:
    op.drop_table("audit_journals")
