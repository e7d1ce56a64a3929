"""The data behind each screen, read through a :class:`ScreenReader` (synchronous; the routes run
these in a worker thread) and shaped into plain view models for the templates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from carecoord.cases.resources import current_phase
from carecoord.smart.pages import patient_display
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_CODE_SYSTEM,
    TRANSITION_OF_CARE,
    CareRole,
    TaskCode,
    role_display,
)
from carecoord.transitions.risk.resources import RISK_METHOD_SYSTEM, score_json
from carecoord.web.countdown import Deadline, deadline_of
from carecoord.web.people import names_of
from carecoord.web.reads import ScreenReader
from carecoord.web.services import CONTACT_ATTEMPT
from carecoord.web.taskview import (
    FINAL_STATUSES,
    Checklist,
    TaskRow,
    checklist_of,
    ref_id,
    task_row,
)

__all__ = [
    "OPEN_STATUSES",
    "Attempt",
    "PatientScreen",
    "Risk",
    "TimelineEntry",
    "WorklistFilters",
    "WorklistRow",
    "assignable_people",
    "inbox_screen",
    "patient_screen",
    "risk_of",
    "user_roles",
    "worklist_screen",
]

OPEN_STATUSES = "draft,requested,received,ready,accepted,in-progress,on-hold"
_BANDS = ("high", "moderate", "low")


@dataclass(frozen=True, slots=True)
class Risk:
    """One readmission risk score as shown."""

    method: str
    score: str
    band: str
    date: str
    components: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()


def _text(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return ""
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping):
            return str(coding.get("display") or coding.get("code") or "")
    return ""


def _code(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return ""
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and coding.get("code"):
            return str(coding["code"])
    return str(concept.get("text") or "")


def _components(comps: Any) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(comps, Mapping):
        for code, part in comps.items():
            if isinstance(part, Mapping):
                label = str(part.get("label") or code)
                value = part.get("value")
                points = part.get("points")
                text = "" if points is None else f"{points} point{'' if points == 1 else 's'}"
                if isinstance(value, bool):
                    text += " (yes)" if value else " (no)"
                elif value is not None:
                    text += f" ({value})"
                pairs.append((label, text.strip()))
            else:
                pairs.append((str(code), str(part)))
    elif isinstance(comps, list):
        for c in comps:
            if isinstance(c, Mapping):
                pairs.append((str(c.get("label") or c.get("code")), str(c.get("points", ""))))
    return tuple(pairs)


def risk_of(assessment: Mapping[str, Any]) -> Risk:
    """A stored RiskAssessment (method LACE/HOSPITAL) for display, with its breakdown."""
    summary = score_json(assessment)
    return Risk(
        method=_code(assessment.get("method")).upper() or "Risk",
        score="" if summary.get("score") is None else str(summary["score"]),
        band=str(summary.get("band") or "").lower(),
        date=str(assessment.get("occurrenceDateTime") or "")[:10],
        components=_components(summary.get("components")),
        missing=tuple(str(m) for m in summary.get("missing") or ()),
    )


def risks_from_api(body: Any) -> list[Risk]:
    """The answer of ``GET /api/patients/{id}/readmission-risk`` as Risk rows."""
    out: list[Risk] = []
    if not isinstance(body, Mapping):
        return out
    for method in ("lace", "hospital"):
        item = body.get(method)
        if not isinstance(item, Mapping):
            continue
        out.append(
            Risk(
                method=method.upper(),
                score="" if item.get("score") is None else str(item.get("score")),
                band=str(item.get("band") or ""),
                date="",
                components=_components(item.get("components")),
                missing=tuple(str(m) for m in item.get("missing") or ()),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Attempt:
    task_id: str
    reached: bool
    sent: str
    note: str


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    when: str
    kind: str
    text: str


@dataclass
class PatientScreen:
    """Everything the patient page shows."""

    patient: dict[str, str]
    gender: str
    found: bool
    checklists: list[Checklist] = field(default_factory=list)
    past_checklists: list[Checklist] = field(default_factory=list)
    other_tasks: list[TaskRow] = field(default_factory=list)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    risks: list[Risk] = field(default_factory=list)
    pcps: list[str] = field(default_factory=list)
    team: list[tuple[str, str]] = field(default_factory=list)
    episodes: list[dict[str, str]] = field(default_factory=list)
    goals: list[dict[str, str]] = field(default_factory=list)
    next_contact: TaskRow | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    people: list[tuple[str, str]] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)


def _role_name(code: str) -> str:
    try:
        return role_display(CareRole(code))
    except ValueError:
        return code


def _extension_value(resource: Mapping[str, Any], suffix: str) -> str:
    for ext in resource.get("extension") or ():
        if isinstance(ext, Mapping) and str(ext.get("url", "")).endswith(suffix):
            for key, value in ext.items():
                if key.startswith("value"):
                    return _text(value) if isinstance(value, Mapping) else str(value)
    return ""


def _phase(episode: Mapping[str, Any]) -> str:
    phase = current_phase(episode)
    return phase.value if phase is not None else str(episode.get("status") or "")


def assignable_people(reader: ScreenReader) -> list[tuple[str, str]]:
    """(reference, name) of the practitioners a Task can be reassigned to."""
    people = reader.search("Practitioner", [("active", "true")], limit=500)
    return sorted(
        ((f"Practitioner/{p.get('id')}", patient_display(p)["name"]) for p in people),
        key=lambda item: item[1],
    )


def patient_screen(
    reader: ScreenReader, patient_id: str, *, now: datetime, tz: ZoneInfo
) -> PatientScreen:
    """The patient page: checklists, risk, care team and PCCM, case, timeline."""
    patient = reader.read("Patient", patient_id)
    if patient is None:
        return PatientScreen(
            patient={"name": "", "birth_date": "", "id": patient_id}, gender="", found=False
        )
    subject = f"Patient/{patient_id}"
    plans = reader.search(
        "CarePlan",
        [("patient", subject), ("category", f"{CAREPLAN_CATEGORY_SYSTEM}|{TRANSITION_OF_CARE}")],
        limit=200,
    )
    tasks = reader.search("Task", [("patient", subject)], limit=2000)
    comms = reader.search(
        "Communication",
        [("patient", subject), ("category", f"{COMMUNICATION_CATEGORY_SYSTEM}|{CONTACT_ATTEMPT}")],
        limit=500,
    )
    teams = reader.search("CareTeam", [("patient", subject)], limit=50)
    episodes = reader.search("EpisodeOfCare", [("patient", subject)], limit=50)
    goals = reader.search("Goal", [("patient", subject)], limit=100)
    encounters = reader.search("Encounter", [("patient", subject), ("_sort", "-date")], limit=100)
    assessments = reader.search("RiskAssessment", [("patient", subject)], limit=50)
    refs: list[str | None] = [
        *(t.get("owner", {}).get("reference") for t in tasks if isinstance(t.get("owner"), dict)),
        *(g.get("reference") for g in patient.get("generalPractitioner") or ()),
        *(
            p.get("member", {}).get("reference")
            for team in teams
            for p in team.get("participant") or ()
            if isinstance(p.get("member"), dict)
        ),
        *(
            e.get("careManager", {}).get("reference")
            for e in episodes
            if isinstance(e.get("careManager"), dict)
        ),
    ]
    names = names_of(reader, refs)
    screen = PatientScreen(
        patient=patient_display(patient), gender=str(patient.get("gender") or ""), found=True
    )
    in_plans: set[str] = set()
    for plan in sorted(
        plans, key=lambda p: str((p.get("period") or {}).get("start") or ""), reverse=True
    ):
        checklist = checklist_of(plan, tasks, now=now, tz=tz, names=names)
        in_plans.update(t.id for t in checklist.tasks)
        if plan.get("status") in ("active", "draft", "on-hold"):
            screen.checklists.append(checklist)
        else:
            screen.past_checklists.append(checklist)
    rows = [task_row(t, now=now, tz=tz, names=names) for t in tasks]
    screen.other_tasks = sorted(
        (r for r in rows if r.id not in in_plans and not r.final),
        key=lambda r: r.deadline.due_at.isoformat() if r.deadline else "9999",
    )
    for comm in sorted(comms, key=lambda c: str(c.get("sent") or "")):
        for based in comm.get("basedOn") or ():
            tid = ref_id(based, "Task")
            if tid:
                payload = (comm.get("payload") or [{}])[0]
                screen.attempts.setdefault(tid, []).append(
                    Attempt(
                        task_id=tid,
                        reached=comm.get("status") == "completed",
                        sent=str(comm.get("sent") or "")[:16].replace("T", " "),
                        note=str(payload.get("contentString") or "")
                        if isinstance(payload, Mapping)
                        else "",
                    )
                )
    latest: dict[str, Mapping[str, Any]] = {}
    for ra in sorted(assessments, key=lambda a: str(a.get("occurrenceDateTime") or "")):
        latest[_code(ra.get("method")).upper()] = ra
    screen.risks = [risk_of(a) for _, a in sorted(latest.items())]
    screen.pcps = [
        names.get(str(g.get("reference")), str(g.get("display") or g.get("reference")))
        for g in patient.get("generalPractitioner") or ()
        if isinstance(g, Mapping)
    ]
    for team in teams:
        if team.get("status") not in (None, "active", "proposed"):
            continue
        for part in team.get("participant") or ():
            member = part.get("member") if isinstance(part, Mapping) else None
            if not isinstance(member, Mapping):
                continue
            role = ""
            for concept in part.get("role") or ():
                for coding in concept.get("coding") or ():
                    if coding.get("system") == CARE_ROLE_SYSTEM:
                        role = _role_name(str(coding.get("code")))
                role = role or _text(concept)
            ref = str(member.get("reference") or "")
            screen.team.append((names.get(ref, str(member.get("display") or ref)), role))
    for ep in episodes:
        if ep.get("status") not in ("active", "planned", "waitlist", "onhold"):
            continue
        manager = ep.get("careManager") or {}
        screen.episodes.append(
            {
                "model": _text((ep.get("type") or [{}])[0]),
                "status": str(ep.get("status")),
                "phase": _phase(ep),
                "since": str((ep.get("period") or {}).get("start") or "")[:10],
                "manager": names.get(str(manager.get("reference")), ""),
            }
        )
    for goal in goals:
        if goal.get("lifecycleStatus") in ("cancelled", "entered-in-error", "rejected"):
            continue
        target = (goal.get("target") or [{}])[0]
        screen.goals.append(
            {
                "text": _text(goal.get("description")),
                "status": str(goal.get("lifecycleStatus") or ""),
                "due": str(target.get("dueDate") or "") if isinstance(target, Mapping) else "",
            }
        )
    contacts = [r for r in rows if r.code == TaskCode.CASE_CONTACT and not r.final]
    contacts.sort(key=lambda r: r.deadline.due_at.isoformat() if r.deadline else "9999")
    screen.next_contact = contacts[0] if contacts else None
    timeline: list[TimelineEntry] = []
    for enc in encounters:
        period = enc.get("period") or {}
        cls = enc.get("class") or {}
        kind = str(cls.get("display") or cls.get("code") or "encounter")
        what = _text((enc.get("type") or [{}])[0]) or kind
        if period.get("start"):
            timeline.append(
                TimelineEntry(
                    str(period["start"])[:16],
                    "admission" if cls.get("code") in ("IMP", "ACUTE") else "encounter",
                    what,
                )
            )
        if (
            period.get("end")
            and enc.get("status") == "finished"
            and cls.get("code") in ("IMP", "ACUTE", "NONAC", "OBSENC")
        ):
            timeline.append(TimelineEntry(str(period["end"])[:16], "discharge", what))
    for row in rows:
        if row.done_at:
            timeline.append(TimelineEntry(row.done_at[:16], "task", f"{row.title}: {row.status}"))
    for attempts in screen.attempts.values():
        for att in attempts:
            timeline.append(
                TimelineEntry(
                    att.sent,
                    "contact",
                    "Contact attempt: " + ("reached" if att.reached else "not reached"),
                )
            )
    screen.timeline = sorted(timeline, key=lambda e: e.when, reverse=True)[:60]
    for entry in screen.timeline:
        object.__setattr__(entry, "when", entry.when.replace("T", " "))
    screen.denied = sorted(reader.denied)
    return screen


@dataclass(frozen=True, slots=True)
class WorklistFilters:
    """The worklist's filters and sort order (from the query string, validated)."""

    scope: Literal["mine", "all"] = "mine"
    due: Literal["all", "today", "overdue", "week"] = "all"
    band: Literal["any", "high", "moderate", "low"] = "any"
    sort: Literal["due", "name", "risk", "open"] = "due"


