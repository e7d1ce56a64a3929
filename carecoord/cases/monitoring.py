"""Monitoring work a case model asks for: next contact and reassessment, due or overdue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from carecoord.cases.config import ModelProfile
from carecoord.transitions.codes import TaskCode

__all__ = ["DueState", "MonitoringItem", "due_state", "expected_contacts", "next_monitoring"]

DueState = Literal["upcoming", "due", "overdue"]


@dataclass(frozen=True, slots=True)
class MonitoringItem:
    """A monitoring Task to have open: its code, deterministic key and due date."""

    code: TaskCode
    key: str
    due: date


def next_monitoring(
    profile: ModelProfile,
    *,
    started: date,
    last_contact: date | None,
    last_assessment: date | None,
) -> list[MonitoringItem]:
    """The next contact (after the last one, or the case start) and the next reassessment."""
    contact_due = (last_contact or started) + timedelta(days=profile.contact_every_days)
    reassess_due = (last_assessment or started) + timedelta(days=profile.reassess_every_days)
    return [
        MonitoringItem(TaskCode.CASE_CONTACT, f"contact:{contact_due.isoformat()}", contact_due),
        MonitoringItem(
            TaskCode.CASE_REASSESSMENT, f"reassessment:{reassess_due.isoformat()}", reassess_due
        ),
    ]


def due_state(due: date, today: date, soon_days: int) -> DueState:
    """Overdue after the due date; due from ``soon_days`` before it; upcoming before that."""
    if today > due:
        return "overdue"
    if today >= due - timedelta(days=soon_days):
        return "due"
    return "upcoming"


def expected_contacts(start: date, end: date, every_days: int) -> int:
    """Contacts the model expects between ``start`` and ``end`` (one per full interval)."""
    if end <= start:
        return 0
    return (end - start).days // every_days
