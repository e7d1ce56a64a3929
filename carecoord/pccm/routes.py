"""PCCM API: a member's assignment with its reasons, their history, choice, a PCP leaving.

- ``GET  /api/pccm/programs`` — the programs (name, title, rule order);
- ``GET  /api/pccm/assignments/{patient}`` — current assignment per program (or why none);
- ``GET  /api/pccm/assignments/{patient}/history`` — every assignment, newest first;
- ``POST /api/pccm/assignments/{patient}/choice`` — ``{"program", "pcp", "cause"?}``;
- ``POST /api/pccm/programs/{program}/pcps/{pcp}/leave`` — ``{"reason"?}``: queues the panel's
  reassignment (202).

Routes translate only: the patient is read under the request's policy (scopes, compartment),
every access is audited, and the program files are validated when the app is built.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import Forbidden
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.jobs import enqueue
from carecoord.pccm.handlers import PCP_LEFT_JOB
from carecoord.pccm.program import load_programs
from carecoord.pccm.service import PccmService
from carecoord.settings import Settings

__all__ = ["install", "router"]

router = APIRouter(prefix="/api/pccm", tags=["pccm"])
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]


class Choice(BaseModel):
    program: str = Field(min_length=1, max_length=64)
    pcp: str = Field(min_length=1, max_length=64, description="PractitionerRole id")
    cause: str | None = Field(default=None, min_length=1, max_length=500)


class Leave(BaseModel):
    reason: str | None = Field(default=None, max_length=200)


def _service(request: Request) -> PccmService:
    service: PccmService = request.app.state.pccm
    return service


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


async def _patient(
    request: Request, patient_id: str, policy: AccessPolicy | None
) -> StoredResource:
    """Read the patient under the policy (403/404 when out of reach) and audit the access."""
    store: FhirStore = request.app.state.store
    patient = await run_in_threadpool(store.read, "Patient", patient_id, policy=policy)
    await request.app.state.audit.on_read(
        policy,
        _request_id(request),
        "read",
        [("Patient", patient_id, patient.content)],
        query="pccm-assignments",
        always=True,
    )
    return patient


@router.get("/programs")
async def programs(request: Request, policy: PolicyDep) -> Response:
    return _json(
        [
            {
                "name": p.name,
                "title": p.title,
                "rules": [r.value for r in p.rules],
                "distanceMiles": p.distance_miles,
                "capPerPcp": p.caps.per_pcp,
            }
            for p in _service(request).programs.values()
        ]
    )


@router.get("/assignments/{patient_id}")
async def current(request: Request, patient_id: str, policy: PolicyDep) -> Response:
    await _patient(request, patient_id, policy)
    rows = await run_in_threadpool(_service(request).assignments_of, patient_id, current_only=True)
    return _json({"patient": f"Patient/{patient_id}", "assignments": rows})


@router.get("/assignments/{patient_id}/history")
async def history(request: Request, patient_id: str, policy: PolicyDep) -> Response:
    await _patient(request, patient_id, policy)
    rows = await run_in_threadpool(_service(request).assignments_of, patient_id, current_only=False)
    return _json({"patient": f"Patient/{patient_id}", "assignments": rows})


@router.post("/assignments/{patient_id}/choice")
async def choice(request: Request, patient_id: str, body: Choice, policy: PolicyDep) -> Response:
    # Access is decided here (the patient in reach, write access to it); the consequences (the
    # old PCP's Task cancelled, the new one's Task, notice, Provenance) are the service's own
    # writes, audited under the caller's agent.
    await _patient(request, patient_id, policy)
    if policy is not None and not policy.allows_type("Patient", "u"):
        raise Forbidden("Recording a PCP choice needs write access to the Patient")
    audit = request.app.state.audit

    def audited(w: Writer) -> None:
        audit.on_write(w, policy, _request_id(request), "update", w.read("Patient", patient_id))

    outcome = await run_in_threadpool(
        lambda: _service(request).choose(
            body.program, patient_id, body.pcp, cause=body.cause, audit=audited
        )
    )
    return _json(
        {
            "patient": f"Patient/{patient_id}",
            "decision": outcome.decision.to_json(),
            "notice": outcome.source_id,
        },
        201,
    )


@router.post("/programs/{program}/pcps/{pcp_id}/leave")
async def leave(
    request: Request, program: str, pcp_id: str, body: Leave, policy: PolicyDep
) -> Response:
    if policy is not None and (
        policy.patient is not None or not policy.allows_type("PractitionerRole", "u")
    ):
        raise Forbidden(
            "Taking a PCP out of a program needs system write access to PractitionerRole"
        )
    service = _service(request)
    service.program(program)  # 404 for an unknown program
    store: FhirStore = request.app.state.store
    await run_in_threadpool(store.read, "PractitionerRole", pcp_id, policy=policy)

    def work(w: Writer) -> int | None:
        return enqueue(
            w.conn,
            kind=PCP_LEFT_JOB,
            payload={"program": program, "pcp": pcp_id, "reason": body.reason},
            key=f"pccm-pcp-left:{program}:{pcp_id}",
            clock=store.clock,
        )

    job = await run_in_threadpool(store.write, work)
    return _json({"program": program, "pcp": f"PractitionerRole/{pcp_id}", "job": job}, 202)


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Validate the programs in ``config/pccm/`` (a bad file stops start-up) and add the routes."""
    programs = load_programs(settings.config_dir)
    store: FhirStore = app.state.store
    app.state.pccm = PccmService(store, programs, clock=store.clock)
    app.include_router(router)
