"""Escalation: tell the owner (then the supervisor) when an item is due soon or overdue.

Each escalation step of each generated Task is a delayed ``transitions.escalate`` job queued with
the checklist (key: task, step and deadline). When it runs, the Task must still be open and still
have that deadline (a recomputed deadline queued its own job); the notice is a Communication with
the deterministic identifier ``{task id}:{step}``, written with conditional create, so a step
notifies once, however often the job runs or the deadline moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from carecoord.fhir.store import Writer
from carecoord.transitions.assignment import Assigner
from carecoord.transitions.codes import (
    COMMUNICATION_CATEGORY_SYSTEM,
    ESCALATION_IDENTIFIER_SYSTEM,
    CareRole,
)
from carecoord.transitions.resources import read_json, reference_of
from carecoord.transitions.service import format_due
from carecoord.transitions.taskflow import OPEN

__all__ = ["EscalationResult", "escalate"]

EscalationResult = str  # "sent" | "already-sent" | "closed" | "stale" | "no-recipient" | "gone"

_WHEN_TEXT: Final = {"due-soon": "Due soon", "overdue": "Overdue"}


def _recipients(w: Writer, task: dict[str, Any], notify: list[str]) -> list[str]:
    patient_ref = reference_of(task.get("for")) or ""
    encounter_ref = reference_of(task.get("encounter")) or ""
    patient = read_json(w, "Patient", patient_ref.partition("/")[2]) if patient_ref else None
    encounter = (
        read_json(w, "Encounter", encounter_ref.partition("/")[2]) if encounter_ref else None
    )
    assigner = Assigner(w, patient or {}, encounter or {})
    found: list[str] = []
    for target in notify:
        if target == "owner":
            who = reference_of(task.get("owner")) or reference_of(task.get("requester"))
        else:
            try:
                who = assigner.owner(CareRole(target))
            except ValueError:
                who = None
        if who is None and target != "owner":
            who = reference_of((encounter or {}).get("serviceProvider"))  # the organisation's desk
        if who and who not in found:
            found.append(who)
    return found


def escalate(
    w: Writer,
    *,
    task_id: str,
    step: str,
    when: str,
    due: str,
    notify: list[str],
    now: datetime,
) -> EscalationResult:
    """Send one escalation step of one Task, at most once."""
    task = read_json(w, "Task", task_id)
    if task is None:
        return "gone"
    if task.get("status") not in OPEN:
        return "closed"
    if (task.get("restriction") or {}).get("period", {}).get("end") != due:
        return "stale"
    ident = f"{ESCALATION_IDENTIFIER_SYSTEM}|{task_id}:{step}"
    if w.find("Communication", [("identifier", ident)], limit=1):
        return "already-sent"
    recipients = _recipients(w, task, notify)
    if not recipients:
        return "no-recipient"
    title = (task.get("code") or {}).get("text") or task.get("description") or "Checklist item"
    text = f"{_WHEN_TEXT.get(when, when)}: {title} (due {due})"
    body: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": ESCALATION_IDENTIFIER_SYSTEM, "value": f"{task_id}:{step}"}],
        "status": "completed",
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY_SYSTEM, "code": "escalation"}]}],
        "priority": "urgent" if when == "overdue" else "routine",
        "about": [{"reference": f"Task/{task_id}"}],
        "basedOn": [{"reference": f"Task/{task_id}"}],
        "recipient": [{"reference": r} for r in recipients],
        "sent": format_due(now),
        "payload": [{"contentString": text}],
    }
    if task.get("for"):
        body["subject"] = task["for"]
    if task.get("encounter"):
        body["encounter"] = task["encounter"]
    w.create("Communication", body, if_none_exist=[("identifier", ident)])
    return "sent"
