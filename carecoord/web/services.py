"""What the screens' buttons do: Task actions and contact attempts, each in one write transaction
through the store with the user's access policy (which enforces scopes, the patient compartment
and the Task state machine), with its AuditEvents. The moves themselves are
:mod:`carecoord.transitions.workflow`'s.

Errors (all :class:`carecoord.fhir.errors.FhirError`): InvalidRequest (a reason or owner is
missing), Forbidden/NotFound (outside the policy), PreconditionFailed (the Task changed since the
page showed it), BusinessRule (the state machine forbids the move).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import orjson

from carecoord.audit.rest import RestAudit
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import InvalidRequest, PreconditionFailed
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.transitions.workflow import move_task, reassign_task, record_contact_attempt

__all__ = ["CONTACT_ATTEMPT", "Action", "act_on_task", "previous_status", "record_contact"]

CONTACT_ATTEMPT: Final = "contact-attempt"
Action = Literal["accept", "reject", "complete", "hold", "resume", "reassign"]
_TARGET: Final[dict[str, str]] = {
    "accept": "accepted",
    "reject": "rejected",
    "complete": "completed",
    "hold": "on-hold",
}


def previous_status(store: FhirStore, task_id: str, policy: AccessPolicy | None) -> str | None:
    """The status a Task had before it was put on hold (from its history)."""
    page = store.history("Task", task_id, count=50, policy=policy)
    for entry in page.entries:
        content = entry.resource.content
        status = orjson.loads(content).get("status") if content else None
        if status and status != "on-hold":
            return str(status)
    return None


def _audit(
    w: Writer,
    audit: RestAudit | None,
    policy: AccessPolicy | None,
    request_id: str | None,
    stored: StoredResource,
    interaction: str = "update",
) -> None:
    if audit is not None:
        audit.on_write(w, policy, request_id, interaction, stored)


def act_on_task(
    store: FhirStore,
    *,
    policy: AccessPolicy | None,
    task_id: str,
    action: Action,
    version: int | None,
    now: datetime,
    reason: str | None = None,
    owner: str | None = None,
    audit: RestAudit | None = None,
    request_id: str | None = None,
) -> StoredResource:
    """Apply ``action`` to the Task; ``version`` is the one the user saw (checked first)."""
    resume_to = previous_status(store, task_id, policy) if action == "resume" else None

    def work(w: Writer) -> StoredResource:
        current = w.read("Task", task_id)
        if version is not None and current.version_id != version:
            raise PreconditionFailed("The task changed since it was shown")
        if action == "reassign":
            if not owner:
                raise InvalidRequest("Choose whom to assign the task to")
            stored = reassign_task(w, task_id=task_id, owner=owner, reason=reason)
        elif action == "resume":
            stored = move_task(w, task_id=task_id, status=resume_to or "in-progress", when=now)
        else:
            stored = move_task(w, task_id=task_id, status=_TARGET[action], when=now, reason=reason)
        _audit(w, audit, policy, request_id, stored)
        return stored

    return store.write(work, policy=policy)


def record_contact(
    store: FhirStore,
    *,
    policy: AccessPolicy | None,
    task_id: str,
    reached: bool,
    note: str,
    when: datetime,
    by: str | None = None,
    audit: RestAudit | None = None,
    request_id: str | None = None,
) -> StoredResource:
    """Record a contact attempt on a contact item (a reached patient, or the second unsuccessful
    TCM attempt, completes it: :func:`record_contact_attempt`)."""

    def work(w: Writer) -> StoredResource:
        result = record_contact_attempt(
            w, task_id=task_id, reached=reached, when=when, note=note.strip() or None, by=by
        )
        _audit(
            w, audit, policy, request_id, w.read("Communication", result.communication_id), "create"
        )
        _audit(w, audit, policy, request_id, result.task)
        return result.task

    return store.write(work, policy=policy)
