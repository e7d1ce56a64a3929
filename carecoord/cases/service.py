"""Case services: each loads from the store, applies the rules, and writes in one transaction.

Every function takes a :class:`CaseContext` (store, configuration, the injected ``now``, the
caller's access policy, and the audit callback of the request) and keyword-only arguments. Errors
are :mod:`carecoord.fhir.errors` classes: NotFound, InvalidRequest, BusinessRule (422, a refused
phase move or referral, a cap without override), Conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import insert

from carecoord.cases.caseload import (
    CapExceeded,
    ManagerLoad,
    NoEligibleManager,
    check_cap,
    choose_manager,
)
from carecoord.cases.caseload import loads as sum_loads
from carecoord.cases.config import CARE_PLAN_ACTIVITY_SYSTEM, CaseConfig, CaseModel
from carecoord.cases.intake import referral_model, screen_referral
from carecoord.cases.monitoring import next_monitoring
from carecoord.cases.phases import CLOSURE_REASONS, MoveFacts, MoveRefused, Phase, check_move
from carecoord.cases.resources import (
    ASSESSMENT_EXTENSION,
    CASE_CAREPLAN_SYSTEM,
    CASE_IDENTIFIER_SYSTEM,
    CASE_MANAGEMENT_CATEGORY,
    CASE_RESOURCE_SYSTEM,
    CASE_TAG_SYSTEM,
    CLOSURE_EXTENSION,
    OPEN_TASK_STATUSES,
    REQUIRED_EXTENSION,
    assessments_of,
    case_model,
    case_tag,
    closure_extension,
    closure_of,
    current_phase,
    is_required,
    model_concept,
    ref_id,
    task_code,
    task_due,
    with_phase,
    work_task,
)
from carecoord.cases.tables import case_assignments
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import BusinessRule, InvalidRequest, NotFound
from carecoord.fhir.search import run_search
from carecoord.fhir.store import FhirStore, StoredResource, Writer, new_id
from carecoord.fhir.values import format_instant, to_micros
from carecoord.jobs import enqueue
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_BUSINESS_STATUS_SYSTEM,
    TASK_CODE_SYSTEM,
    TASK_OUTPUT_SYSTEM,
    CareRole,
    TaskCode,
    role_display,
    task_identifier,
)

__all__ = [
    "MONITOR_KIND",
    "AuditHook",
    "CaseContext",
    "Screening",
    "accept_referral",
    "add_goal",
    "caseloads",
    "close_case",
    "confirm_needs",
    "create_referral",
    "decline_referral",
    "enqueue_monitor",
    "ensure_monitoring",
    "gather_facts",
    "move_phase",
    "open_case_ids",
    "reassign_case",
    "reassign_caseload",
    "record_contact",
    "screen",
    "submit_assessment",
    "update_goal",
    "update_referral",
]

#: The periodic job that keeps monitoring Tasks generated and marks overdue ones.
MONITOR_KIND = "cases.monitor"
#: (writer, interaction, stored resource): the request's audit of a write, in its transaction.
AuditHook = Callable[[Writer, str, StoredResource], None]

_OPEN_EPISODES = "planned,waitlist,active,onhold"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
_FHIR_TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
_SDOH_CATEGORY = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)
_MONITORING_CODES = (TaskCode.CASE_CONTACT.value, TaskCode.CASE_REASSESSMENT.value)
_ACHIEVEMENTS = (
    "in-progress",
    "improving",
    "worsening",
    "no-change",
    "achieved",
    "sustaining",
    "not-achieved",
    "no-progress",
    "not-attainable",
)
#: FHIR Task moves CareCoord makes (the project's Task workflow checks them again).
_TASK_NEXT: dict[str, tuple[str, ...]] = {
    "draft": ("requested", "cancelled"),
    "requested": ("accepted", "rejected", "cancelled", "on-hold", "ready"),
    "ready": ("accepted", "in-progress", "rejected", "cancelled", "on-hold"),
    "received": ("accepted", "rejected", "cancelled"),
    "accepted": ("in-progress", "cancelled", "on-hold"),
    "in-progress": ("completed", "failed", "cancelled", "on-hold"),
    "on-hold": ("in-progress", "cancelled"),
}
_TASK_PATHS: dict[str, tuple[str, ...]] = {
    "accepted": ("accepted",),
    "in-progress": ("accepted", "in-progress"),
    "completed": ("accepted", "in-progress", "completed"),
    "failed": ("accepted", "in-progress", "failed"),
}


@dataclass
class CaseContext:
    """What a service call runs with; built per request (routes) or per job (handlers)."""

    store: FhirStore
    config: CaseConfig
    now: datetime
    policy: AccessPolicy | None = None
    on_write: AuditHook | None = None
    schedule_monitor: bool = True

    @property
    def instant(self) -> str:
        return format_instant(to_micros(self.now))

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()


# -- store helpers -------------------------------------------------------------------------------


def _load(stored: StoredResource) -> dict[str, Any]:
    if stored.content is None:
        raise NotFound(f"{stored.res_type}/{stored.res_id} is deleted")
    body: dict[str, Any] = orjson.loads(stored.content)
    return body


def _read(w: Writer, res_type: str, res_id: str) -> dict[str, Any]:
    return _load(w.read(res_type, res_id))


def _search(
    w: Writer, res_type: str, params: Sequence[tuple[str, str]]
) -> Iterator[dict[str, Any]]:
    """Every match of a search inside the transaction (under the caller's policy)."""
    cursor: str | None = None
    while True:
        w.flush()
        extra = [("_count", "500")] + ([("_cursor", cursor)] if cursor else [])
        query = w.store.parse(res_type, [*params, *extra], access=w.access)
        page = run_search(w.conn, query, max_include=0)
        for _, _, content in page.matches:
            yield orjson.loads(content)
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def _write(
    ctx: CaseContext,
    w: Writer,
    res_type: str,
    body: dict[str, Any],
    *,
    res_id: str | None = None,
    if_none_exist: Sequence[tuple[str, str]] | None = None,
) -> StoredResource:
    if res_id is not None and if_none_exist is None:
        result = w.update(res_type, res_id, body)
        changed = not result.unchanged
    else:
        result = w.create(res_type, body, if_none_exist=if_none_exist, res_id=res_id)
        changed = result.created  # a conditional create that found its match wrote nothing
    if ctx.on_write is not None and changed:
        ctx.on_write(w, "create" if result.created else "update", result.resource)
    return result.resource


def _ident(system: str, value: str) -> tuple[str, str]:
    return ("identifier", f"{system}|{value}")


def _case(w: Writer, case_id: str) -> dict[str, Any]:
    episode = _read(w, "EpisodeOfCare", case_id)
    if current_phase(episode) is None:
        raise NotFound(f"EpisodeOfCare/{case_id} is not a CareCoord case")
    return episode


def _require_open(episode: dict[str, Any]) -> Phase:
    phase = current_phase(episode)
    assert phase is not None
    if phase == Phase.CLOSURE:
        raise BusinessRule(f"EpisodeOfCare/{episode['id']} is closed")
    return phase


def _case_tasks(w: Writer, case_id: str, *, open_only: bool = True) -> list[dict[str, Any]]:
    params = [("_tag", f"{CASE_TAG_SYSTEM}|{case_id}")]
    if open_only:
        params.append(("status", ",".join(OPEN_TASK_STATUSES)))
    return list(_search(w, "Task", params))


def _code_of(resource: dict[str, Any], system: str) -> str | None:
    for coding in (resource.get("code") or {}).get("coding") or []:
        if coding.get("system") == system:
            return str(coding.get("code"))
    return None


def _move_task(
    ctx: CaseContext,
    w: Writer,
    task: dict[str, Any],
    target: str,
    *,
    reason: str | None = None,
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Walk a Task to ``target`` through the FHIR Task state machine, one version per step."""
    path = _TASK_PATHS.get(target, (target,))
    status = task["status"]
    if status in path:
        path = path[path.index(status) + 1 :]
    for step in path:
        if step not in _TASK_NEXT.get(status, ()):
            raise BusinessRule(f"Task/{task['id']} cannot move from {status} to {step}")
        task = {**task, "status": step, "lastModified": ctx.instant}
        if step in ("rejected", "cancelled", "on-hold", "failed"):
            if not reason:
                raise InvalidRequest(f"A reason is required to make a Task {step}")
            task["statusReason"] = {"text": reason}
        else:
            task.pop("statusReason", None)
        if step in ("in-progress", "accepted") and "executionPeriod" not in task:
            task["executionPeriod"] = {"start": ctx.instant}
        if step in ("completed", "failed", "cancelled", "rejected"):
            task["executionPeriod"] = {**(task.get("executionPeriod") or {}), "end": ctx.instant}
            if output:
                task["output"] = [*(task.get("output") or []), *output]
        _write(ctx, w, "Task", task, res_id=task["id"])
        status = step
    return task


# -- facts and phase moves ----------------------------------------------------------------------


def _careplan(w: Writer, case_id: str) -> dict[str, Any] | None:
    found = w.find("CarePlan", [_ident(CASE_CAREPLAN_SYSTEM, case_id)], limit=1)
    return _read(w, "CarePlan", found[0]) if found else None


def gather_facts(w: Writer, episode: dict[str, Any]) -> MoveFacts:
    """The guards' facts for a case, from the store and the episode (closure and waiver)."""
    case_id = episode["id"]
    completed = 0
    for qr_id in assessments_of(episode):
        try:
            qr = _read(w, "QuestionnaireResponse", qr_id)
        except NotFound:
            continue
        completed += qr.get("status") in ("completed", "amended")
    goals = 0
    plan = _careplan(w, case_id)
    for ref in (plan or {}).get("goal") or []:
        goal_id = ref_id(ref, "Goal")
        if goal_id:
            try:
                goal = _read(w, "Goal", goal_id)
            except NotFound:
                continue
            goals += goal.get("lifecycleStatus") in ("accepted", "active")
    required = sum(is_required(t) for t in _case_tasks(w, case_id))
    reason, _, waiver = closure_of(episode)
    return MoveFacts(
        has_care_manager=bool(ref_id(episode.get("careManager"), "Practitioner")),
        completed_assessments=completed,
        plan_goals=goals,
        open_required_tasks=required,
        closure_reason=reason,
        waiver_reason=waiver,
    )


def _refuse(exc: MoveRefused) -> BusinessRule:
    return BusinessRule(str(exc))


def move_phase(ctx: CaseContext, *, case_id: str, phase: Phase) -> dict[str, Any]:
    """Move a case to ``phase`` (closure goes through :func:`close_case`)."""
    if phase == Phase.CLOSURE:
        raise InvalidRequest("Close a case with POST /api/cases/{id}/close (reason, evaluation)")

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        current = current_phase(episode)
        assert current is not None
        try:
            check_move(current, phase, gather_facts(w, episode))
        except MoveRefused as exc:
            raise _refuse(exc) from exc
        if phase == Phase.ASSESSMENT:
            _intake_task_step(ctx, w, episode, "in-progress")
        if phase == Phase.PLANNING:
            _ensure_careplan(ctx, w, episode)
        moved = with_phase(episode, phase, ctx.instant)
        _write(ctx, w, "EpisodeOfCare", moved, res_id=case_id)
        return moved

    return ctx.store.write(work, policy=ctx.policy)


# -- intake ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Screening:
    eligible: bool
    reasons: list[str]
    model: CaseModel


def _screen(ctx: CaseContext, w: Writer, referral_id: str) -> tuple[dict[str, Any], Screening]:
    referral = _read(w, "ServiceRequest", referral_id)
    patient_id = ref_id(referral.get("subject"), "Patient")
    patient = None
    open_cases = 0
    if patient_id:
        try:
            patient = _read(w, "Patient", patient_id)
        except NotFound:
            patient = None
        open_cases = len(
            w.find(
                "EpisodeOfCare",
                [("patient", f"Patient/{patient_id}"), ("status", _OPEN_EPISODES)],
                limit=1,
            )
        )
    reasons = screen_referral(referral, patient, open_cases=open_cases, intake=ctx.config.intake)
    model = referral_model(referral, ctx.config.intake.default_model)
    return referral, Screening(not reasons, reasons, model)


def screen(ctx: CaseContext, *, referral_id: str) -> Screening:
    """Screen a referral for eligibility (reads only)."""
    return ctx.store.write(lambda w: _screen(ctx, w, referral_id)[1], policy=ctx.policy)


def _intake_task(
    ctx: CaseContext, w: Writer, referral: dict[str, Any], owner: str | None
) -> dict[str, Any]:
    ident = task_identifier(referral["id"], "intake")
    body: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [ident],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": _FHIR_TASK_CODE, "code": "fulfill"}]},
        "description": "Intake of a referral to case management",
        "focus": {"reference": f"ServiceRequest/{referral['id']}"},
        "basedOn": [{"reference": f"ServiceRequest/{referral['id']}"}],
        "for": referral.get("subject"),
        "authoredOn": ctx.instant,
    }
    if referral.get("requester"):
        body["requester"] = referral["requester"]
    if owner:
        body["owner"] = {"reference": owner}
    stored = _write(ctx, w, "Task", body, if_none_exist=[_ident(ident["system"], ident["value"])])
    return _load(stored)


def decline_referral(ctx: CaseContext, *, referral_id: str, reason: str) -> dict[str, Any]:
    """Decline a referral: the ServiceRequest is revoked, its intake Task rejected with the
    reason, and a Communication tells the referrer. Replays change nothing."""
    if not reason.strip():
        raise InvalidRequest("A reason is required to decline a referral")

    def work(w: Writer) -> dict[str, Any]:
        referral = _read(w, "ServiceRequest", referral_id)
        if w.find("EpisodeOfCare", [_ident(CASE_IDENTIFIER_SYSTEM, referral_id)], limit=1):
            raise BusinessRule("The referral was accepted into a case; close the case instead")
        task = _intake_task(ctx, w, referral, None)
        if task["status"] != "rejected":
            task = _move_task(ctx, w, task, "rejected", reason=reason)
        if referral.get("status") not in ("revoked", "completed"):
            referral = {**referral, "status": "revoked"}
            _write(ctx, w, "ServiceRequest", referral, res_id=referral_id)
        if referral.get("requester"):
            note = {
                "resourceType": "Communication",
                "identifier": [
                    {"system": CASE_RESOURCE_SYSTEM, "value": f"{referral_id}:declined"}
                ],
                "status": "completed",
                "category": [
                    {
                        "coding": [
                            {
                                "system": COMMUNICATION_CATEGORY_SYSTEM,
                                "code": "referral-declined",
                                "display": "Referral declined",
                            }
                        ]
                    }
                ],
                "subject": referral.get("subject"),
                "about": [{"reference": f"ServiceRequest/{referral_id}"}],
                "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
                "recipient": [referral["requester"]],
                "sent": ctx.instant,
                "payload": [{"contentString": f"Referral to case management declined: {reason}"}],
            }
            _write(
                ctx,
                w,
                "Communication",
                note,
                if_none_exist=[_ident(CASE_RESOURCE_SYSTEM, f"{referral_id}:declined")],
            )
        return _read(w, "Task", task["id"])

    return ctx.store.write(work, policy=ctx.policy)


def _intake_task_step(ctx: CaseContext, w: Writer, episode: dict[str, Any], target: str) -> None:
    for ref in episode.get("referralRequest") or []:
        sr = ref_id(ref, "ServiceRequest")
        if not sr:
            continue
        ident = task_identifier(sr, "intake")
        found = w.find("Task", [_ident(ident["system"], ident["value"])], limit=1)
        if found:
            task = _read(w, "Task", found[0])
            if task["status"] in OPEN_TASK_STATUSES and task["status"] != target:
                _move_task(ctx, w, task, target)


# -- caseloads ------------------------------------------------------------------------------------


def _manager_roles(w: Writer, organization: str | None) -> dict[str, set[str]]:
    """Practitioner reference -> care roles, from active PractitionerRoles (of the organisation)."""
    params = [("active", "true"), ("role", f"{CARE_ROLE_SYSTEM}|")]
    if organization:
        params.append(("organization", organization))
    out: dict[str, set[str]] = {}
    for role in _search(w, "PractitionerRole", params):
        who = (role.get("practitioner") or {}).get("reference")
        if not isinstance(who, str) or not who.startswith("Practitioner/"):
            continue
        for concept in role.get("code") or []:
            for coding in concept.get("coding") or []:
                if coding.get("system") == CARE_ROLE_SYSTEM:
                    out.setdefault(who, set()).add(str(coding.get("code")))
    return out


def _open_load(ctx: CaseContext, w: Writer) -> dict[str, tuple[float, int]]:
    pairs = []
    for episode in _search(w, "EpisodeOfCare", [("status", _OPEN_EPISODES)]):
        manager = (episode.get("careManager") or {}).get("reference")
        model = case_model(episode)
        if isinstance(manager, str) and model is not None:
            org = (episode.get("managingOrganization") or {}).get("reference")
            pairs.append((manager, ctx.config.weight(model, org)))
    return sum_loads(pairs)


def _load_of(
    ctx: CaseContext, loads: dict[str, tuple[float, int]], manager: str, org: str | None
) -> ManagerLoad:
    load, count = loads.get(manager, (0.0, 0))
    return ManagerLoad(manager, load, ctx.config.cap(manager, org), count)


def _assign(
    ctx: CaseContext,
    w: Writer,
    *,
    model: CaseModel,
    organization: str | None,
    chosen: str | None,
    override_reason: str | None,
    exclude: str | None = None,
) -> tuple[ManagerLoad, str]:
    """The case manager for a new (or moved) case and the decision kind."""
    w.lock("cases:caseload")
    loads = _open_load(ctx, w)
    weight = ctx.config.weight(model, organization)
    eligible_roles = {r.value for r in ctx.config.models[model].eligible_roles}
    roles = _manager_roles(w, organization)
    if chosen is not None:
        if not chosen.startswith("Practitioner/"):
            raise InvalidRequest("careManager must be a Practitioner reference")
        if not roles.get(chosen, set()) & eligible_roles:
            raise BusinessRule(
                f"{chosen} holds no active role eligible for {model.value} cases "
                f"({', '.join(sorted(eligible_roles))})"
            )
        current = _load_of(ctx, loads, chosen, organization)
        try:
            over = check_cap(current, weight, override_reason)
        except CapExceeded as exc:
            raise BusinessRule(str(exc)) from exc
        return current, "override" if over else "chosen"
    candidates = [
        _load_of(ctx, loads, m, organization)
        for m, held in sorted(roles.items())
        if held & eligible_roles and m != exclude
    ]
    try:
        return choose_manager(candidates, weight), "auto"
    except NoEligibleManager as exc:
        raise BusinessRule(f"No active case manager is eligible for {model.value} cases") from exc
    except CapExceeded as exc:
        raise BusinessRule(
            "Every eligible case manager is at their cap: choose one with an override reason"
        ) from exc


def _log_assignment(
    ctx: CaseContext,
    w: Writer,
    *,
    case_id: str,
    chosen: ManagerLoad,
    kind: str,
    reason: str | None,
    previous: str | None = None,
) -> None:
    w.conn.execute(
        insert(case_assignments).values(
            case_id=case_id,
            care_manager=chosen.manager,
            previous_manager=previous,
            kind=kind,
            reason=(reason or None) and reason[:500],
            load_before=chosen.load,
            cap=chosen.cap,
            decided_at=to_micros(ctx.now),
        )
    )


def caseloads(ctx: CaseContext, *, organization: str | None = None) -> list[dict[str, Any]]:
    """Load, cap and cases per case manager (every manager with a care role), alert above cap."""

    def work(w: Writer) -> list[dict[str, Any]]:
        loads = _open_load(ctx, w)
        managers = set(_manager_roles(w, organization)) | set(loads)
        rows = []
        for manager in sorted(managers):
            item = _load_of(ctx, loads, manager, organization)
            rows.append(
                {
                    "careManager": manager,
                    "load": round(item.load, 3),
                    "cap": item.cap,
                    "cases": item.cases,
                    "utilisation": round(item.load / item.cap, 3),
                    "aboveCap": item.above_cap,
                    "alert": (
                        f"{manager} carries {item.load:g} units, above the cap of {item.cap:g}"
                        if item.above_cap
                        else None
                    ),
                }
            )
        return rows

    return ctx.store.write(work, policy=ctx.policy)


# -- accept -------------------------------------------------------------------------------------


def accept_referral(
    ctx: CaseContext,
    *,
    referral_id: str,
    model: CaseModel | None = None,
    care_manager: str | None = None,
    override_reason: str | None = None,
    organization: str | None = None,
) -> dict[str, Any]:
    """Open a case from an eligible referral (once: a replay returns the same case)."""

    def work(w: Writer) -> dict[str, Any]:
        found = w.find("EpisodeOfCare", [_ident(CASE_IDENTIFIER_SYSTEM, referral_id)], limit=1)
        if found:
            return _read(w, "EpisodeOfCare", found[0])
        referral, screening = _screen(ctx, w, referral_id)
        if not screening.eligible:
            raise BusinessRule(
                "The referral is not eligible: "
                + "; ".join(screening.reasons)
                + " (decline it with a reason for the referrer)"
            )
        chosen_model = model or screening.model
        org = organization or next(
            (
                f"Organization/{org_id}"
                for p in referral.get("performer") or []
                if (org_id := ref_id(p, "Organization"))
            ),
            None,
        )
        manager, kind = _assign(
            ctx,
            w,
            model=chosen_model,
            organization=org,
            chosen=care_manager,
            override_reason=override_reason,
        )
        case_id = new_id()
        patient = referral["subject"]
        role = ctx.config.models[chosen_model].eligible_roles[0]
        team = {
            "resourceType": "CareTeam",
            "meta": case_tag(case_id),
            "identifier": [{"system": CASE_RESOURCE_SYSTEM, "value": f"{case_id}:team"}],
            "status": "active",
            "name": "Case management team",
            "subject": patient,
            "period": {"start": ctx.instant},
            "participant": [_participant(manager.manager, role, ctx.instant)],
        }
        team_stored = _write(ctx, w, "CareTeam", team)
        episode: dict[str, Any] = {
            "resourceType": "EpisodeOfCare",
            "meta": case_tag(case_id),
            "identifier": [{"system": CASE_IDENTIFIER_SYSTEM, "value": referral_id}],
            "type": [model_concept(ctx.config, chosen_model)],
            "patient": patient,
            "period": {"start": ctx.instant},
            "referralRequest": [{"reference": f"ServiceRequest/{referral_id}"}],
            "careManager": {"reference": manager.manager},
            "team": [{"reference": f"CareTeam/{team_stored.res_id}"}],
        }
        if org:
            episode["managingOrganization"] = {"reference": org}
        diagnosis = [
            {"condition": r}
            for r in referral.get("reasonReference") or []
            if ref_id(r, "Condition")
        ]
        if diagnosis:
            episode["diagnosis"] = diagnosis
        episode = with_phase(episode, Phase.INTAKE, ctx.instant)
        stored = _write(
            ctx,
            w,
            "EpisodeOfCare",
            episode,
            res_id=case_id,
            if_none_exist=[_ident(CASE_IDENTIFIER_SYSTEM, referral_id)],
        )
        episode = _load(stored)
        task = _intake_task(ctx, w, referral, manager.manager)
        if task["status"] in ("requested", "ready", "received"):
            task = {
                **task,
                "output": [
                    {
                        "type": {"text": "case"},
                        "valueReference": {"reference": f"EpisodeOfCare/{case_id}"},
                    }
                ],
            }
            _move_task(ctx, w, task, "accepted")
        _log_assignment(
            ctx,
            w,
            case_id=case_id,
            chosen=manager,
            kind=kind,
            reason=override_reason if kind == "override" else None,
        )
        _ensure_monitoring(ctx, w, episode)
        return episode

    return ctx.store.write(work, policy=ctx.policy)


def _participant(manager: str, role: CareRole, start: str) -> dict[str, Any]:
    return {
        "role": [
            {"coding": [{"system": CARE_ROLE_SYSTEM, "code": role, "display": role_display(role)}]}
        ],
        "member": {"reference": manager},
        "period": {"start": start},
    }


# -- monitoring -----------------------------------------------------------------------------------


def _dates(
    ctx: CaseContext, w: Writer, episode: dict[str, Any]
) -> tuple[date, date | None, date | None]:
    case_id = episode["id"]
    started = date.fromisoformat(str(episode["period"]["start"])[:10])
    last_contact: date | None = None
    for comm in _search(
        w,
        "Communication",
        [("part-of", f"EpisodeOfCare/{case_id}"), ("status", "completed")],
    ):
        sent = str(comm.get("sent", ""))[:10]
        if sent:
            day = date.fromisoformat(sent)
            last_contact = max(last_contact or day, day)
    for enc in _search(
        w, "Encounter", [("episode-of-care", f"EpisodeOfCare/{case_id}"), ("status", "finished")]
    ):
        start = str((enc.get("period") or {}).get("start", ""))[:10]
        if start:
            day = date.fromisoformat(start)
            last_contact = max(last_contact or day, day)
    last_assessment: date | None = None
    for qr_id in assessments_of(episode):
        try:
            qr = _read(w, "QuestionnaireResponse", qr_id)
        except NotFound:
            continue
        authored = str(qr.get("authored", ""))[:10]
        if authored:
            day = date.fromisoformat(authored)
            last_assessment = max(last_assessment or day, day)
    return started, last_contact, last_assessment


def _ensure_monitoring(ctx: CaseContext, w: Writer, episode: dict[str, Any]) -> list[str]:
    """Create the next contact/reassessment Tasks (once each) and flag overdue ones."""
    phase = current_phase(episode)
    model = case_model(episode)
    if phase in (None, Phase.CLOSURE) or model is None:
        return []
    case_id = episode["id"]
    profile = ctx.config.models[model]
    started, last_contact, last_assessment = _dates(ctx, w, episode)
    manager = (episode.get("careManager") or {}).get("reference")
    patient = episode["patient"]["reference"]
    open_tasks = _case_tasks(w, case_id)
    open_codes = {_code_of(t, TASK_CODE_SYSTEM) for t in open_tasks}
    made = []
    for item in next_monitoring(
        profile, started=started, last_contact=last_contact, last_assessment=last_assessment
    ):
        if item.code == TaskCode.CASE_REASSESSMENT and last_assessment is None:
            continue  # the first assessment is a phase, not monitoring
        if item.code.value in open_codes:
            continue
        ident = task_identifier(case_id, item.key)
        task = work_task(
            case_id=case_id,
            key=item.key,
            patient=patient,
            manager=manager,
            code=task_code(item.code),
            description=(
                f"Contact the client (every {profile.contact_every_days} days)"
                if item.code == TaskCode.CASE_CONTACT
                else f"Reassess the client (every {profile.reassess_every_days} days)"
            ),
            due=item.due,
            authored=ctx.instant,
            role=CareRole.NURSE_CASE_MANAGER,
            required=False,
        )
        stored = _write(
            ctx, w, "Task", task, if_none_exist=[_ident(ident["system"], ident["value"])]
        )
        made.append(stored.res_id)
        open_tasks.append(_load(stored))
    for task in open_tasks:
        if _code_of(task, TASK_CODE_SYSTEM) not in _MONITORING_CODES:
            continue
        due = task_due(task)
        overdue = due is not None and ctx.today > due
        flagged = _business_status(task) == "overdue"
        if overdue and not flagged:
            task = {
                **task,
                "businessStatus": {
                    "coding": [{"system": TASK_BUSINESS_STATUS_SYSTEM, "code": "overdue"}],
                    "text": "Overdue",
                },
            }
            _write(ctx, w, "Task", task, res_id=task["id"])
    if ctx.schedule_monitor:
        enqueue_monitor(w, ctx.today + timedelta(days=1))
    return made


def _business_status(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        return str(coding.get("code"))
    return None


def enqueue_monitor(w: Writer, day: date) -> None:
    """The daily monitoring run of ``day`` (at 06:00 UTC), once per day."""
    enqueue(
        w.conn,
        kind=MONITOR_KIND,
        payload={"day": day.isoformat()},
        key=f"{MONITOR_KIND}:{day.isoformat()}",
        run_at=datetime(day.year, day.month, day.day, 6, tzinfo=UTC),
    )


def ensure_monitoring(ctx: CaseContext, *, case_id: str) -> list[str]:
    """Generate the case's due monitoring Tasks now (ids of new ones)."""
    return ctx.store.write(
        lambda w: _ensure_monitoring(ctx, w, _case(w, case_id)), policy=ctx.policy
    )


def open_case_ids(ctx: CaseContext) -> list[str]:
    def work(w: Writer) -> list[str]:
        return [
            e["id"]
            for e in _search(
                w, "EpisodeOfCare", [("status", _OPEN_EPISODES), ("_tag", f"{CASE_TAG_SYSTEM}|")]
            )
        ]

    return ctx.store.write(work, policy=ctx.policy)


def _complete_monitoring(
    ctx: CaseContext, w: Writer, case_id: str, code: TaskCode, output: dict[str, Any]
) -> None:
    for task in _case_tasks(w, case_id):
        if _code_of(task, TASK_CODE_SYSTEM) == code.value:
            _move_task(ctx, w, task, "completed", output=[output])


# -- contacts -----------------------------------------------------------------------------------


def record_contact(
    ctx: CaseContext,
    *,
    case_id: str,
    when: datetime,
    channel: str,
    successful: bool = True,
    note: str | None = None,
) -> dict[str, Any]:
    """Record a contact with the client; a successful one completes the open contact Task."""

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        _require_open(episode)
        sent = format_instant(to_micros(when))
        key = f"{case_id}:contact:{sent}:{channel}"
        body: dict[str, Any] = {
            "resourceType": "Communication",
            "meta": case_tag(case_id),
            "identifier": [{"system": CASE_RESOURCE_SYSTEM, "value": key}],
            "status": "completed" if successful else "not-done",
            "category": [
                {
                    "coding": [
                        {
                            "system": COMMUNICATION_CATEGORY_SYSTEM,
                            "code": "case-contact",
                            "display": "Case contact",
                        }
                    ]
                }
            ],
            "medium": [{"text": channel}],
            "subject": episode["patient"],
            "partOf": [{"reference": f"EpisodeOfCare/{case_id}"}],
            "sent": sent,
        }
        if episode.get("careManager"):
            body["sender"] = episode["careManager"]
        if not successful:
            body["statusReason"] = {"text": "No contact made"}
        if note:
            body["payload"] = [{"contentString": note}]
        stored = _write(
            ctx, w, "Communication", body, if_none_exist=[_ident(CASE_RESOURCE_SYSTEM, key)]
        )
        if successful:
            _complete_monitoring(
                ctx,
                w,
                case_id,
                TaskCode.CASE_CONTACT,
                {
                    "type": {"coding": [{"system": TASK_OUTPUT_SYSTEM, "code": "contact"}]},
                    "valueReference": {"reference": f"Communication/{stored.res_id}"},
                },
            )
            _ensure_monitoring(ctx, w, episode)
        return _load(stored)

    return ctx.store.write(work, policy=ctx.policy)


# -- assessment ------------------------------------------------------------------------------------


def submit_assessment(
    ctx: CaseContext, *, case_id: str, response: dict[str, Any]
) -> dict[str, Any]:
    """Store a completed QuestionnaireResponse and propose the needs it shows (unconfirmed)."""
    from carecoord.cases.assessment import answer_codes, propose_needs

    url = str(response.get("questionnaire") or "")
    questionnaire = ctx.config.questionnaire(url)
    if questionnaire is None:
        raise InvalidRequest(f"Unknown questionnaire {url!r}; see config/cases/questionnaires")
    if response.get("status") not in ("completed", "amended"):
        raise InvalidRequest("Only a completed QuestionnaireResponse is an assessment")
    canonical = str(questionnaire["url"])

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        phase = _require_open(episode)
        if phase == Phase.INTAKE:
            raise BusinessRule(f"EpisodeOfCare/{case_id} is in intake: move it to assessment first")
        patient = episode["patient"]
        subject = response.get("subject")
        if subject and subject.get("reference") != patient.get("reference"):
            raise InvalidRequest("The response's subject is not the case's client")
        body = {
            **response,
            "meta": {**(response.get("meta") or {}), **case_tag(case_id)},
            "questionnaire": canonical,
            "subject": patient,
            "authored": response.get("authored") or ctx.instant,
        }
        body.pop("id", None)
        stored = _write(ctx, w, "QuestionnaireResponse", body)
        qr_id = stored.res_id
        needs = propose_needs(
            ctx.config.needs, canonical, answer_codes(body), ctx.config.item_texts.get(canonical)
        )
        proposals = []
        for need in needs:
            key = f"{case_id}:{qr_id}:{need.key}"
            condition_ref = None
            if need.condition is not None:
                categories = [
                    {"coding": [{"system": _CONDITION_CATEGORY, "code": "health-concern"}]}
                ]
                if need.sdoh:
                    categories.append({"coding": [{"system": _US_CORE_CATEGORY, "code": "sdoh"}]})
                if need.category is not None:
                    categories.append({"coding": [need.category.to_fhir()]})
                condition = {
                    "resourceType": "Condition",
                    "meta": case_tag(case_id),
                    "identifier": [{"system": CASE_RESOURCE_SYSTEM, "value": key}],
                    "clinicalStatus": {"coding": [{"system": _CLINICAL_STATUS, "code": "active"}]},
                    "verificationStatus": {
                        "coding": [{"system": _VER_STATUS, "code": "provisional"}]
                    },
                    "category": categories,
                    "code": {"coding": [need.condition.to_fhir()], "text": need.condition.display},
                    "subject": patient,
                    "recordedDate": ctx.instant,
                    "evidence": [{"detail": [{"reference": f"QuestionnaireResponse/{qr_id}"}]}],
                }
                c = _write(
                    ctx,
                    w,
                    "Condition",
                    condition,
                    if_none_exist=[_ident(CASE_RESOURCE_SYSTEM, key)],
                )
                condition_ref = f"Condition/{c.res_id}"
            due = ctx.today + timedelta(days=need.goal_due_days)
            goal: dict[str, Any] = {
                "resourceType": "Goal",
                "meta": case_tag(case_id),
                "identifier": [{"system": CASE_RESOURCE_SYSTEM, "value": f"{key}:goal"}],
                "lifecycleStatus": "proposed",
                "description": {"text": need.goal_text},
                "subject": patient,
                "expressedBy": patient,
                "startDate": ctx.today.isoformat(),
                "target": [{"dueDate": due.isoformat()}],
                "statusDate": ctx.today.isoformat(),
            }
            if need.category is not None:
                goal["category"] = [{"coding": [need.category.to_fhir()]}]
            if condition_ref:
                goal["addresses"] = [{"reference": condition_ref}]
            g = _write(
                ctx, w, "Goal", goal, if_none_exist=[_ident(CASE_RESOURCE_SYSTEM, f"{key}:goal")]
            )
            proposals.append(
                {
                    "need": need.key,
                    "items": list(need.items),
                    "score": need.score,
                    "condition": condition_ref,
                    "goal": f"Goal/{g.res_id}",
                    "goalText": need.goal_text,
                }
            )
        extension = {
            "url": ASSESSMENT_EXTENSION,
            "valueReference": {"reference": f"QuestionnaireResponse/{qr_id}"},
        }
        episode = {**episode, "extension": [*(episode.get("extension") or []), extension]}
        _write(ctx, w, "EpisodeOfCare", episode, res_id=case_id)
        _complete_monitoring(
            ctx,
            w,
            case_id,
            TaskCode.CASE_REASSESSMENT,
            {
                "type": {"coding": [{"system": TASK_OUTPUT_SYSTEM, "code": "assessment"}]},
                "valueReference": {"reference": f"QuestionnaireResponse/{qr_id}"},
            },
        )
        _ensure_monitoring(ctx, w, episode)
        return {"questionnaireResponse": f"QuestionnaireResponse/{qr_id}", "proposed": proposals}

    return ctx.store.write(work, policy=ctx.policy)


def _case_ref(resource: dict[str, Any], case_id: str) -> bool:
    return any(
        t.get("system") == CASE_TAG_SYSTEM and t.get("code") == case_id
        for t in (resource.get("meta") or {}).get("tag") or []
    )


def _set_verification(condition: dict[str, Any], code: str) -> dict[str, Any]:
    return {**condition, "verificationStatus": {"coding": [{"system": _VER_STATUS, "code": code}]}}


def _activate_goal(ctx: CaseContext, goal: dict[str, Any]) -> dict[str, Any]:
    return {
        **goal,
        "lifecycleStatus": "active",
        "achievementStatus": goal.get("achievementStatus") or _achievement("in-progress"),
        "statusDate": ctx.today.isoformat(),
    }


def _achievement(code: str) -> dict[str, Any]:
    return {"coding": [{"system": _ACHIEVEMENT, "code": code}]}


def confirm_needs(
    ctx: CaseContext,
    *,
    case_id: str,
    confirm: Sequence[str],
    reject: Sequence[str] = (),
    reason: str | None = None,
) -> dict[str, Any]:
    """Confirm proposed problems and goals (Conditions confirmed, Goals active) or reject them."""

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        _require_open(episode)
        confirmed_conditions: list[str] = []
        goals: list[str] = []
        rejected: list[str] = []
        targets = [(r, True) for r in confirm] + [(r, False) for r in reject]
        all_goals = list(_search(w, "Goal", [("_tag", f"{CASE_TAG_SYSTEM}|{case_id}")]))
        for ref, accept in targets:
            res_type, _, res_id = ref.partition("/")
            if res_type not in ("Condition", "Goal") or not res_id:
                raise InvalidRequest(f"{ref!r} is not a Condition or Goal reference")
            body = _read(w, res_type, res_id)
            if not _case_ref(body, case_id):
                raise InvalidRequest(f"{ref} was not proposed for this case")
            if res_type == "Condition":
                code = "confirmed" if accept else "refuted"
                _write(ctx, w, "Condition", _set_verification(body, code), res_id=res_id)
                (confirmed_conditions if accept else rejected).append(ref)
                linked = [
                    g
                    for g in all_goals
                    if any(a.get("reference") == ref for a in g.get("addresses") or [])
                ]
            else:
                linked = [body]
            for goal in linked:
                if goal.get("lifecycleStatus") != "proposed":
                    continue
                if accept:
                    _write(ctx, w, "Goal", _activate_goal(ctx, goal), res_id=goal["id"])
                    goals.append(f"Goal/{goal['id']}")
                else:
                    changed = {**goal, "lifecycleStatus": "rejected"}
                    if reason:
                        changed["note"] = [{"text": reason}]
                    _write(ctx, w, "Goal", changed, res_id=goal["id"])
                    rejected.append(f"Goal/{goal['id']}")
        if confirmed_conditions:
            known = {
                (d.get("condition") or {}).get("reference") for d in episode.get("diagnosis") or []
            }
            extra = [
                {"condition": {"reference": r}} for r in confirmed_conditions if r not in known
            ]
            if extra:
                episode = {**episode, "diagnosis": [*(episode.get("diagnosis") or []), *extra]}
                _write(ctx, w, "EpisodeOfCare", episode, res_id=case_id)
        _plan_add(ctx, w, case_id, goals=goals, conditions=confirmed_conditions)
        return {"confirmed": confirmed_conditions + goals, "rejected": rejected}

    return ctx.store.write(work, policy=ctx.policy)


# -- plan and goals -------------------------------------------------------------------------------


def _plan_add(
    ctx: CaseContext,
    w: Writer,
    case_id: str,
    *,
    goals: Sequence[str] = (),
    conditions: Sequence[str] = (),
    activities: Sequence[str] = (),
) -> None:
    plan = _careplan(w, case_id)
    if plan is None:
        return
    changed = dict(plan)
    for field_name, refs, wrap in (
        ("goal", goals, False),
        ("addresses", conditions, False),
        ("activity", activities, True),
    ):
        items = list(changed.get(field_name) or [])
        present = {(i.get("reference") if not wrap else i["reference"]["reference"]) for i in items}
        for ref in refs:
            if ref not in present:
                items.append({"reference": {"reference": ref}} if wrap else {"reference": ref})
        if items:
            changed[field_name] = items
    if changed != plan:
        _write(ctx, w, "CarePlan", changed, res_id=plan["id"])


def _ensure_careplan(ctx: CaseContext, w: Writer, episode: dict[str, Any]) -> dict[str, Any]:
    """The case's CarePlan from its model's template, with its active goals and interventions."""
    case_id = episode["id"]
    existing = _careplan(w, case_id)
    if existing is not None:
        return existing
    model = case_model(episode)
    assert model is not None
    profile = ctx.config.models[model]
    manager = (episode.get("careManager") or {}).get("reference")
    patient = episode["patient"]
    goals = [
        f"Goal/{g['id']}"
        for g in _search(w, "Goal", [("_tag", f"{CASE_TAG_SYSTEM}|{case_id}")])
        if g.get("lifecycleStatus") in ("accepted", "active")
    ]
    conditions = [
        d["condition"]["reference"]
        for d in episode.get("diagnosis") or []
        if (d.get("condition") or {}).get("reference")
    ]
    activities = []
    for activity in profile.care_plan:
        key = f"plan:{activity.key}"
        ident = task_identifier(case_id, key)
        task = work_task(
            case_id=case_id,
            key=key,
            patient=patient["reference"],
            manager=manager,
            code={
                "coding": [
                    {
                        "system": CARE_PLAN_ACTIVITY_SYSTEM,
                        "code": activity.key,
                        "display": activity.display,
                    }
                ]
            },
            description=activity.display,
            due=ctx.today + timedelta(days=activity.due_days),
            authored=ctx.instant,
            role=activity.owner_role,
            required=activity.required,
        )
        stored = _write(
            ctx, w, "Task", task, if_none_exist=[_ident(ident["system"], ident["value"])]
        )
        activities.append({"reference": {"reference": f"Task/{stored.res_id}"}})
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "meta": case_tag(case_id),
        "identifier": [{"system": CASE_CAREPLAN_SYSTEM, "value": case_id}],
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {
                        "system": CAREPLAN_CATEGORY_SYSTEM,
                        "code": CASE_MANAGEMENT_CATEGORY,
                        "display": "Case management",
                    }
                ]
            }
        ],
        "title": f"{profile.display} case management plan",
        "subject": patient,
        "period": {"start": ctx.instant},
        "created": ctx.instant,
        "supportingInfo": [{"reference": f"EpisodeOfCare/{case_id}"}],
    }
    if manager:
        plan["author"] = {"reference": manager}
    if episode.get("team"):
        plan["careTeam"] = episode["team"]
    if goals:
        plan["goal"] = [{"reference": g} for g in goals]
    if conditions:
        plan["addresses"] = [{"reference": c} for c in conditions]
    if activities:
        plan["activity"] = activities
    stored = _write(ctx, w, "CarePlan", plan, if_none_exist=[_ident(CASE_CAREPLAN_SYSTEM, case_id)])
    return _load(stored)


