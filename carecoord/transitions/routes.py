"""Transition API: a patient's checklists and the actions on their items.

- ``GET  /api/patients/{id}/transitions`` — checklists (newest first) with items, owners,
  deadlines and business days left;
- ``POST /api/tasks/{id}/contact-attempts`` — ``{"reached": bool, "note"?, "when"?}``;
- ``POST /api/tasks/{id}/status`` — ``{"status", "reason"?}`` (the Task state machine decides);
- ``POST /api/tasks/{id}/owner`` — ``{"owner": "Practitioner/…", "reason"?}``.

Routes translate only: access is the request's policy (SMART scopes, patient compartment), every
access is audited, and the checklist templates are validated when the app is built.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.settings import Settings
from carecoord.transitions.codes import CAREPLAN_CATEGORY_SYSTEM, TRANSITION_OF_CARE
from carecoord.transitions.extensions import load_extensions
from carecoord.transitions.guard import task_guard
from carecoord.transitions.service import tcm_billing
from carecoord.transitions.templates import TemplateSet, load_templates
from carecoord.transitions.views import checklist_view
from carecoord.transitions.workflow import move_task, reassign_task, record_contact_attempt

__all__ = ["install", "router"]

router = APIRouter(prefix="/api", tags=["transitions"])
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]
T = TypeVar("T")


class ContactAttempt(BaseModel):
    reached: bool
    note: str | None = Field(default=None, max_length=2000)
    when: datetime | None = None
    medium: str = Field(default="phone", pattern="^(phone|electronic)$")


class StatusChange(BaseModel):
    status: str = Field(pattern="^[a-z-]{3,20}$")
    reason: str | None = Field(default=None, max_length=500)


class OwnerChange(BaseModel):
    owner: str = Field(max_length=200)
    reason: str | None = Field(default=None, max_length=500)


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.store.clock
    return clock()


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _write(
    request: Request,
    policy: AccessPolicy | None,
    op: Callable[[Writer], T],
    written: Callable[[T], StoredResource],
) -> T:
    store: FhirStore = request.app.state.store
    audit = request.app.state.audit

    def work(w: Writer) -> T:
        result = op(w)
        audit.on_write(w, policy, _request_id(request), "update", written(result))
        return result

    return store.write(work, policy=policy)


@router.get("/patients/{patient_id}/transitions")
async def patient_transitions(request: Request, patient_id: str, policy: PolicyDep) -> Response:
    store: FhirStore = request.app.state.store
    templates: TemplateSet = request.app.state.transition_templates
    params = [
        ("subject", f"Patient/{patient_id}"),
        ("category", f"{CAREPLAN_CATEGORY_SYSTEM}|{TRANSITION_OF_CARE}"),
        ("_revinclude", "Task:based-on"),
        ("_count", "20"),
    ]
    query = store.parse("CarePlan", params, policy=policy)
    page = await run_in_threadpool(store.search, query)
    rows = [*page.matches, *page.included]
    await request.app.state.audit.on_read(
        policy, _request_id(request), "search-type", rows, query="transitions", always=True
    )
    tasks = {rid: orjson.loads(c) for t, rid, c in page.included if t == "Task"}
    now = _now(request)
    views = []
    for _, plan_id, content in page.matches:
        plan = orjson.loads(content)
        org = str((plan.get("author") or {}).get("reference", "")).partition("/")[2] or None
        calendar = templates.for_organization(org).calendar
        views.append(checklist_view(plan_id, plan, tasks, calendar, calendar.local_date(now)))
    views.sort(key=lambda v: str((v.get("period") or {}).get("start", "")), reverse=True)
    return _json({"patient": patient_id, "checklists": views})


@router.post("/tasks/{task_id}/contact-attempts")
async def contact_attempt(
    request: Request, task_id: str, body: ContactAttempt, policy: PolicyDep
) -> Response:
    when = (body.when or _now(request)).astimezone(UTC)
    by = policy.agent.who if policy is not None and policy.agent.kind == "user" else None
    result = await run_in_threadpool(
        _write,
        request,
        policy,
        lambda w: record_contact_attempt(
            w,
            task_id=task_id,
            reached=body.reached,
            when=when,
            note=body.note,
            by=by,
            medium=body.medium,
        ),
        lambda r: r.task,
    )
    task = orjson.loads(result.task.content or b"{}")
    return _json(
        {
            "communication": f"Communication/{result.communication_id}",
            "attempt": result.attempt,
            "unsuccessful_attempts": result.unsuccessful,
            "task_status": task.get("status"),
            "business_status": (task.get("businessStatus") or {}).get("text"),
        },
        201,
    )


@router.post("/tasks/{task_id}/status")
async def change_status(
    request: Request, task_id: str, body: StatusChange, policy: PolicyDep
) -> Response:
    now = _now(request)
    stored = await run_in_threadpool(
        _write,
        request,
        policy,
        lambda w: move_task(w, task_id=task_id, status=body.status, when=now, reason=body.reason),
        lambda s: s,
    )
    return Response(stored.content or b"{}", media_type="application/fhir+json")


@router.post("/tasks/{task_id}/owner")
async def change_owner(
    request: Request, task_id: str, body: OwnerChange, policy: PolicyDep
) -> Response:
    stored = await run_in_threadpool(
        _write,
        request,
        policy,
        lambda w: reassign_task(w, task_id=task_id, owner=body.owner, reason=body.reason),
        lambda s: s,
    )
    return Response(stored.content or b"{}", media_type="application/fhir+json")


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Validate the templates, enforce the Task state machine on every write, add the routes."""
    app.state.transition_templates = load_templates(settings.config_dir)
    load_extensions(settings.config_dir)  # risk and readmission settings: fail at start-up
    store: FhirStore = app.state.store
    store.add_write_hook(task_guard(tcm_billing))
    app.include_router(router)
