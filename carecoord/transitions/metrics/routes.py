"""Program-metrics API: ``GET /api/metrics/transitions`` (JSON) and ``.../transitions.csv``.

Query: ``since``/``until`` (discharge dates, both included; default the last 12 months),
``by`` (repeatable: period, facility, unit, case_manager, pcp, risk_band), ``period``
(week | month | quarter | year). Computed from the FHIR data the caller's policy can read;
audited like a search.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import InvalidRequest
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.metrics.compute import DIMENSIONS, aggregate, discharge_outcomes
from carecoord.transitions.metrics.load import load_metrics_input
from carecoord.transitions.risk.config import RiskConfig, load_risk_config

__all__ = ["install", "router", "transition_metrics"]

router = APIRouter(prefix="/api/metrics", tags=["metrics"])
PolicyDep = Annotated[AccessPolicy | None, Depends(request_policy)]
Period = Literal["week", "month", "quarter", "year"]


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _calendars(request: Request, config: RiskConfig) -> Callable[[str | None], BusinessCalendar]:
    templates = getattr(request.app.state, "transition_templates", None)
    fallback = BusinessCalendar.us_federal(config.timezone)

    def calendar_for(org: str | None) -> BusinessCalendar:
        if templates is not None:
            try:
                found: BusinessCalendar = templates.for_organization(org).calendar
                return found
            except Exception:  # no template for this organisation: the default calendar
                return fallback
        return fallback

    return calendar_for


def transition_metrics(
    store: FhirStore,
    policy: AccessPolicy | None,
    config: RiskConfig,
    calendar_for: Callable[[str | None], BusinessCalendar],
    *,
    since: date,
    until: date,
    by: list[str],
    period: str,
) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    data, read = load_metrics_input(store, policy, config.readmissions, since=since, until=until)
    rows = discharge_outcomes(
        data,
        config.readmissions,
        since=since,
        until=until,
        calendar_for=calendar_for,
        combine=config.combine,
        intermediate_as=config.hospital_intermediate_as,
    )
    result = aggregate(rows, by, period=period)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "period": period,
        **result,
    }, read


async def _compute(
    request: Request,
    policy: AccessPolicy | None,
    since: date | None,
    until: date | None,
    by: list[str],
    period: str,
) -> dict[str, Any]:
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise InvalidRequest(
            f"by: unknown dimension {unknown[0]!r} (one of {', '.join(DIMENSIONS)})"
        )
    if len(set(by)) != len(by):
        raise InvalidRequest("by: a dimension is repeated")
    store: FhirStore = request.app.state.store
    config: RiskConfig | None = getattr(request.app.state, "risk_config", None)
    if config is None:
        config = load_risk_config(request.app.state.settings.config_dir)
        request.app.state.risk_config = config
    now: datetime = store.clock()
    until = until or now.date()
    since = since or (until - timedelta(days=365))
    if until < since:
        raise InvalidRequest("until must not be before since")
    body, read = await run_in_threadpool(
        transition_metrics,
        store,
        policy,
        config,
        _calendars(request, config),
        since=since,
        until=until,
        by=by,
        period=period,
    )
    await request.app.state.audit.on_read(
        policy, _request_id(request), "search-type", read, query="metrics/transitions", always=True
    )
    return body


SinceQ = Annotated[date | None, Query(description="First discharge date (included)")]
UntilQ = Annotated[date | None, Query(description="Last discharge date (included)")]
ByQ = Annotated[list[str], Query(description="Group by: " + ", ".join(DIMENSIONS))]


@router.get("/transitions")
async def metrics_json(
    request: Request,
    policy: PolicyDep,
    since: SinceQ = None,
    until: UntilQ = None,
    by: ByQ = [],  # noqa: B006 - FastAPI copies query defaults
    period: Period = "month",
    format: Literal["json", "csv"] = "json",
) -> Response:
    body = await _compute(request, policy, since, until, by, period)
    if format == "csv":
        return _csv(body)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/transitions.csv")
async def metrics_csv(
    request: Request,
    policy: PolicyDep,
    since: SinceQ = None,
    until: UntilQ = None,
    by: ByQ = [],  # noqa: B006 - FastAPI copies query defaults
    period: Period = "month",
) -> Response:
    return _csv(await _compute(request, policy, since, until, by, period))


def _csv(body: dict[str, Any]) -> Response:
    """One line per group, then a total line (dimension columns say "(all)")."""
    by: list[str] = body["by"]
    measures = list(body["total"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["since", "until", *by, *measures])
    for group in body["groups"]:
        writer.writerow(
            [body["since"], body["until"], *(group[d] for d in by), *(group[m] for m in measures)]
        )
    total = body["total"]
    writer.writerow(
        [body["since"], body["until"], *("(all)" for _ in by), *(total[m] for m in measures)]
    )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="transition-metrics.csv"'},
    )


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Add the metrics routes."""
    app.include_router(router)
