"""Program numbers for the dashboard, computed from plain FHIR resources (dicts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.web.countdown import parse_deadline
from carecoord.web.taskview import ref_id, task_row

__all__ = [
    "INPATIENT_CLASSES",
    "CaseloadRow",
    "ChecklistRow",
    "ComplianceRow",
    "ReadmissionRow",
    "caseloads",
    "checklist_completion",
    "deadline_compliance",
    "readmissions_by_month",
]

#: v3 ActCode classes counted as inpatient stays.
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})


def _instant(value: Any, tz: ZoneInfo) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    parsed = parse_deadline(value, tz)
    if parsed is None:
        return None
    if len(value) == 10:  # a date: the start of that day
        return parsed[1] - timedelta(days=1)
    return parsed[1]


def _month(instant: datetime, tz: ZoneInfo) -> str:
    return instant.astimezone(tz).strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class ReadmissionRow:
    month: str
    discharges: int
    readmissions: int

    @property
    def rate(self) -> float | None:
        return None if not self.discharges else 100.0 * self.readmissions / self.discharges


def readmissions_by_month(
    encounters: Iterable[Mapping[str, Any]], *, tz: ZoneInfo, window_days: int = 30
) -> list[ReadmissionRow]:
    """Inpatient discharges per month and how many were followed by another inpatient admission
    of the same patient within ``window_days`` (an operational count, without the CMS
    planned-admission exclusions that the readmissions package applies)."""
    stays: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for enc in encounters:
        cls = enc.get("class")
        if not isinstance(cls, Mapping) or cls.get("code") not in INPATIENT_CLASSES:
            continue
        patient = ref_id(enc.get("subject"), "Patient")
        period = enc.get("period") if isinstance(enc.get("period"), Mapping) else {}
        assert isinstance(period, Mapping)
        start = _instant(period.get("start"), tz)
        if patient is None or start is None or enc.get("status") == "cancelled":
            continue
        end = _instant(period.get("end"), tz) if enc.get("status") == "finished" else None
        stays[patient].append((start, end))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for visits in stays.values():
        visits.sort(key=lambda v: v[0])
        for i, (_, end) in enumerate(visits):
            if end is None:
                continue
            row = counts[_month(end, tz)]
            row[0] += 1
            limit = end + timedelta(days=window_days)
            if any(end <= s <= limit for s, _ in visits[i + 1 :]):
                row[1] += 1
    return [ReadmissionRow(m, d, r) for m, (d, r) in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class ComplianceRow:
    month: str
    due: int
    met: int

    @property
    def rate(self) -> float | None:
        return None if not self.due else 100.0 * self.met / self.due


def deadline_compliance(
    tasks: Iterable[Mapping[str, Any]], code: str, *, now: datetime, tz: ZoneInfo
) -> list[ComplianceRow]:
    """Per month of the deadline: Tasks of ``code`` whose deadline has passed or that are done,
    and how many were completed by their deadline."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for task in tasks:
        row = task_row(task, now=now, tz=tz)
        if row.code != code or row.deadline is None or row.status == "cancelled":
            continue
        done = _instant(row.done_at, tz) if row.status == "completed" else None
        if done is None and now < row.deadline.due_at:
            continue  # still open and not due yet: not decided
        bucket = counts[row.deadline.due_date.strftime("%Y-%m")]
        bucket[0] += 1
        if done is not None and done <= row.deadline.due_at:
            bucket[1] += 1
    return [ComplianceRow(m, d, k) for m, (d, k) in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class ChecklistRow:
    month: str
    checklists: int
    items: int
    completed: int

    @property
    def rate(self) -> float | None:
        return None if not self.items else 100.0 * self.completed / self.items


def checklist_completion(
    care_plans: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    *,
    tz: ZoneInfo,
) -> list[ChecklistRow]:
    """Per month of discharge: checklists, their items (cancelled ones left out) and how many
    are completed."""
    status = {str(t.get("id")): str(t.get("status")) for t in tasks}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for plan in care_plans:
        period = plan.get("period") if isinstance(plan.get("period"), Mapping) else {}
        assert isinstance(period, Mapping)
        start = _instant(period.get("start"), tz)
        if start is None:
            continue
        bucket = counts[_month(start, tz)]
        bucket[0] += 1
        for activity in plan.get("activity") or ():
            tid = ref_id(activity.get("reference"), "Task")
            state = status.get(tid or "")
            if state is None or state in ("cancelled", "entered-in-error"):
                continue
            bucket[1] += 1
            bucket[2] += state == "completed"
    return [ChecklistRow(m, c, i, d) for m, (c, i, d) in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class CaseloadRow:
    manager: str
    name: str
    active: float
    cap: float | None

    @property
    def over(self) -> bool:
        return self.cap is not None and self.active > self.cap


def _model(episode: Mapping[str, Any]) -> str | None:
    for concept in episode.get("type") or ():
        for coding in concept.get("coding") or () if isinstance(concept, Mapping) else ():
            if isinstance(coding, Mapping) and coding.get("code"):
                return str(coding["code"])
    return None


def caseloads(
    episodes: Iterable[Mapping[str, Any]],
    *,
    caps: Mapping[str, int],
    names: Mapping[str, str],
) -> list[CaseloadRow]:
    """Active EpisodeOfCare per care manager against the cap of the case model they carry most
    (``caps`` maps a case model code to its cap)."""
    active: dict[str, list[str | None]] = defaultdict(list)
    for ep in episodes:
        manager = ep.get("careManager")
        ref = manager.get("reference") if isinstance(manager, Mapping) else None
        if ep.get("status") not in ("active", "waitlist", "onhold") or not isinstance(ref, str):
            continue
        active[ref].append(_model(ep))
    rows = []
    for ref, models in sorted(active.items()):
        known = [m for m in models if m]
        model = max(set(known), key=known.count) if known else None
        cap = caps.get(model) if model else None
        rows.append(
            CaseloadRow(
                ref, names.get(ref, ref), float(len(models)), None if cap is None else float(cap)
            )
        )
    return rows
