"""Plain views of Tasks and transition checklists: titles, owners, deadlines and allowed actions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    TRANSITION_OF_CARE,
    CareRole,
    TaskCode,
    role_display,
    task_display,
)
from carecoord.transitions.taskflow import MOVES, OPEN
from carecoord.transitions.workflow import CONTACT_CODES
from carecoord.web.countdown import Deadline, deadline_of

__all__ = [
    "FINAL_STATUSES",
    "Checklist",
    "TaskRow",
    "actions_for",
    "checklist_of",
    "is_transition_checklist",
    "ref_id",
    "task_row",
]

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "rejected", "entered-in-error"})


def ref_id(reference: Any, res_type: str | None = None) -> str | None:
    """The id in ``{"reference": "Type/id"}`` (optionally only of ``res_type``)."""
    if not isinstance(reference, Mapping):
        return None
    value = reference.get("reference")
    if not isinstance(value, str) or "/" not in value:
        return None
    kind, _, rid = value.rstrip("/").rpartition("/")
    kind = kind.rpartition("/")[2]
    if res_type is not None and kind != res_type:
        return None
    return rid or None


def _coding(concept: Any, system: str) -> str | None:
    if not isinstance(concept, Mapping):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and coding.get("system") == system:
            code = coding.get("code")
            return str(code) if code else None
    return None


def _task_code(task: Mapping[str, Any]) -> TaskCode | None:
    code = _coding(task.get("code"), TASK_CODE_SYSTEM)
    try:
        return TaskCode(code) if code else None
    except ValueError:
        return None


def _title(task: Mapping[str, Any], code: TaskCode | None) -> str:
    if code is not None:
        return task_display(code)
    concept = task.get("code")
    if isinstance(concept, Mapping) and isinstance(concept.get("text"), str):
        return str(concept["text"])
    return str(task.get("description") or "Task")


def actions_for(status: str, code: TaskCode | None) -> tuple[str, ...]:
    """The one-click actions the Task state machine (:data:`MOVES`) allows from ``status`` (who
    may make them is checked on the write)."""
    if status in FINAL_STATUSES:
        return ()
    actions: list[str] = []
    if code in CONTACT_CODES and status in OPEN and status != "on-hold":
        actions.append("contact")
    if (status, "accepted") in MOVES:
        actions.append("accept")
    if status in ("requested", "received", "ready", "accepted", "in-progress"):
        actions.append("complete")
    if (status, "on-hold") in MOVES:
        actions.append("hold")
    if status == "on-hold":
        actions.append("resume")
    actions.append("reassign")
    if (status, "rejected") in MOVES:
        actions.append("reject")
    return tuple(actions)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One Task as a row of a checklist, worklist or inbox."""

    id: str
    version: str
    code: str | None
    title: str
    status: str
    priority: str
    patient_id: str | None
    owner: str | None
    owner_display: str
    role: str | None
    role_display: str
    deadline: Deadline | None
    done_at: str | None
    status_reason: str | None
    actions: tuple[str, ...]
    updated: str = ""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def _reason(task: Mapping[str, Any]) -> str | None:
    reason = task.get("statusReason")
    if not isinstance(reason, Mapping):
        return None
    if isinstance(reason.get("text"), str):
        return str(reason["text"])
    for coding in reason.get("coding") or ():
        if isinstance(coding, Mapping) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


