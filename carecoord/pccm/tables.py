"""PCCM's ordinary tables: assignments (with the decision), members left unassigned, PCPs left.

An assignment row is ``active`` until it ends (``ended_on``, ``end_reason``: ``changed``,
``disenrolled``, ``pcp-left``); its ``seq`` counts the member's assignments in the program and
names the generated resources. Pending assignments (effective later) are active rows too, so they
count against panel caps.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from carecoord.db import metadata

__all__ = ["ACTIVE", "ENDED", "pccm_assignments", "pccm_pcp_status", "pccm_unassigned"]

ACTIVE: Final = "active"
ENDED: Final = "ended"

_RowId = BigInteger().with_variant(Integer(), "sqlite")

pccm_assignments = Table(
    "pccm_assignments",
    metadata,
    Column("id", _RowId, primary_key=True, autoincrement=True),
    Column("program", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("pcp_id", String(64), nullable=False),
    Column("practice_id", String(64), nullable=True),
    Column("rule", String(32), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("status", String(16), nullable=False),
    Column("decided_on", String(10), nullable=False),
    Column("effective_on", String(10), nullable=False),
    Column("change_until", String(10), nullable=False),
    Column("distance_miles", Float, nullable=True),
    Column("outside_standard", Boolean, nullable=False),
    Column("decision", Text, nullable=False),
    Column("cause", Text, nullable=True),
    Column("decided_at", BigInteger, nullable=False),
    Column("ended_on", String(10), nullable=True),
    Column("end_reason", String(32), nullable=True),
    UniqueConstraint("program", "patient_id", "seq", name="uq_pccm_assignments_seq"),
    Index("ix_pccm_assignments_patient", "program", "patient_id", "status"),
    Index("ix_pccm_assignments_pcp", "program", "status", "pcp_id"),
)

pccm_unassigned = Table(
    "pccm_unassigned",
    metadata,
    Column("program", String(64), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Column("decision", Text, nullable=False),
    Column("decided_at", BigInteger, nullable=False),
)

pccm_pcp_status = Table(
    "pccm_pcp_status",
    metadata,
    Column("program", String(64), primary_key=True),
    Column("pcp_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("since", String(10), nullable=False),
    Column("reason", String(200), nullable=True),
)
