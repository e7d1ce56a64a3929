"""The ``inbound_events`` table: every event received from outside, before it is acknowledged.

``received_at`` is microseconds since the Unix epoch (UTC), like the store's times. ``payload``
holds the raw bytes as received (an HL7 message, a JSON body): it is patient data, kept in the
database like every resource and never logged. ``produced`` is a JSON array of ``Type/id``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from carecoord.db import metadata

__all__ = ["inbound_events"]

RowId = BigInteger().with_variant(Integer(), "sqlite")

inbound_events = Table(
    "inbound_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("dedup_key", String(255), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", String(500), nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("produced", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    UniqueConstraint("source", "dedup_key", name="uq_inbound_events_source_dedup_key"),
    Index("ix_inbound_events_status_received_at", "status", "received_at"),
    Index("ix_inbound_events_received_at", "received_at"),
)
