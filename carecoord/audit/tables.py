"""The ``audit_journals`` table: how much of each audit journal file is already in the store.

The journal's batch of AuditEvents and the new ``ingested`` offset are written in one transaction,
so a journal replayed after a crash resumes exactly where the store stopped.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from carecoord.db import metadata

__all__ = ["audit_journals"]

audit_journals = Table(
    "audit_journals",
    metadata,
    Column("name", String(200), primary_key=True),  # the journal file's name
    Column("ingested", BigInteger, nullable=False),  # bytes of it stored as AuditEvents
)
