"""Readmission API: ``GET /api/readmissions?since=&until=`` lists the readmissions found.

Each row: patient, index encounter, readmission encounter, dates, days between, planned or not
(and the planned rule), review Task. ``since``/``until`` are dates of the readmission (both
included). Rows are shown only when the caller's policy can read the readmission Encounter (the
store decides: SMART scopes, patient compartment); the listing is audited.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import InvalidRequest
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from carecoord.transitions.readmissions.tables import readmissions

__all__ = ["install", "router"]

router = APIRouter(prefix="/api", tags=["readmissions"])
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]
_BATCH = 200
_LIMIT = 10_000


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _visible(
    store: FhirStore, policy: AccessPolicy | None, ids: list[str]
) -> list[tuple[str, str, bytes]]:
    rows: list[tuple[str, str, bytes]] = []
    for i in range(0, len(ids), _BATCH):
        batch = ids[i : i + _BATCH]
        params = [("_id", ",".join(batch)), ("_count", str(len(batch)))]
        rows.extend(store.search(store.parse("Encounter", params, policy=policy)).matches)
    return rows


def list_readmissions(
    store: FhirStore, policy: AccessPolicy | None, since: date | None, until: date | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str, bytes]]]:
    """Rows in the date range that the policy lets the caller see, and the Encounters read."""
    query = select(readmissions).order_by(readmissions.c.readmitted, readmissions.c.patient)
    if since is not None:
        query = query.where(readmissions.c.readmitted >= since)
    if until is not None:
        query = query.where(readmissions.c.readmitted <= until)
    with store.engine.connect() as conn:
        found = conn.execute(query.limit(_LIMIT)).all()
    visible = _visible(store, policy, [r.readmission_encounter for r in found])
    seen = {rid for _, rid, _ in visible}
    out = [
        {
            "patient": f"Patient/{r.patient}",
            "index_encounter": f"Encounter/{r.index_encounter}",
            "readmission_encounter": f"Encounter/{r.readmission_encounter}",
            "index_discharged": r.index_discharged.isoformat(),
            "readmitted": r.readmitted.isoformat(),
            "days_between": r.days,
            "planned": r.planned,
            "planned_rule": r.planned_rule,
            "facility": f"Organization/{r.facility}" if r.facility else None,
            "review_task": f"Task/{r.task}" if r.task else None,
        }
        for r in found
        if r.readmission_encounter in seen
    ]
    return out, visible


@router.get("/readmissions")
async def readmissions_list(
    request: Request,
    policy: PolicyDep,
    since: Annotated[date | None, Query(description="First readmission date (included)")] = None,
    until: Annotated[date | None, Query(description="Last readmission date (included)")] = None,
) -> Response:
    if since is not None and until is not None and until < since:
        raise InvalidRequest("until must not be before since")
    store: FhirStore = request.app.state.store
    rows, read = await run_in_threadpool(list_readmissions, store, policy, since, until)
    await request.app.state.audit.on_read(
        policy, _request_id(request), "search-type", read, query="readmissions", always=True
    )
    body = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "count": len(rows),
        "unplanned": sum(1 for r in rows if not r["planned"]),
        "readmissions": rows,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Add the readmission routes."""
    app.include_router(router)