@dataclass(frozen=True, slots=True)
class WorklistRow:
    patient_id: str
    name: str
    birth_date: str
    band: str
    score: str
    open_tasks: int
    overdue: int
    due_today: int
    next_task: TaskRow | None


def _chunks(ids: Iterable[str], size: int = 100) -> Iterable[str]:
    ordered = sorted(set(ids))
    for i in range(0, len(ordered), size):
        yield ",".join(ordered[i : i + size])


def user_roles(reader: ScreenReader, user: str | None) -> set[str]:
    """The care roles (CARE_ROLE_SYSTEM codes) of the user's PractitionerRoles."""
    if not user or not user.startswith("Practitioner/"):
        return set()
    roles: set[str] = set()
    for role in reader.search("PractitionerRole", [("practitioner", user)], limit=50):
        for concept in role.get("code") or ():
            for coding in concept.get("coding") or ():
                if coding.get("system") == CARE_ROLE_SYSTEM and coding.get("code"):
                    roles.add(str(coding["code"]))
    return roles


def _owned_by(user: str | None, reader: ScreenReader) -> set[str]:
    """The references that stand for the user: the Practitioner and their PractitionerRoles."""
    if not user:
        return set()
    refs = {user}
    if user.startswith("Practitioner/"):
        for role in reader.search("PractitionerRole", [("practitioner", user)], limit=50):
            refs.add(f"PractitionerRole/{role.get('id')}")
    return refs


