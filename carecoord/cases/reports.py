"""Read side of cases: one case's view (phase, due work), case lists, outcomes (JSON and CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

import orjson

from carecoord.cases.monitoring import due_state, expected_contacts
from carecoord.cases.outcomes import CaseRecord, OutcomeRow, readmissions_during, summarize
from carecoord.cases.phases import Phase
from carecoord.cases.resources import (
    CASE_TAG_SYSTEM,
    assessments_of,
    case_model,
    closure_of,
    current_phase,
    is_required,
    phase_history,
    task_due,
)
from carecoord.cases.service import CaseContext
from carecoord.fhir.errors import NotFound
from carecoord.fhir.values import date_range
from carecoord.jobs.clock import from_micros

__all__ = ["ReadHook", "case_view", "list_cases", "outcome_rows", "outcomes_csv"]

#: Called with the rows (type, id, content) a report read, for the request's audit.
ReadHook = Callable[[list[tuple[str, str, bytes]]], None]
_INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})


def _all(
    ctx: CaseContext, res_type: str, params: Sequence[tuple[str, str]], seen: list[Any]
) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        extra = [("_count", "500")] + ([("_cursor", cursor)] if cursor else [])
        page = ctx.store.search(ctx.store.parse(res_type, [*params, *extra], policy=ctx.policy))
        seen.extend(page.matches)
        for _, _, content in page.matches:
            yield orjson.loads(content)
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    return from_micros(date_range(value)[0])


def _code(resource: dict[str, Any], system: str | None = None) -> str | None:
    for coding in (resource.get("code") or {}).get("coding") or []:
        if system is None or coding.get("system") == system:
            return str(coding.get("code"))
    return None


def case_view(ctx: CaseContext, *, case_id: str, on_read: ReadHook | None = None) -> dict[str, Any]:
    """A case: model, phase and its history, care manager, open work with due/overdue, goals."""
    seen: list[Any] = []
    stored = ctx.store.read("EpisodeOfCare", case_id, policy=ctx.policy)
    if stored.content is None:
        raise NotFound(f"EpisodeOfCare/{case_id} is deleted")
    seen.append(("EpisodeOfCare", case_id, stored.content))
    episode = orjson.loads(stored.content)
    if current_phase(episode) is None:
        raise NotFound(f"EpisodeOfCare/{case_id} is not a CareCoord case")
    tag = ("_tag", f"{CASE_TAG_SYSTEM}|{case_id}")
    tasks = []
    for task in _all(ctx, "Task", [tag], seen):
        due = task_due(task)
        open_ = task["status"] not in ("completed", "cancelled", "rejected", "failed")
        tasks.append(
            {
                "id": task["id"],
                "code": _code(task),
                "description": task.get("description"),
                "status": task["status"],
                "owner": (task.get("owner") or {}).get("reference"),
                "required": is_required(task),
                "due": due.isoformat() if due else None,
                "dueState": (
                    due_state(due, ctx.today, ctx.config.due_soon_days) if due and open_ else None
                ),
                "statusReason": (task.get("statusReason") or {}).get("text"),
            }
        )
    goals = [
        {
            "id": g["id"],
            "description": (g.get("description") or {}).get("text"),
            "lifecycleStatus": g.get("lifecycleStatus"),
            "achievementStatus": _code(
                {"code": g.get("achievementStatus") or {}},
            ),
            "due": next((t.get("dueDate") for t in g.get("target") or []), None),
            "addresses": [a.get("reference") for a in g.get("addresses") or []],
        }
        for g in _all(ctx, "Goal", [tag], seen)
    ]
    conditions = [
        {
            "id": c["id"],
            "code": _code(c),
            "display": (c.get("code") or {}).get("text"),
            "verificationStatus": _code({"code": c.get("verificationStatus") or {}}),
        }
        for c in _all(ctx, "Condition", [tag], seen)
    ]
    if on_read is not None:
        on_read(seen)
    reason, evaluation, waiver = closure_of(episode)
    model = case_model(episode)
    return {
        "id": case_id,
        "model": model.value if model else None,
        "phase": (current_phase(episode) or Phase.INTAKE).value,
        "status": episode.get("status"),
        "patient": episode["patient"]["reference"],
        "careManager": (episode.get("careManager") or {}).get("reference"),
        "phaseHistory": [
            {"phase": p.value, "start": start, "end": end}
            for p, start, end in phase_history(episode)
        ],
        "assessments": [f"QuestionnaireResponse/{q}" for q in assessments_of(episode)],
        "closure": (
            {"reason": reason, "evaluation": evaluation, "waiver": waiver} if reason else None
        ),
        "tasks": tasks,
        "goals": goals,
        "conditions": conditions,
    }


def list_cases(
    ctx: CaseContext,
    *,
    care_manager: str | None = None,
    patient: str | None = None,
    open_only: bool = False,
    on_read: ReadHook | None = None,
) -> list[dict[str, Any]]:
    """Cases (id, model, phase, care manager, patient), newest first."""
    params = [("_tag", f"{CASE_TAG_SYSTEM}|")]
    if care_manager:
        params.append(("care-manager", care_manager))
    if patient:
        params.append(("patient", patient))
    if open_only:
        params.append(("status", "planned,waitlist,active,onhold"))
    seen: list[Any] = []
    out = []
    for e in _all(ctx, "EpisodeOfCare", params, seen):
        model = case_model(e)
        out.append(
            {
                "id": e["id"],
                "model": model.value if model else None,
                "phase": (current_phase(e) or Phase.INTAKE).value,
                "careManager": (e.get("careManager") or {}).get("reference"),
                "patient": (e.get("patient") or {}).get("reference"),
                "start": (e.get("period") or {}).get("start"),
            }
        )
    if on_read is not None:
        on_read(seen)
    out.sort(key=lambda c: (str(c["start"]), c["id"]), reverse=True)
    return out


def _record(ctx: CaseContext, episode: dict[str, Any], seen: list[Any]) -> CaseRecord | None:
    model = case_model(episode)
    history = phase_history(episode)
    if model is None or not history:
        return None
    case_id = episode["id"]
    phases = []
    for phase, phase_start, phase_end in history:
        began = _instant(phase_start)
        if began is not None:
            phases.append((phase, began, _instant(phase_end)))
    tag = ("_tag", f"{CASE_TAG_SYSTEM}|{case_id}")
    goals = [
        (str(g.get("lifecycleStatus")), _code({"code": g.get("achievementStatus") or {}}))
        for g in _all(ctx, "Goal", [tag], seen)
    ]
    ref = f"EpisodeOfCare/{case_id}"
    contacts = sum(
        1 for _ in _all(ctx, "Communication", [("part-of", ref), ("status", "completed")], seen)
    )
    contacts += sum(
        1 for _ in _all(ctx, "Encounter", [("episode-of-care", ref), ("status", "finished")], seen)
    )
    start = _instant((episode.get("period") or {}).get("start"))
    end = _instant((episode.get("period") or {}).get("end"))
    if start is None:
        return None
    stays = []
    patient = (episode.get("patient") or {}).get("reference")
    if patient:
        for enc in _all(ctx, "Encounter", [("patient", patient)], seen):
            if (enc.get("class") or {}).get("code") not in _INPATIENT:
                continue
            admitted = _instant((enc.get("period") or {}).get("start"))
            if admitted is not None:
                stays.append((admitted, _instant((enc.get("period") or {}).get("end"))))
    until: date = (end or ctx.now).date()
    return CaseRecord(
        case_id=case_id,
        model=model.value,
        manager=str((episode.get("careManager") or {}).get("reference") or "-"),
        phases=phases,
        goals=goals,
        contacts=contacts,
        expected_contacts=expected_contacts(
            start.date(), until, ctx.config.models[model].contact_every_days
        ),
        readmissions=readmissions_during(stays, start, end),
        closure_reason=closure_of(episode)[0],
    )


def outcome_rows(
    ctx: CaseContext,
    *,
    model: str | None = None,
    care_manager: str | None = None,
    on_read: ReadHook | None = None,
) -> list[OutcomeRow]:
    """Outcomes per model and case manager, computed from the stored cases."""
    params = [("_tag", f"{CASE_TAG_SYSTEM}|")]
    if care_manager:
        params.append(("care-manager", care_manager))
    seen: list[Any] = []
    records = []
    for episode in list(_all(ctx, "EpisodeOfCare", params, seen)):
        record = _record(ctx, episode, seen)
        if record is not None and (model is None or record.model == model):
            records.append(record)
    if on_read is not None:
        on_read(seen)
    return summarize(records, ctx.now)


_CSV_COLUMNS = [
    "model",
    "careManager",
    "cases",
    "open",
    "closed",
    "goals",
    "goalsAchieved",
    "goalAttainment",
    *(f"meanDays_{p.value}" for p in Phase if p != Phase.CLOSURE),
    "contacts",
    "expectedContacts",
    "contactRatio",
    "readmissions",
]


def outcomes_csv(rows: Sequence[OutcomeRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for row in rows:
        data = row.to_json()
        days = row.mean_days_in_phase
        writer.writerow(
            ["" if data.get(c) is None else data[c] for c in _CSV_COLUMNS[:8]]
            + [days.get(p.value, "") for p in Phase if p != Phase.CLOSURE]
            + ["" if data.get(c) is None else data[c] for c in _CSV_COLUMNS[-4:]]
        )
    return out.getvalue()
