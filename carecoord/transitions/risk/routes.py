"""Readmission-risk API: ``GET /api/patients/{id}/readmission-risk`` (latest discharge's scores).

Answers ``{"lace": {"score", "band", "components", "missing"}, "hospital": {...}, "encounter",
"discharged"}`` from the stored RiskAssessments. The request's policy is passed to the store (SMART
scopes, patient compartment) and every access, also a refused one, is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import Forbidden, NotFound
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from carecoord.transitions.risk.config import load_risk_config
from carecoord.transitions.risk.resources import RISK_METHOD_SYSTEM, score_json

__all__ = ["install", "router"]

router = APIRouter(prefix="/api", tags=["readmission risk"])
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]
Row = tuple[str, str, bytes]


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _assessments(store: FhirStore, policy: AccessPolicy | None, patient_id: str) -> list[Row]:
    store.read("Patient", patient_id, policy=policy)
    rows: list[Row] = []
    methods = f"{RISK_METHOD_SYSTEM}|LACE,{RISK_METHOD_SYSTEM}|HOSPITAL"
    params = [("patient", f"Patient/{patient_id}"), ("method", methods), ("_count", "1000")]
    cursor: str | None = None
    while True:
        paged = [*params, *([("_cursor", cursor)] if cursor else [])]
        page = store.search(store.parse("RiskAssessment", paged, policy=policy))
        rows.extend(page.matches)
        cursor = page.next_cursor
        if not cursor:
            return rows


def latest_risk(rows: list[Row]) -> dict[str, Any] | None:
    """Both scores of the latest discharge among stored RiskAssessments."""
    by_encounter: dict[str, dict[str, Any]] = {}
    when: dict[str, str] = {}
    for _, _, content in rows:
        body = orjson.loads(content)
        encounter = str((body.get("encounter") or {}).get("reference", ""))
        method = next((c.get("code") for c in (body.get("method") or {}).get("coding") or ()), None)
        if not encounter or method not in ("LACE", "HOSPITAL"):
            continue
        by_encounter.setdefault(encounter, {})[str(method).lower()] = score_json(body)
        when[encounter] = str(body.get("occurrenceDateTime") or "")
    if not by_encounter:
        return None
    latest = max(by_encounter, key=lambda e: (when[e], e))
    scores = by_encounter[latest]
    return {
        "lace": scores.get("lace"),
        "hospital": scores.get("hospital"),
        "encounter": latest,
        "discharged": when[latest] or None,
    }


@router.get("/patients/{patient_id}/readmission-risk")
async def readmission_risk(request: Request, patient_id: str, policy: PolicyDep) -> Response:
    store: FhirStore = request.app.state.store
    audit = request.app.state.audit
    try:
        rows = await run_in_threadpool(_assessments, store, policy, patient_id)
    except (Forbidden, NotFound) as exc:
        if policy is not None:
            await audit.on_denied(
                policy, _request_id(request), "search-type", f"Patient/{patient_id}", exc.message
            )
        raise
    await audit.on_read(
        policy, _request_id(request), "search-type", rows, query="readmission-risk", always=True
    )
    found = latest_risk(rows)
    if found is None:
        raise NotFound("No readmission risk has been assessed for this patient")
    return Response(orjson.dumps(found), media_type="application/json")


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Validate config/risk at start-up (errors name file and field) and add the route."""
    app.state.risk_config = load_risk_config(settings.config_dir)
    app.include_router(router)
