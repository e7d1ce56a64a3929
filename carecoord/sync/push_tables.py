"""The ``push_state`` table: what CareCoord last pushed of each resource to each EHR connection."""

from __future__ import annotations

from typing import Final

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, false, text

from carecoord.db import metadata

__all__ = ["REASON_LENGTH", "push_state"]

REASON_LENGTH: Final = 255

#: One row per (connection, local type, local id) pushed or tried. ``pushed_content`` is the body
#: last written to the EHR (its ids and references), the base of the three-way merge on 412/409.
#: ``conflict`` holds further pushes until a person resolves it; ``conflict_reason`` names the
#: colliding elements (never their values).
push_state = Table(
    "push_state",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("local_id", String(64), primary_key=True),
    Column("ehr_id", String(64), nullable=True),
    Column("ehr_version", String(64), nullable=True),
    Column("pushed_version", Integer(), nullable=True),
    Column("pushed_content", Text(), nullable=True),
    Column("conflict", Boolean(), nullable=False, server_default=false()),
    Column("conflict_reason", String(REASON_LENGTH), nullable=True),
    Column("conflict_version", Integer(), nullable=True),
    Column("conflict_at", BigInteger(), nullable=True),
    Column("updated_at", BigInteger(), nullable=False),
    Index(
        "ix_push_state_conflict",
        "connection",
        postgresql_where=text("conflict"),
        sqlite_where=text("conflict"),
    ),
)