def task_row(
    task: Mapping[str, Any],
    *,
    now: datetime,
    tz: ZoneInfo,
    names: Mapping[str, str] | None = None,
) -> TaskRow:
    """A Task resource as a row; ``names`` maps ``Type/id`` references to display names."""
    code = _task_code(task)
    status = str(task.get("status") or "unknown")
    owner_ref = task.get("owner")
    owner = owner_ref.get("reference") if isinstance(owner_ref, Mapping) else None
    owner_display = ""
    if isinstance(owner_ref, Mapping):
        owner_display = str(
            (names or {}).get(str(owner)) or owner_ref.get("display") or owner or ""
        )
    role = None
    for concept in task.get("performerType") or ():
        role = _coding(concept, CARE_ROLE_SYSTEM) or role
    restriction = task.get("restriction")
    period = restriction.get("period") if isinstance(restriction, Mapping) else None
    due = period.get("end") if isinstance(period, Mapping) else None
    execution = task.get("executionPeriod")
    done_at = execution.get("end") if isinstance(execution, Mapping) else None
    meta = task.get("meta")
    return TaskRow(
        id=str(task.get("id") or ""),
        version=str(meta.get("versionId") or "") if isinstance(meta, Mapping) else "",
        code=code.value if code else None,
        title=_title(task, code),
        status=status,
        priority=str(task.get("priority") or "routine"),
        patient_id=ref_id(task.get("for"), "Patient"),
        owner=str(owner) if owner else None,
        owner_display=owner_display or "unassigned",
        role=role,
        role_display=_role_name(role),
        deadline=deadline_of(
            str(due) if due else None, now=now, tz=tz, done=status in FINAL_STATUSES
        ),
        done_at=str(done_at) if done_at else None,
        status_reason=_reason(task),
        actions=actions_for(status, code),
        updated=str(meta.get("lastUpdated") or "") if isinstance(meta, Mapping) else "",
    )


def _role_name(role: str | None) -> str:
    try:
        return role_display(CareRole(role)) if role else ""
    except ValueError:
        return role or ""


def is_transition_checklist(care_plan: Mapping[str, Any]) -> bool:
    """Whether a CarePlan is a transition-of-care checklist."""
    return any(
        _coding(c, CAREPLAN_CATEGORY_SYSTEM) == TRANSITION_OF_CARE
        for c in care_plan.get("category") or ()
    )


@dataclass(frozen=True, slots=True)
class Checklist:
    """A transition checklist: its CarePlan and its Tasks, soonest deadline first."""

    id: str
    status: str
    discharge: date | None
    encounter_id: str | None
    tasks: tuple[TaskRow, ...]

    @property
    def done(self) -> int:
        return sum(1 for t in self.tasks if t.status == "completed")

    @property
    def open(self) -> int:
        return sum(1 for t in self.tasks if not t.final)


def _sort_key(row: TaskRow) -> tuple[int, str, str]:
    due = row.deadline.due_at.isoformat() if row.deadline else "9999"
    return (1 if row.final else 0, due, row.title)


def checklist_of(
    care_plan: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    tz: ZoneInfo,
    names: Mapping[str, str] | None = None,
) -> Checklist:
    """The checklist of ``care_plan`` over the Tasks its activities reference."""
    wanted = {ref_id(a.get("reference"), "Task") for a in care_plan.get("activity") or ()}
    rows = [task_row(t, now=now, tz=tz, names=names) for t in tasks if str(t.get("id")) in wanted]
    period = care_plan.get("period")
    start = period.get("start") if isinstance(period, Mapping) else None
    discharge = None
    if isinstance(start, str) and len(start) >= 10:
        try:
            instant = datetime.fromisoformat(start.replace("Z", "+00:00"))
            discharge = instant.astimezone(tz).date() if instant.tzinfo else instant.date()
        except ValueError:
            discharge = None
    encounter_id = ref_id(care_plan.get("encounter"), "Encounter")
    for ident in care_plan.get("identifier") or ():
        if isinstance(ident, Mapping) and ident.get("system") == CAREPLAN_IDENTIFIER_SYSTEM:
            encounter_id = str(ident.get("value") or "") or encounter_id
    return Checklist(
        id=str(care_plan.get("id") or ""),
        status=str(care_plan.get("status") or "unknown"),
        discharge=discharge,
        encounter_id=encounter_id,
        tasks=tuple(sorted(rows, key=_sort_key)),
    )
