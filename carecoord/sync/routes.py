"""``GET /sync/status`` and ``GET /sync/conflicts`` (JSON) and :func:`install`, which adds them
to the application.

The routes need an authenticated caller with a ``system/`` or ``user/`` scope (operational
data, not a patient's: ``patient/`` scopes alone get 403).
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import Forbidden
from carecoord.jobs.clock import Clock, utc_now
from carecoord.settings import Settings
from carecoord.smart.connections import load_connections
from carecoord.sync.config import SyncConfig, load_sync_config
from carecoord.sync.conflicts import list_conflicts
from carecoord.sync.status import sync_status

__all__ = ["CONFLICTS_PATH", "STATUS_PATH", "install", "router"]

STATUS_PATH = "/sync/status"
CONFLICTS_PATH = "/sync/conflicts"

router = APIRouter(include_in_schema=False)


class _StatusSource:
    """What the route reads: the engine, the configured connection names, the sync config."""

    def __init__(self, engine: Engine, names: list[str], config: SyncConfig, clock: Clock):
        self.engine = engine
        self.names = names
        self.config = config
        self.clock = clock

    def report(self) -> bytes:
        found = sync_status(self.engine, self.names, config=self.config, clock=self.clock)
        return orjson.dumps({"connections": [s.as_json() for s in found]})

    def conflicts(self, connection: str | None) -> bytes:
        found = list_conflicts(self.engine, connection)
        return orjson.dumps({"conflicts": [c.as_json() for c in found]})


def install(app: FastAPI, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> None:
    """Add ``GET /sync/status`` to ``app``; the sync configuration is validated now (raises
    :class:`~carecoord.sync.errors.SyncConfigError` naming the file and field). Idempotent."""
    if getattr(app.state, "sync_status", None) is not None:
        return
    smart = getattr(app.state, "smart", None)
    registry = (
        smart.connections
        if smart is not None
        else load_connections(settings.config_dir, check_secrets=False)
    )
    names = [c.name for c in registry]
    app.state.sync_status = _StatusSource(
        engine, names, load_sync_config(settings.config_dir), clock
    )
    app.include_router(router)


def _may_see_status(policy: AccessPolicy | None) -> bool:
    if policy is None:
        return True  # authentication is switched off (auth_required = false)
    return any(scope.context in ("system", "user") for scope in policy.scopes)


@router.get(STATUS_PATH)
async def status(
    request: Request, policy: Annotated[AccessPolicy | None, Depends(request_policy)]
) -> Response:
    if not _may_see_status(policy):
        raise Forbidden("Sync status needs a system/ or user/ scope")
    source: _StatusSource = request.app.state.sync_status
    body = await run_in_threadpool(source.report)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get(CONFLICTS_PATH)
async def conflicts(
    request: Request,
    policy: Annotated[AccessPolicy | None, Depends(request_policy)],
    connection: str | None = None,
) -> Response:
    """Open push conflicts (``?connection=NAME``): ids, EHR ids, reasons (element names)."""
    if not _may_see_status(policy):
        raise Forbidden("Sync conflicts need a system/ or user/ scope")
    source: _StatusSource = request.app.state.sync_status
    body = await run_in_threadpool(source.conflicts, connection)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})