def add_goal(
    ctx: CaseContext,
    *,
    case_id: str,
    text: str,
    due: date,
    target: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A goal the client sets (active, in progress), added to the case's plan."""
    if not text.strip():
        raise InvalidRequest("A goal needs a description")

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        _require_open(episode)
        ident = f"{case_id}:goal:{key or text.strip().lower()}:{due.isoformat()}"
        patient = episode["patient"]
        body: dict[str, Any] = {
            "resourceType": "Goal",
            "meta": case_tag(case_id),
            "identifier": [{"system": CASE_RESOURCE_SYSTEM, "value": ident[:200]}],
            "lifecycleStatus": "active",
            "achievementStatus": _achievement("in-progress"),
            "description": {"text": text},
            "subject": patient,
            "expressedBy": patient,
            "startDate": ctx.today.isoformat(),
            "statusDate": ctx.today.isoformat(),
            "target": [
                {"dueDate": due.isoformat(), **({"detailString": target} if target else {})}
            ],
        }
        stored = _write(
            ctx, w, "Goal", body, if_none_exist=[_ident(CASE_RESOURCE_SYSTEM, ident[:200])]
        )
        _plan_add(ctx, w, case_id, goals=[f"Goal/{stored.res_id}"])
        return _load(stored)

    return ctx.store.write(work, policy=ctx.policy)


def update_goal(
    ctx: CaseContext,
    *,
    case_id: str,
    goal_id: str,
    achievement: str,
    lifecycle: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Record progress: the achievement status (kept over time in the Goal's versions)."""
    if achievement not in _ACHIEVEMENTS:
        raise InvalidRequest(f"achievementStatus must be one of {', '.join(_ACHIEVEMENTS)}")
    if lifecycle is not None and lifecycle not in ("active", "on-hold", "completed", "cancelled"):
        raise InvalidRequest("lifecycleStatus must be active, on-hold, completed or cancelled")

    def work(w: Writer) -> dict[str, Any]:
        goal = _read(w, "Goal", goal_id)
        if not _case_ref(goal, case_id):
            raise NotFound(f"Goal/{goal_id} is not a goal of this case")
        body = {
            **goal,
            "achievementStatus": _achievement(achievement),
            "statusDate": ctx.today.isoformat(),
        }
        if lifecycle is not None:
            body["lifecycleStatus"] = lifecycle
        elif achievement in ("achieved", "sustaining") and goal.get("lifecycleStatus") == "active":
            body["lifecycleStatus"] = "completed"
        if note:
            body["note"] = [*(goal.get("note") or []), {"time": ctx.instant, "text": note}]
        _write(ctx, w, "Goal", body, res_id=goal_id)
        return body

    return ctx.store.write(work, policy=ctx.policy)


# -- community referrals (Gravity SDOH pattern) ---------------------------------------------------


def create_referral(
    ctx: CaseContext,
    *,
    case_id: str,
    organization: str,
    text: str,
    code: dict[str, Any] | None = None,
    goal: str | None = None,
    condition: str | None = None,
) -> dict[str, Any]:
    """A ServiceRequest to a community organisation plus the Task that tracks it."""
    if not organization.startswith("Organization/"):
        raise InvalidRequest("organization must be an Organization reference")

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        _require_open(episode)
        _read(w, "Organization", organization.split("/", 1)[1])
        manager = episode.get("careManager")
        patient = episode["patient"]
        plan = _careplan(w, case_id)
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "meta": case_tag(case_id),
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": _US_CORE_CATEGORY, "code": "sdoh"}]}],
            "code": code or {"text": text},
            "subject": patient,
            "authoredOn": ctx.instant,
            "performer": [{"reference": organization}],
            "note": [{"text": text}],
        }
        if manager:
            request["requester"] = manager
        if plan is not None:
            request["basedOn"] = [{"reference": f"CarePlan/{plan['id']}"}]
        if condition:
            request["reasonReference"] = [{"reference": condition}]
        if goal:
            request["supportingInfo"] = [{"reference": goal}]
        sr = _write(ctx, w, "ServiceRequest", request)
        task: dict[str, Any] = {
            "resourceType": "Task",
            "meta": case_tag(case_id),
            "identifier": [task_identifier(case_id, f"referral:{sr.res_id}")],
            "status": "requested",
            "intent": "order",
            "priority": "routine",
            "code": {"coding": [{"system": _FHIR_TASK_CODE, "code": "fulfill"}]},
            "description": text,
            "focus": {"reference": f"ServiceRequest/{sr.res_id}"},
            "basedOn": [{"reference": f"ServiceRequest/{sr.res_id}"}],
            "for": patient,
            "authoredOn": ctx.instant,
            "owner": {"reference": organization},
            "extension": [{"url": REQUIRED_EXTENSION, "valueBoolean": True}],
        }
        if manager:
            task["requester"] = manager
        t = _write(ctx, w, "Task", task)
        _plan_add(ctx, w, case_id, activities=[f"ServiceRequest/{sr.res_id}"])
        return {"serviceRequest": _load(sr), "task": _load(t)}

    return ctx.store.write(work, policy=ctx.policy)


def update_referral(
    ctx: CaseContext,
    *,
    case_id: str,
    task_id: str,
    status: str,
    reason: str | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:
    """Move a referral Task (accepted, in-progress, rejected with reason, completed with
    outcome, cancelled with reason); the ServiceRequest's status follows."""
    if status not in ("accepted", "in-progress", "rejected", "completed", "cancelled", "failed"):
        raise InvalidRequest(
            "status must be accepted, in-progress, rejected, completed, cancelled or failed"
        )
    if status == "completed" and not (outcome and outcome.strip()):
        raise InvalidRequest("A completed referral needs its outcome")

    def work(w: Writer) -> dict[str, Any]:
        task = _read(w, "Task", task_id)
        if not _case_ref(task, case_id):
            raise NotFound(f"Task/{task_id} is not a referral of this case")
        sr_id = ref_id(task.get("focus"), "ServiceRequest")
        if sr_id is None:
            raise NotFound(f"Task/{task_id} is not a referral of this case")
        if task["status"] not in OPEN_TASK_STATUSES:
            raise BusinessRule(f"Task/{task_id} is already {task['status']}")
        output = (
            [{"type": {"text": "outcome"}, "valueString": outcome}]
            if outcome and status == "completed"
            else None
        )
        try:
            task = _move_task(ctx, w, task, status, reason=reason, output=output)
        except BusinessRule:
            raise
        sr_status = {
            "rejected": "revoked",
            "cancelled": "revoked",
            "failed": "revoked",
            "completed": "completed",
        }.get(status)
        if sr_status:
            sr = _read(w, "ServiceRequest", sr_id)
            if sr.get("status") != sr_status:
                _write(ctx, w, "ServiceRequest", {**sr, "status": sr_status}, res_id=sr_id)
        return task

    return ctx.store.write(work, policy=ctx.policy)


# -- closure ---------------------------------------------------------------------------------------


def close_case(
    ctx: CaseContext,
    *,
    case_id: str,
    reason: str,
    evaluation: str,
    waiver_reason: str | None = None,
) -> dict[str, Any]:
    """Close a case: reason, final evaluation, waived tasks cancelled, 30-day follow-up Task."""
    if reason not in CLOSURE_REASONS:
        raise InvalidRequest(f"reason must be one of {', '.join(sorted(CLOSURE_REASONS))}")
    if not evaluation.strip():
        raise InvalidRequest("A final evaluation is required to close a case")

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        current = current_phase(episode)
        assert current is not None
        episode = {
            **episode,
            "extension": [
                e for e in episode.get("extension") or [] if e.get("url") != CLOSURE_EXTENSION
            ]
            + [closure_extension(reason, evaluation, waiver_reason)],
        }
        try:
            check_move(current, Phase.CLOSURE, gather_facts(w, episode))
        except MoveRefused as exc:
            raise _refuse(exc) from exc
        for task in _case_tasks(w, case_id):
            why = waiver_reason if is_required(task) else "Case closed"
            _move_task(ctx, w, task, "cancelled", reason=f"Case closed: {why}")
        _intake_task_step(ctx, w, episode, "completed")
        plan = _careplan(w, case_id)
        if plan is not None and plan.get("status") == "active":
            status = "completed" if reason == "goals-met" else "revoked"
            _write(
                ctx,
                w,
                "CarePlan",
                {
                    **plan,
                    "status": status,
                    "period": {**plan.get("period", {}), "end": ctx.instant},
                },
                res_id=plan["id"],
            )
        model = case_model(episode)
        if reason != "died" and model is not None:
            days = ctx.config.models[model].follow_up_days
            ident = task_identifier(case_id, "follow-up")
            task = work_task(
                case_id=case_id,
                key="follow-up",
                patient=episode["patient"]["reference"],
                manager=(episode.get("careManager") or {}).get("reference"),
                code=task_code(TaskCode.CASE_FOLLOW_UP),
                description=f"{days}-day check after the case closed",
                due=ctx.today + timedelta(days=days),
                authored=ctx.instant,
                role=CareRole.NURSE_CASE_MANAGER,
                required=False,
            )
            _write(ctx, w, "Task", task, if_none_exist=[_ident(ident["system"], ident["value"])])
        closed = with_phase(episode, Phase.CLOSURE, ctx.instant)
        _write(ctx, w, "EpisodeOfCare", closed, res_id=case_id)
        return closed

    return ctx.store.write(work, policy=ctx.policy)


# -- reassignment --------------------------------------------------------------------------------


def _move_case(
    ctx: CaseContext,
    w: Writer,
    episode: dict[str, Any],
    to: ManagerLoad,
    kind: str,
    reason: str,
) -> None:
    case_id = episode["id"]
    old = (episode.get("careManager") or {}).get("reference")
    _write(
        ctx,
        w,
        "EpisodeOfCare",
        {**episode, "careManager": {"reference": to.manager}},
        res_id=case_id,
    )
    for ref in episode.get("team") or []:
        team_id = ref_id(ref, "CareTeam")
        if not team_id:
            continue
        team = _read(w, "CareTeam", team_id)
        participants = []
        for p in team.get("participant") or []:
            if (p.get("member") or {}).get("reference") == old and "end" not in p.get("period", {}):
                p = {**p, "period": {**p.get("period", {}), "end": ctx.instant}}
            participants.append(p)
        model = case_model(episode)
        role = ctx.config.models[model].eligible_roles[0] if model else CareRole.NURSE_CASE_MANAGER
        participants.append(_participant(to.manager, role, ctx.instant))
        _write(ctx, w, "CareTeam", {**team, "participant": participants}, res_id=team_id)
    for task in _case_tasks(w, case_id):
        changed = dict(task)
        if (task.get("owner") or {}).get("reference") == old:
            changed["owner"] = {"reference": to.manager}
        if (task.get("requester") or {}).get("reference") == old:
            changed["requester"] = {"reference": to.manager}
        if changed != task:
            _write(ctx, w, "Task", changed, res_id=task["id"])
    _log_assignment(ctx, w, case_id=case_id, chosen=to, kind=kind, reason=reason, previous=old)


def reassign_case(
    ctx: CaseContext,
    *,
    case_id: str,
    reason: str,
    care_manager: str | None = None,
    override_reason: str | None = None,
) -> dict[str, Any]:
    """Move one case (and its open Tasks and team membership) to another case manager."""
    if not reason.strip():
        raise InvalidRequest("A reason is required to reassign a case")

    def work(w: Writer) -> dict[str, Any]:
        episode = _case(w, case_id)
        _require_open(episode)
        model = case_model(episode)
        assert model is not None
        old = (episode.get("careManager") or {}).get("reference")
        if care_manager is not None and care_manager == old:
            raise BusinessRule(f"{care_manager} already manages this case")
        to, kind = _assign(
            ctx,
            w,
            model=model,
            organization=(episode.get("managingOrganization") or {}).get("reference"),
            chosen=care_manager,
            override_reason=override_reason,
            exclude=old,
        )
        text = reason if kind != "override" else f"{reason} (over cap: {override_reason})"
        _move_case(ctx, w, episode, to, "reassigned" if kind != "override" else "override", text)
        return _read(w, "EpisodeOfCare", case_id)

    return ctx.store.write(work, policy=ctx.policy)


def reassign_caseload(
    ctx: CaseContext,
    *,
    from_manager: str,
    reason: str,
    to_manager: str | None = None,
    override_reason: str | None = None,
) -> list[dict[str, str]]:
    """Move every open case of a case manager (leave, departure), heaviest first, each to the
    chosen manager or the least-loaded eligible one; all or nothing."""
    if not reason.strip():
        raise InvalidRequest("A reason is required to reassign a caseload")

    def work(w: Writer) -> list[dict[str, str]]:
        cases = [
            e
            for e in _search(
                w, "EpisodeOfCare", [("care-manager", from_manager), ("status", _OPEN_EPISODES)]
            )
            if case_model(e) is not None
        ]
        cases.sort(
            key=lambda e: (
                -ctx.config.models[case_model(e) or CaseModel.BROKERAGE].caseload_weight,
                e["id"],
            )
        )
        moved = []
        for episode in cases:
            model = case_model(episode)
            assert model is not None
            to, kind = _assign(
                ctx,
                w,
                model=model,
                organization=(episode.get("managingOrganization") or {}).get("reference"),
                chosen=to_manager,
                override_reason=override_reason,
                exclude=from_manager,
            )
            _move_case(
                ctx, w, episode, to, "reassigned" if kind != "override" else "override", reason
            )
            moved.append({"case": f"EpisodeOfCare/{episode['id']}", "careManager": to.manager})
        return moved

    return ctx.store.write(work, policy=ctx.policy)
