"""Case-management API routes: ``/api/cases``, ``/api/caseloads``, ``/api/metrics/cases``.

Routes only translate: JSON in, a service call with the request's AccessPolicy and audit, JSON
(or CSV) out. Errors are FHIR errors, rendered as OperationOutcome.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from carecoord.audit.rest import RestAudit
from carecoord.auth.policy import request_policy
from carecoord.cases import reports, service
from carecoord.cases.config import CaseConfig, CaseModel, load_case_config
from carecoord.cases.phases import Phase
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import InvalidRequest
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.settings import Settings, feature_config_dir

__all__ = ["install", "router"]

router = APIRouter(tags=["cases"])
M = TypeVar("M", bound=BaseModel)
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object")
    return body


BodyDep = Annotated[dict[str, Any], Depends(_json)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AcceptIn(_In):
    referral: str = Field(pattern=r"^ServiceRequest/[A-Za-z0-9.\-]{1,64}$")
    model: CaseModel | None = None
    care_manager: str | None = Field(default=None, alias="careManager")
    override_reason: str | None = Field(default=None, alias="overrideReason", max_length=500)
    organization: str | None = None


class ReasonIn(_In):
    reason: str = Field(min_length=1, max_length=1000)


class PhaseIn(_In):
    phase: Phase


class ContactIn(_In):
    when: datetime | None = None
    channel: Literal["phone", "in-person", "video", "home-visit", "text", "email"] = "phone"
    successful: bool = True
    note: str | None = Field(default=None, max_length=2000)


class NeedsIn(_In):
    confirm: list[str] = Field(default_factory=list)
    reject: list[str] = Field(default_factory=list)
    reason: str | None = None


class GoalIn(_In):
    text: str = Field(min_length=1, max_length=500)
    due_date: date = Field(alias="dueDate")
    target: str | None = Field(default=None, max_length=500)


class GoalProgressIn(_In):
    achievement_status: str = Field(alias="achievementStatus")
    lifecycle_status: str | None = Field(default=None, alias="lifecycleStatus")
    note: str | None = Field(default=None, max_length=2000)


class ReferralIn(_In):
    organization: str
    text: str = Field(min_length=1, max_length=1000)
    code: dict[str, Any] | None = None
    goal: str | None = None
    condition: str | None = None


class ReferralStatusIn(_In):
    status: str
    reason: str | None = Field(default=None, max_length=1000)
    outcome: str | None = Field(default=None, max_length=2000)


class CloseIn(_In):
    reason: str
    evaluation: str = Field(min_length=1, max_length=4000)
    waiver_reason: str | None = Field(default=None, alias="waiverReason", max_length=1000)


class ReassignIn(_In):
    reason: str = Field(min_length=1, max_length=500)
    care_manager: str | None = Field(default=None, alias="careManager")
    override_reason: str | None = Field(default=None, alias="overrideReason", max_length=500)


class CaseloadMoveIn(_In):
    from_manager: str = Field(alias="from")
    to_manager: str | None = Field(default=None, alias="to")
    reason: str = Field(min_length=1, max_length=500)
    override_reason: str | None = Field(default=None, alias="overrideReason", max_length=500)


def _parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(problems) from exc


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _ctx(request: Request, policy: AccessPolicy | None) -> service.CaseContext:
    store: FhirStore = request.app.state.store
    audit: RestAudit = request.app.state.audit
    request_id = _request_id(request)

    def on_write(w: Writer, interaction: str, stored: StoredResource) -> None:
        audit.on_write(w, policy, request_id, interaction, stored)

    config: CaseConfig = request.app.state.cases_config
    return service.CaseContext(store, config, store.clock(), policy, on_write)


def _on_read(
    request: Request, policy: AccessPolicy | None, interaction: str, query: str
) -> reports.ReadHook:
    audit: RestAudit = request.app.state.audit
    request_id = _request_id(request)

    def record(rows: list[tuple[str, str, bytes]]) -> None:
        audit.on_read_sync(policy, request_id, interaction, rows, query=query, always=True)

    return record


def _ok(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# -- cases --------------------------------------------------------------------------------------


@router.get("/api/cases")
def list_cases(
    request: Request,
    policy: PolicyDep,
    patient: str | None = None,
    open: bool = False,
) -> Response:
    manager = request.query_params.get("careManager")
    ctx = _ctx(request, policy)
    hook = _on_read(request, policy, "search-type", "EpisodeOfCare?_tag=case")
    return _ok(
        reports.list_cases(ctx, care_manager=manager, patient=patient, open_only=open, on_read=hook)
    )


@router.post("/api/cases")
def accept(request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(AcceptIn, body)
    episode = service.accept_referral(
        _ctx(request, policy),
        referral_id=data.referral.split("/", 1)[1],
        model=data.model,
        care_manager=data.care_manager,
        override_reason=data.override_reason,
        organization=data.organization,
    )
    return _ok(episode, 201)


@router.get("/api/cases/referrals/{referral_id}/screening")
def screening(referral_id: str, request: Request, policy: PolicyDep) -> Response:
    result = service.screen(_ctx(request, policy), referral_id=referral_id)
    return _ok({"eligible": result.eligible, "reasons": result.reasons, "model": result.model})


@router.post("/api/cases/referrals/{referral_id}/decline")
def decline(referral_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(ReasonIn, body)
    task = service.decline_referral(
        _ctx(request, policy), referral_id=referral_id, reason=data.reason
    )
    return _ok(task)


@router.get("/api/cases/{case_id}")
def get_case(case_id: str, request: Request, policy: PolicyDep) -> Response:
    hook = _on_read(request, policy, "read", f"EpisodeOfCare/{case_id}")
    return _ok(reports.case_view(_ctx(request, policy), case_id=case_id, on_read=hook))


@router.post("/api/cases/{case_id}/phase")
def move(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(PhaseIn, body)
    return _ok(service.move_phase(_ctx(request, policy), case_id=case_id, phase=data.phase))


@router.post("/api/cases/{case_id}/contacts")
def contact(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(ContactIn, body)
    ctx = _ctx(request, policy)
    when = data.when or ctx.now
    if when.tzinfo is None:
        raise InvalidRequest("when must carry a time zone")
    comm = service.record_contact(
        ctx,
        case_id=case_id,
        when=when,
        channel=data.channel,
        successful=data.successful,
        note=data.note,
    )
    return _ok(comm, 201)


@router.post("/api/cases/{case_id}/assessments")
def assess(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

    if body.get("resourceType") != "QuestionnaireResponse":
        raise InvalidRequest("The body must be a QuestionnaireResponse")
    try:
        QuestionnaireResponse.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            f"Invalid QuestionnaireResponse: {exc.error_count()} error(s)"
        ) from exc
    result = service.submit_assessment(_ctx(request, policy), case_id=case_id, response=body)
    return _ok(result, 201)


@router.post("/api/cases/{case_id}/needs")
def needs(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(NeedsIn, body)
    return _ok(
        service.confirm_needs(
            _ctx(request, policy),
            case_id=case_id,
            confirm=data.confirm,
            reject=data.reject,
            reason=data.reason,
        )
    )


@router.post("/api/cases/{case_id}/goals")
def goal(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(GoalIn, body)
    made = service.add_goal(
        _ctx(request, policy),
        case_id=case_id,
        text=data.text,
        due=data.due_date,
        target=data.target,
    )
    return _ok(made, 201)


@router.post("/api/cases/{case_id}/goals/{goal_id}")
def goal_progress(
    case_id: str, goal_id: str, request: Request, policy: PolicyDep, body: BodyDep
) -> Response:
    data = _parse(GoalProgressIn, body)
    return _ok(
        service.update_goal(
            _ctx(request, policy),
            case_id=case_id,
            goal_id=goal_id,
            achievement=data.achievement_status,
            lifecycle=data.lifecycle_status,
            note=data.note,
        )
    )


@router.post("/api/cases/{case_id}/referrals")
def referral(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(ReferralIn, body)
    made = service.create_referral(
        _ctx(request, policy),
        case_id=case_id,
        organization=data.organization,
        text=data.text,
        code=data.code,
        goal=data.goal,
        condition=data.condition,
    )
    return _ok(made, 201)


@router.post("/api/cases/{case_id}/referrals/{task_id}")
def referral_status(
    case_id: str, task_id: str, request: Request, policy: PolicyDep, body: BodyDep
) -> Response:
    data = _parse(ReferralStatusIn, body)
    return _ok(
        service.update_referral(
            _ctx(request, policy),
            case_id=case_id,
            task_id=task_id,
            status=data.status,
            reason=data.reason,
            outcome=data.outcome,
        )
    )


@router.post("/api/cases/{case_id}/close")
def close(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(CloseIn, body)
    return _ok(
        service.close_case(
            _ctx(request, policy),
            case_id=case_id,
            reason=data.reason,
            evaluation=data.evaluation,
            waiver_reason=data.waiver_reason,
        )
    )


@router.post("/api/cases/{case_id}/reassign")
def reassign(case_id: str, request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(ReassignIn, body)
    return _ok(
        service.reassign_case(
            _ctx(request, policy),
            case_id=case_id,
            reason=data.reason,
            care_manager=data.care_manager,
            override_reason=data.override_reason,
        )
    )


@router.post("/api/cases/{case_id}/monitoring")
def monitoring(case_id: str, request: Request, policy: PolicyDep) -> Response:
    made = service.ensure_monitoring(_ctx(request, policy), case_id=case_id)
    return _ok({"created": [f"Task/{t}" for t in made]})


# -- caseloads and metrics ---------------------------------------------------------------------


@router.get("/api/caseloads")
def caseloads(request: Request, policy: PolicyDep, organization: str | None = None) -> Response:
    rows = service.caseloads(_ctx(request, policy), organization=organization)
    return _ok({"caseloads": rows, "alerts": [r["alert"] for r in rows if r["alert"]]})


@router.post("/api/caseloads/reassign")
def reassign_caseload(request: Request, policy: PolicyDep, body: BodyDep) -> Response:
    data = _parse(CaseloadMoveIn, body)
    moved = service.reassign_caseload(
        _ctx(request, policy),
        from_manager=data.from_manager,
        to_manager=data.to_manager,
        reason=data.reason,
        override_reason=data.override_reason,
    )
    return _ok({"moved": moved})


def _metrics(request: Request, policy: AccessPolicy | None, csv: bool) -> Response:
    params = request.query_params
    hook = _on_read(request, policy, "search-type", "EpisodeOfCare?_tag=case (outcomes)")
    rows = reports.outcome_rows(
        _ctx(request, policy),
        model=params.get("model"),
        care_manager=params.get("careManager"),
        on_read=hook,
    )
    if csv or params.get("format") == "csv" or params.get("_format") == "csv":
        return Response(reports.outcomes_csv(rows), media_type="text/csv; charset=utf-8")
    return _ok({"outcomes": [r.to_json() for r in rows]})


@router.get("/api/metrics/cases")
def metrics(request: Request, policy: PolicyDep) -> Response:
    return _metrics(request, policy, False)


@router.get("/api/metrics/cases.csv")
def metrics_csv(request: Request, policy: PolicyDep) -> Response:
    return _metrics(request, policy, True)


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Validate config/cases (a bad file stops the start, naming file and field) and add routes."""
    app.state.cases_config = load_case_config(
        feature_config_dir(settings.config_dir, "cases") / "cases"
    )
    app.include_router(router)
