"""Audit of access to patient data: one AuditEvent per interaction (IHE Basic Audit Log Patterns).

Writes are audited in the same transaction as the change. Reads and searches are audited by a
group-commit writer (:class:`AuditWriter`): the request waits until its events are committed, and
fails if they cannot be, while many requests share one commit.
"""

from __future__ import annotations

from carecoord.audit.events import audit_event, patients_in
from carecoord.audit.writer import AuditWriter

__all__ = ["AuditWriter", "audit_event", "patients_in"]
