"""The checklist as people see it: items with owners, deadlines and business days left.

Built from stored CarePlan and Task JSON (no validation round trip); shared by the JSON API and
the screens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    TASK_IDENTIFIER_SYSTEM,
    TASK_OUTPUT_SYSTEM,
)
from carecoord.transitions.guard import REQUIRED_EXTENSION, TCM_EXTENSION, task_code
from carecoord.transitions.taskflow import OPEN

__all__ = ["ItemView", "checklist_view", "item_view"]


@dataclass(frozen=True)
class ItemView:
    """One item of a checklist, ready to show."""

    task_id: str
    key: str
    code: str | None
    title: str
    status: str
    owner: str | None
    role: str | None
    priority: str | None
    required: bool
    due: str | None
    due_date: date | None
    business_days_left: int | None  # negative when overdue; None when closed or no deadline
    overdue: bool
    status_reason: str | None
    billing_code: str | None

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "due_date"}
        data["due_date"] = self.due_date.isoformat() if self.due_date else None
        return data


def _due_date(due: str | None, calendar: BusinessCalendar) -> date | None:
    if not due:
        return None
    if "T" not in due:
        return date.fromisoformat(due[:10])
    return calendar.local_date(datetime.fromisoformat(due.replace("Z", "+00:00")))


def item_view(
    task_id: str, task: dict[str, Any], calendar: BusinessCalendar, today: date
) -> ItemView:
    key = ""
    for ident in task.get("identifier") or []:
        if ident.get("system") == TASK_IDENTIFIER_SYSTEM:
            key = str(ident.get("value", "")).partition(":")[2]
    role = None
    for concept in task.get("performerType") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == CARE_ROLE_SYSTEM:
                role = coding.get("code")
    due = (task.get("restriction") or {}).get("period", {}).get("end")
    due_day = _due_date(due, calendar)
    status = str(task.get("status"))
    left: int | None = None
    overdue = False
    if due_day is not None and status in OPEN:
        if due_day >= today:
            left = calendar.business_days_between(today, due_day)
        else:
            left = -calendar.business_days_between(due_day, today)
            overdue = True
    billing = None
    for output in task.get("output") or []:
        codings = (output.get("type") or {}).get("coding") or []
        if any(
            c.get("system") == TASK_OUTPUT_SYSTEM and c.get("code") == "tcm-billing-code"
            for c in codings
        ):
            value = (output.get("valueCodeableConcept") or {}).get("coding") or [{}]
            billing = value[0].get("code")
    required = any(
        e.get("url") == REQUIRED_EXTENSION and e.get("valueBoolean")
        for e in task.get("extension") or []
    )
    return ItemView(
        task_id=task_id,
        key=key,
        code=task_code(task),
        title=str((task.get("code") or {}).get("text") or task.get("description") or ""),
        status=status,
        owner=(task.get("owner") or {}).get("reference"),
        role=role,
        priority=task.get("priority"),
        required=required,
        due=due,
        due_date=due_day,
        business_days_left=left,
        overdue=overdue,
        status_reason=(task.get("statusReason") or {}).get("text"),
        billing_code=billing,
    )


def _tcm(plan: dict[str, Any]) -> dict[str, Any]:
    for ext in plan.get("extension") or []:
        if ext.get("url") == TCM_EXTENSION:
            out: dict[str, Any] = {}
            for part in ext.get("extension") or []:
                value = next((v for k, v in part.items() if k.startswith("value")), None)
                out[str(part.get("url"))] = value
            return out
    return {}


def checklist_view(
    plan_id: str,
    plan: dict[str, Any],
    tasks: dict[str, dict[str, Any]],
    calendar: BusinessCalendar,
    today: date,
) -> dict[str, Any]:
    """A CarePlan with its items in deadline order."""
    order = [
        str((a.get("reference") or {}).get("reference", "")).partition("/")[2]
        for a in plan.get("activity") or []
    ]
    items = [item_view(t, tasks[t], calendar, today) for t in order if t in tasks]
    items.sort(key=lambda i: (i.due_date or date.max, i.key))
    return {
        "careplan": plan_id,
        "status": plan.get("status"),
        "title": plan.get("title"),
        "encounter": (plan.get("encounter") or {}).get("reference"),
        "period": plan.get("period"),
        "tcm": _tcm(plan),
        "today": today.isoformat(),
        "items": [i.to_json() for i in items],
    }