def worklist_screen(
    reader: ScreenReader,
    *,
    user: str | None,
    filters: WorklistFilters,
    now: datetime,
    tz: ZoneInfo,
) -> list[WorklistRow]:
    """One row per patient with open work: next deadline, overdue and due-today counts, risk."""
    mine = _owned_by(user, reader)
    open_now = [("status", OPEN_STATUSES)]
    if filters.scope == "mine" and mine:
        managed: set[str] = set()
        for ref in sorted(mine):
            for ep in reader.search(
                "EpisodeOfCare", [("care-manager", ref), ("status", "active")], limit=5000
            ):
                pid = ref_id(ep.get("patient"), "Patient")
                if pid:
                    managed.add(pid)
        picked: dict[str, dict[str, Any]] = {}
        for ref in sorted(mine):
            for task in reader.search("Task", [("owner", ref), *open_now], limit=20000):
                picked[str(task.get("id"))] = task
        for chunk in _chunks(managed):
            refs = ",".join(f"Patient/{pid}" for pid in chunk.split(","))
            for task in reader.search("Task", [("patient", refs), *open_now], limit=20000):
                picked[str(task.get("id"))] = task
        tasks = list(picked.values())
    else:
        tasks = reader.search("Task", open_now, limit=20000)
    # Deadlines of every open Task, but a full row only for each patient's next one.
    by_patient: dict[str, list[tuple[str, Deadline | None, Mapping[str, Any]]]] = defaultdict(list)
    for task in tasks:
        pid = ref_id(task.get("for"), "Patient")
        if pid is None:
            continue
        restriction = task.get("restriction")
        period = restriction.get("period") if isinstance(restriction, Mapping) else None
        due = period.get("end") if isinstance(period, Mapping) else None
        deadline = deadline_of(str(due) if due else None, now=now, tz=tz, done=False)
        key = deadline.due_at.isoformat() if deadline else "9999"
        by_patient[pid].append((key, deadline, task))
    patients: dict[str, Mapping[str, Any]] = {}
    risks: dict[str, Risk] = {}
    lace = f"{RISK_METHOD_SYSTEM}|LACE"
    for chunk in _chunks(by_patient):
        for p in reader.search("Patient", [("_id", chunk)], limit=100):
            patients[str(p.get("id"))] = p
        refs = ",".join(f"Patient/{i}" for i in chunk.split(","))
        found = reader.search("RiskAssessment", [("patient", refs), ("method", lace)], limit=1000)
        for ra in sorted(found, key=lambda a: str(a.get("occurrenceDateTime") or "")):
            pid = ref_id(ra.get("subject"), "Patient")
            if pid:
                risks[pid] = risk_of(ra)
    rows: list[WorklistRow] = []
    for pid, items in by_patient.items():
        items.sort(key=lambda item: item[0])
        deadlines = [d for _, d, _ in items if d is not None]
        overdue = sum(1 for d in deadlines if d.state == "overdue")
        today = sum(1 for d in deadlines if d.state == "due-today")
        week = sum(1 for d in deadlines if d.business_days_left <= 5)
        risk = risks.get(pid)
        band = risk.band if risk else ""
        if filters.due == "overdue" and not overdue:
            continue
        if filters.due == "today" and not today:
            continue
        if filters.due == "week" and not week:
            continue
        if filters.band != "any" and band != filters.band:
            continue
        display = patient_display(dict(patients.get(pid) or {"id": pid}))
        rows.append(
            WorklistRow(
                patient_id=pid,
                name=display["name"],
                birth_date=display["birth_date"],
                band=band,
                score=risk.score if risk else "",
                open_tasks=len(items),
                overdue=overdue,
                due_today=today,
                next_task=task_row(items[0][2], now=now, tz=tz) if items else None,
            )
        )
    if filters.sort == "name":
        rows.sort(key=lambda r: (r.name.split()[-1:], r.name))
    elif filters.sort == "risk":
        rank = {b: i for i, b in enumerate(_BANDS)}
        rows.sort(key=lambda r: (rank.get(r.band, 9), -int(r.score or 0), r.name))
    elif filters.sort == "open":
        rows.sort(key=lambda r: (-r.open_tasks, r.name))
    else:
        rows.sort(
            key=lambda r: (
                r.next_task.deadline.due_at.isoformat()
                if r.next_task and r.next_task.deadline
                else "9999",
                r.name,
            )
        )
    return rows


