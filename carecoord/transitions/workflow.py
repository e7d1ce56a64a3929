"""What people do with checklist items: record contact attempts, move, reassign.

Every action is a Task write through the store with the person's access policy, so the Task state
machine decides who may do what (a refused move is a 422 naming it).

Contact attempts are Communications (category ``contact-attempt``, ``basedOn`` the Task; status
completed when the patient or caregiver was reached, not-done otherwise). Reaching them completes
the item; for the TCM interactive contact, two documented unsuccessful attempts satisfy the
requirement too (CPT guidance): the Task completes with business status
``contact-attempts-satisfied`` (and the team keeps trying through the follow-up calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from carecoord.fhir.errors import BusinessRule, InvalidRequest, NotFound
from carecoord.fhir.store import StoredResource, Writer
from carecoord.transitions.codes import (
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_BUSINESS_STATUS_SYSTEM,
    TASK_OUTPUT_SYSTEM,
    TaskCode,
)
from carecoord.transitions.guard import task_code
from carecoord.transitions.service import format_due
from carecoord.transitions.taskflow import OPEN, REASON_REQUIRED

__all__ = [
    "ATTEMPT_IDENTIFIER_SYSTEM",
    "CONTACT_CODES",
    "ContactResult",
    "move_task",
    "reassign_task",
    "record_contact_attempt",
]

#: Communication.identifier of a contact attempt: ``{task id}:attempt-{n}``.
ATTEMPT_IDENTIFIER_SYSTEM: Final = "https://carecoord.org/fhir/sid/contact-attempt"
#: Items a contact attempt can be recorded on.
CONTACT_CODES: Final = frozenset({TaskCode.TCM_INTERACTIVE_CONTACT, TaskCode.FOLLOW_UP_CALL})
_WORK: Final = frozenset({"in-progress", "completed", "failed"})
#: Unsuccessful attempts that satisfy the TCM contact requirement.
ATTEMPTS_SATISFYING: Final = 2


@dataclass(frozen=True)
class ContactResult:
    """The attempt recorded and what it did to the item."""

    communication_id: str
    attempt: int
    unsuccessful: int
    task: StoredResource


def _load_task(w: Writer, task_id: str) -> dict[str, Any]:
    stored = w.read("Task", task_id)
    data = orjson.loads(stored.content) if stored.content else None
    if not isinstance(data, dict):
        raise NotFound(f"Task/{task_id} is not known")
    return data


def _business(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": TASK_BUSINESS_STATUS_SYSTEM, "code": code}], "text": text}


def _finish(task: dict[str, Any], status: str, when: datetime) -> dict[str, Any]:
    period = dict(task.get("executionPeriod") or {})
    if status == "in-progress":
        period.setdefault("start", format_due(when))
    if status in ("completed", "failed"):
        period.setdefault("start", format_due(when))
        period["end"] = format_due(when)
    updated = {**task, "status": status}
    if period:
        updated["executionPeriod"] = period
    return updated


def record_contact_attempt(
    w: Writer,
    *,
    task_id: str,
    reached: bool,
    when: datetime,
    note: str | None = None,
    by: str | None = None,
    medium: str = "phone",
) -> ContactResult:
    """Record one attempt to reach the patient on a contact item, and move the item."""
    task = _load_task(w, task_id)
    if task_code(task) not in CONTACT_CODES:
        raise BusinessRule("Contact attempts are recorded on contact and follow-up-call items")
    if task.get("status") not in OPEN:
        raise BusinessRule(f"The item is {task.get('status')}: no more attempts are recorded on it")
    previous = w.find("Communication", [("based-on", f"Task/{task_id}")], limit=1000)
    attempts = []
    for comm_id in previous:
        comm = orjson.loads(w.read("Communication", comm_id).content or b"{}")
        if any(
            c.get("code") == "contact-attempt"
            for cat in comm.get("category") or []
            for c in cat.get("coding") or []
        ):
            attempts.append(comm)
    number = len(attempts) + 1
    unsuccessful = sum(1 for a in attempts if a.get("status") == "not-done") + (not reached)
    body: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [
            {"system": ATTEMPT_IDENTIFIER_SYSTEM, "value": f"{task_id}:attempt-{number}"}
        ],
        "basedOn": [{"reference": f"Task/{task_id}"}],
        "status": "completed" if reached else "not-done",
        "category": [
            {
                "coding": [
                    {
                        "system": COMMUNICATION_CATEGORY_SYSTEM,
                        "code": "contact-attempt",
                        "display": "Contact attempt",
                    }
                ]
            }
        ],
        "medium": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                        "code": "PHONE" if medium == "phone" else "ELECTRONIC",
                    }
                ]
            }
        ],
        "sent": format_due(when),
    }
    if task.get("for"):
        body["subject"] = task["for"]
        body["recipient"] = [task["for"]]
    if task.get("encounter"):
        body["encounter"] = task["encounter"]
    if by:
        body["sender"] = {"reference": by}
    if not reached:
        body["statusReason"] = {"text": note or "Patient not reached"}
    if note:
        body["payload"] = [{"contentString": note}]
    ident = f"{ATTEMPT_IDENTIFIER_SYSTEM}|{task_id}:attempt-{number}"
    comm = w.create("Communication", body, if_none_exist=[("identifier", ident)]).resource
    output = {
        "type": {"coding": [{"system": TASK_OUTPUT_SYSTEM, "code": "contact-attempt"}]},
        "valueReference": {"reference": f"Communication/{comm.res_id}"},
    }
    updated = {**task, "output": [*(task.get("output") or []), output]}
    status = str(task.get("status"))
    satisfied = (
        not reached
        and task_code(updated) == TaskCode.TCM_INTERACTIVE_CONTACT
        and unsuccessful >= ATTEMPTS_SATISFYING
    )
    if status in ("requested", "received"):  # recording an attempt takes the item on
        w.update("Task", task_id, {**updated, "status": "accepted"})
        updated, status = _load_task(w, task_id), "accepted"
    if reached or satisfied:
        updated = _finish(updated, "completed", when)
        updated["businessStatus"] = (
            _business("contact-made", "Patient or caregiver reached")
            if reached
            else _business(
                "contact-attempts-satisfied",
                f"{unsuccessful} documented unsuccessful attempts",
            )
        )
    elif status in ("ready", "accepted"):
        updated = _finish(updated, "in-progress", when)
    written = w.update("Task", task_id, updated).resource
    return ContactResult(comm.res_id, number, unsuccessful, written)


def move_task(
    w: Writer, *, task_id: str, status: str, when: datetime, reason: str | None = None
) -> StoredResource:
    """Move an item to ``status`` (with a reason where the state machine needs one).

    Doing the work of a requested item (in-progress, completed, failed) accepts it first.
    """
    task = _load_task(w, task_id)
    if status in REASON_REQUIRED and not (reason and reason.strip()):
        raise InvalidRequest(f"A reason is required to put an item {status}")
    if status in _WORK and task.get("status") in ("requested", "received"):
        w.update("Task", task_id, {**task, "status": "accepted"})
        task = _load_task(w, task_id)
    updated = _finish(task, status, when)
    if reason and reason.strip():
        updated["statusReason"] = {"text": reason.strip()}
    return w.update("Task", task_id, updated).resource


def reassign_task(
    w: Writer, *, task_id: str, owner: str, reason: str | None = None
) -> StoredResource:
    """Give an item to another owner (a Practitioner, PractitionerRole or Organization)."""
    res_type, _, res_id = owner.partition("/")
    if res_type not in ("Practitioner", "PractitionerRole", "Organization") or not res_id:
        raise InvalidRequest("owner must be a Practitioner, PractitionerRole or Organization")
    w.read(res_type, res_id)  # 404 when the new owner does not exist
    task = _load_task(w, task_id)
    updated = {**task, "owner": {"reference": owner}}
    if reason and reason.strip():
        note = {"text": f"Reassigned: {reason.strip()}"}
        updated["note"] = [*(task.get("note") or []), note]
    return w.update("Task", task_id, updated).resource
