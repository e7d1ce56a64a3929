"""Program metrics from FHIR data alone: per discharge outcomes, then rates by any grouping.

A discharge counts when it ends an index stay (rules.md §5) in the period. Its outcomes:
unplanned readmission within 30 days; interactive contact by the end of the 2nd business day
(a reached attempt, two unsuccessful attempts, or the contact Task completed by then); the
face-to-face visit Task completed within 7 and 14 calendar days; and its checklist's Tasks
completed (cancelled items are left out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.codes import COMMUNICATION_CATEGORY_SYSTEM, TaskCode
from carecoord.transitions.readmissions.codematch import codings_of
from carecoord.transitions.readmissions.config import ReadmissionConfig
from carecoord.transitions.readmissions.stays import (
    Stay,
    chain_stays,
    find_readmissions,
    index_ineligibility,
    parse_encounter,
    parse_instant,
    ref_id,
)

__all__ = [
    "DIMENSIONS",
    "DischargeOutcome",
    "MetricsInput",
    "aggregate",
    "discharge_outcomes",
    "period_key",
]

DIMENSIONS = ("period", "facility", "unit", "case_manager", "pcp", "risk_band")
_BAND_ORDER = {"low": 0, "moderate": 1, "intermediate": 1, "high": 2}


@dataclass(frozen=True)
class DischargeOutcome:
    """One index discharge and what followed it."""

    patient: str
    encounter: str
    discharged: date
    facility: str
    unit: str
    case_manager: str
    pcp: str
    risk_band: str
    readmitted: bool
    has_checklist: bool
    contact_2bd: bool
    visit_7d: bool
    visit_14d: bool
    tasks: int
    tasks_completed: int
    checklist_completed: bool


@dataclass
class MetricsInput:
    """The FHIR resources (plain dicts) the metrics are computed from."""

    encounters: list[dict[str, Any]]
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    care_plans: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    communications: list[dict[str, Any]] = field(default_factory=list)
    risk_assessments: list[dict[str, Any]] = field(default_factory=list)


def period_key(day: date, period: str) -> str:
    if period == "year":
        return f"{day.year}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def _task_code(task: Mapping[str, Any]) -> str | None:
    found = codings_of([task.get("code")])
    return found[0][1] if found else None


def _completed_at(task: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    if task.get("status") != "completed":
        return None
    return parse_instant((task.get("executionPeriod") or {}).get("end"), zone) or parse_instant(
        task.get("lastModified"), zone
    )


def _combined_band(bands: Sequence[str], intermediate_as: str) -> str:
    if not bands:
        return "unscored"
    mapped = [intermediate_as if b == "intermediate" else b for b in bands]
    return max(mapped, key=lambda b: _BAND_ORDER.get(b, -1))


def _risk_bands(
    assessments: Iterable[Mapping[str, Any]], how: str, intermediate_as: str
) -> dict[str, str]:
    per: dict[str, dict[str, str]] = {}
    for body in assessments:
        eid = ref_id(body.get("encounter"), "Encounter")
        method = next((c for _, c in codings_of([body.get("method")])), None)
        band = None
        for prediction in body.get("prediction") or ():
            for system, code in codings_of([prediction.get("qualitativeRisk")]):
                if system.endswith("/readmission-risk-band"):
                    band = code
        if eid and method and band:
            per.setdefault(eid, {})[method] = band
    out: dict[str, str] = {}
    for eid, methods in per.items():
        if how == "lace" and "LACE" in methods:
            chosen = [methods["LACE"]]
        elif how == "hospital" and "HOSPITAL" in methods:
            chosen = [methods["HOSPITAL"]]
        else:
            chosen = list(methods.values())
        out[eid] = _combined_band(chosen, intermediate_as)
    return out


def discharge_outcomes(
    data: MetricsInput,
    config: ReadmissionConfig,
    *,
    since: date,
    until: date,
    calendar_for: Callable[[str | None], BusinessCalendar],
    combine: str = "max",
    intermediate_as: str = "moderate",
) -> list[DischargeOutcome]:
    """The outcome of every index discharge dated ``since``..``until`` (both included)."""
    zone = ZoneInfo(config.timezone)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for enc in data.encounters:
        pid = ref_id(enc.get("subject"), "Patient")
        if pid:
            by_patient.setdefault(pid, []).append(enc)
    plans: dict[str, dict[str, Any]] = {}
    for plan in data.care_plans:
        for ident in plan.get("identifier") or ():
            if str(ident.get("system", "")).endswith("/transition-careplan"):
                plans[str(ident.get("value"))] = plan
    tasks_of: dict[str, list[dict[str, Any]]] = {}
    for task in data.tasks:
        for ref in task.get("basedOn") or ():
            plan_id = ref_id(ref, "CarePlan")
            if plan_id:
                tasks_of.setdefault(plan_id, []).append(task)
    attempts: dict[str, list[dict[str, Any]]] = {}
    for comm in data.communications:
        categories = codings_of(comm.get("category") or ())
        if (COMMUNICATION_CATEGORY_SYSTEM, "contact-attempt") not in categories:
            continue
        for ref in comm.get("basedOn") or ():
            task_id = ref_id(ref, "Task")
            if task_id:
                attempts.setdefault(task_id, []).append(comm)
    bands = _risk_bands(data.risk_assessments, combine, intermediate_as)

    out: list[DischargeOutcome] = []
    for pid, encounters in sorted(by_patient.items()):
        stays = chain_stays([parse_encounter(e, zone) for e in encounters], config)
        readmitted = {f.index.ids for f in find_readmissions(stays, config) if f.counted}
        patient = data.patients.get(pid) or {}
        gps = patient.get("generalPractitioner") or ()
        pcp = str(gps[0].get("reference")) if gps and isinstance(gps[0], Mapping) else "none"
        for stay in stays:
            day = stay.discharged_on
            if day is None or not since <= day <= until:
                continue
            if index_ineligibility(stay, config) is not None:
                continue
            out.append(
                _outcome(
                    pid, stay, day, stay.ids in readmitted, pcp, plans, tasks_of, attempts,
                    bands, config, calendar_for, zone,
                )
            )  # fmt: skip
    return out


def _outcome(
    pid: str,
    stay: Stay,
    day: date,
    readmitted: bool,
    pcp: str,
    plans: Mapping[str, dict[str, Any]],
    tasks_of: Mapping[str, list[dict[str, Any]]],
    attempts: Mapping[str, list[dict[str, Any]]],
    bands: Mapping[str, str],
    config: ReadmissionConfig,
    calendar_for: Callable[[str | None], BusinessCalendar],
    zone: ZoneInfo,
) -> DischargeOutcome:
    discharge_id = stay.discharge.id
    plan = next((plans[i] for i in reversed(stay.ids) if i in plans), None)
    org = ref_id((plan or {}).get("author"), "Organization") or stay.discharge.facility
    calendar = calendar_for(org)
    contact_due = calendar.end_of_day(calendar.add_business_days(day, 2))
    tasks = list(tasks_of.get(str(plan.get("id")), [])) if plan else []
    contact = visit_7 = visit_14 = False
    case_manager = "unassigned"
    counted = completed = 0
    for task in tasks:
        status = task.get("status")
        code = _task_code(task)
        done_at = _completed_at(task, zone)
        if status != "cancelled":
            counted += 1
            completed += 1 if status == "completed" else 0
        if code == TaskCode.TCM_INTERACTIVE_CONTACT.value:
            owner = ref_id(task.get("owner"), "Practitioner") or ref_id(
                task.get("owner"), "PractitionerRole"
            )
            if owner:
                case_manager = str((task.get("owner") or {}).get("reference"))
            sent = [
                (c.get("status"), parse_instant(c.get("sent"), zone))
                for c in attempts.get(str(task.get("id")), [])
            ]
            reached = any(s == "completed" and t and t <= contact_due for s, t in sent)
            failed = sum(1 for s, t in sent if s == "not-done" and t and t <= contact_due)
            on_time_task = done_at is not None and done_at <= contact_due
            contact = contact or reached or failed >= 2 or on_time_task
        elif code == TaskCode.TCM_FACE_TO_FACE_VISIT.value and done_at is not None:
            visit_day = calendar.local_date(done_at)
            visit_7 = visit_7 or (visit_day - day).days <= 7
            visit_14 = visit_14 or (visit_day - day).days <= 14
    facility = stay.facility(config.transfers.attribution)
    unit = stay.discharge.unit
    plan_done = plan is not None and (
        plan.get("status") == "completed" or (counted > 0 and completed == counted)
    )
    return DischargeOutcome(
        patient=pid,
        encounter=discharge_id,
        discharged=day,
        facility=f"Organization/{facility}" if facility else "unknown",
        unit=f"Location/{unit}" if unit else "unknown",
        case_manager=case_manager,
        pcp=pcp,
        risk_band=bands.get(discharge_id, "unscored"),
        readmitted=readmitted,
        has_checklist=plan is not None,
        contact_2bd=contact,
        visit_7d=visit_7,
        visit_14d=visit_14,
        tasks=counted,
        tasks_completed=completed,
        checklist_completed=plan_done,
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _measures(rows: Sequence[DischargeOutcome]) -> dict[str, Any]:
    n = len(rows)
    readmitted = sum(r.readmitted for r in rows)
    contact = sum(r.contact_2bd for r in rows)
    v7 = sum(r.visit_7d for r in rows)
    v14 = sum(r.visit_14d for r in rows)
    tasks = sum(r.tasks for r in rows)
    done = sum(r.tasks_completed for r in rows)
    plans = sum(r.has_checklist for r in rows)
    plans_done = sum(r.checklist_completed for r in rows)
    return {
        "discharges": n,
        "readmissions_30d": readmitted,
        "readmission_rate": _rate(readmitted, n),
        "contact_2bd": contact,
        "contact_2bd_rate": _rate(contact, n),
        "visit_7d": v7,
        "visit_7d_rate": _rate(v7, n),
        "visit_14d": v14,
        "visit_14d_rate": _rate(v14, n),
        "checklists": plans,
        "checklists_completed": plans_done,
        "checklist_completion_rate": _rate(plans_done, plans),
        "tasks": tasks,
        "tasks_completed": done,
        "task_completion_rate": _rate(done, tasks),
    }


def aggregate(
    rows: Sequence[DischargeOutcome], by: Sequence[str], *, period: str = "month"
) -> dict[str, Any]:
    """Totals and one group per combination of the ``by`` dimensions (sorted)."""
    groups: dict[tuple[str, ...], list[DischargeOutcome]] = {}
    for row in rows:
        key = tuple(
            period_key(row.discharged, period) if d == "period" else str(getattr(row, d))
            for d in by
        )
        groups.setdefault(key, []).append(row)
    return {
        "total": _measures(rows),
        "groups": [
            {**dict(zip(by, key, strict=True)), **_measures(members)}
            for key, members in sorted(groups.items())
        ],
    }