@dataclass
class Inbox:
    """The PCP inbox."""

    incoming: list[tuple[TaskRow, str]] = field(default_factory=list)
    working: list[tuple[TaskRow, str]] = field(default_factory=list)
    new_members: list[tuple[TaskRow, str]] = field(default_factory=list)
    summaries: list[tuple[TaskRow, str]] = field(default_factory=list)
    recent: list[tuple[TaskRow, str]] = field(default_factory=list)


def inbox_screen(reader: ScreenReader, *, user: str | None, now: datetime, tz: ZoneInfo) -> Inbox:
    """Tasks owned by the user (or their PractitionerRoles): to accept or reject, in progress,
    new PCCM members (establish care) and discharge summaries to review."""
    inbox = Inbox()
    mine = _owned_by(user, reader)
    if not mine:
        return inbox
    tasks: list[dict[str, Any]] = []
    for ref in sorted(mine):
        tasks.extend(reader.search("Task", [("owner", ref)], limit=2000))
    names = names_of(
        reader, (t.get("for", {}).get("reference") for t in tasks if isinstance(t.get("for"), dict))
    )
    for task in tasks:
        row = task_row(task, now=now, tz=tz)
        who = names.get(f"Patient/{row.patient_id}", row.patient_id or "")
        item = (row, who)
        if row.final:
            inbox.recent.append(item)
        elif row.code == TaskCode.ESTABLISH_CARE:
            inbox.new_members.append(item)
        elif row.code == TaskCode.DISCHARGE_SUMMARY_TO_PCP:
            inbox.summaries.append(item)
        elif row.status in ("draft", "requested", "received", "ready"):
            inbox.incoming.append(item)
        else:
            inbox.working.append(item)

    def due(item: tuple[TaskRow, str]) -> str:
        return item[0].deadline.due_at.isoformat() if item[0].deadline else "9999"

    owned = {row.id for group in (inbox.summaries,) for row, _ in group}
    patients = [
        str(p.get("id"))
        for ref in sorted(mine)
        for p in reader.search("Patient", [("general-practitioner", ref)], limit=5000)
    ]
    summary_code = f"{TASK_CODE_SYSTEM}|{TaskCode.DISCHARGE_SUMMARY_TO_PCP.value}"
    waiting: list[dict[str, Any]] = []
    for chunk in _chunks(patients):
        refs = ",".join(f"Patient/{pid}" for pid in chunk.split(","))
        waiting += reader.search(
            "Task",
            [("patient", refs), ("code", summary_code), ("status", OPEN_STATUSES)],
            limit=5000,
        )
    names.update(names_of(reader, (t.get("for", {}).get("reference") for t in waiting)))
    for task in waiting:
        row = task_row(task, now=now, tz=tz)
        if row.id not in owned:
            inbox.summaries.append((row, names.get(f"Patient/{row.patient_id}", "")))
    for group in (inbox.incoming, inbox.working, inbox.new_members, inbox.summaries):
        group.sort(key=due)
    inbox.recent.sort(key=lambda i: i[0].updated or i[0].done_at or "", reverse=True)
    inbox.recent = [i for i in inbox.recent if i[0].status in FINAL_STATUSES][:20]
    return inbox
