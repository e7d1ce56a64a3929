"""Inbound events: each event received, stored before it is acknowledged, once per source and key.

HL7 v2 messages, Da Vinci notifications, subscription notifications and FHIR writes alike; a
replay (same source and key) changes nothing.

Revision ID: 0005_inbound_events
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_inbound_events"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbound_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("produced", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_events"),
        sa.UniqueConstraint("source", "dedup_key", name="uq_inbound_events_source_dedup_key"),
    )
    op.create_index(
        "ix_inbound_events_status_received_at", "inbound_events", ["status", "received_at"]
    )
    op.create_index("ix_inbound_events_received_at", "inbound_events", ["received_at"])


def downgrade() -> None:
    op.drop_table("inbound_events")
