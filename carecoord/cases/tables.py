"""The ``case_assignments`` table: every caseload decision (automatic, chosen, override, moved).

Times are microseconds since the Unix epoch (UTC), like the FHIR store's. Rows hold ids and
reasons typed by staff about staffing (cap overrides, leave), never patient data.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table

from carecoord.db import metadata

__all__ = ["case_assignments"]

case_assignments = Table(
    "case_assignments",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("case_id", String(64), nullable=False),
    Column("care_manager", String(140), nullable=False),
    Column("previous_manager", String(140), nullable=True),
    Column("kind", String(16), nullable=False),  # auto | chosen | override | reassigned
    Column("reason", String(500), nullable=True),
    Column("load_before", Float, nullable=False),
    Column("cap", Float, nullable=False),
    Column("decided_at", BigInteger, nullable=False),
    Index("ix_case_assignments_case", "case_id", "id"),
    Index("ix_case_assignments_manager", "care_manager", "id"),
)
