"""The ``readmissions`` table: every readmission found, for listing by date (ids only, no PHI)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, Index, Integer, String, Table

from carecoord.db import metadata

__all__ = ["readmissions"]

readmissions = Table(
    "readmissions",
    metadata,
    Column("readmission_encounter", String(64), primary_key=True),
    Column("index_encounter", String(64), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("index_discharged", Date, nullable=False),
    Column("readmitted", Date, nullable=False),
    Column("days", Integer, nullable=False),
    Column("planned", Boolean, nullable=False),
    Column("planned_rule", String(64), nullable=True),
    Column("facility", String(64), nullable=True),
    Column("task", String(64), nullable=True),
    Column("detected_at", BigInteger, nullable=False),
    Index("ix_readmissions_readmitted", "readmitted"),
    Index("ix_readmissions_patient", "patient"),
)
