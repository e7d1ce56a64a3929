"""Audit of access to patient data: one AuditEvent per interaction (IHE Basic Audit Log Patterns).

Writes are audited in the same transaction as the change. Reads, searches and refusals are
recorded in the audit journal (:class:`AuditJournal`) before they are answered, and refused if they
cannot be; the journal is stored as AuditEvents in large batches behind them.
"""

from __future__ import annotations

from carecoord.audit.events import audit_event, patients_in
from carecoord.audit.journal import AuditJournal

__all__ = ["AuditJournal", "audit_event", "patients_in"]
