"""The ASGI application: ``create_app(settings)`` wires the store, the routers and error handling.

Nothing connects at import time; the engine is created here and disposed at shutdown.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carecoord import __version__
from carecoord.audit.journal import AuditJournal, journal_directory
from carecoord.audit.rest import RestAudit
from carecoord.auth.routes import router as auth_router
from carecoord.auth.server import TokenService
from carecoord.cases import handlers as case_handlers
from carecoord.cases import routes as case_routes
from carecoord.cases.hook import case_phase_guard
from carecoord.crypto import load_secret_key
from carecoord.db import make_engine
from carecoord.events.runtime import install as install_events
from carecoord.fhir.aread import AsyncReader
from carecoord.fhir.capability import capability_statement
from carecoord.fhir.errors import FhirError, Issue, fhir_error_response, operation_outcome
from carecoord.fhir.fastpath import FastPaths
from carecoord.fhir.router import FHIR_JSON, router
from carecoord.fhir.store import Clock, FhirStore
from carecoord.fhir.types import COORDINATED_TYPES
from carecoord.fhir.validation import warm_models
from carecoord.jobs import default_registry, import_handler_modules
from carecoord.jobs.runtime import install as install_jobs
from carecoord.pccm import handlers as pccm_handlers
from carecoord.pccm import routes as pccm_routes
from carecoord.settings import Settings
from carecoord.smart.routes import install as install_smart
from carecoord.sync import install as install_sync
from carecoord.sync import register_handlers as register_sync_handlers
from carecoord.sync.bulk import register_bulk_handlers
from carecoord.sync.push import PushHook, register_push_handlers
from carecoord.transitions import handlers as transition_handlers
from carecoord.transitions import routes as transition_routes
from carecoord.transitions.metrics import routes as metrics_routes
from carecoord.transitions.readmissions import routes as readmission_routes
from carecoord.transitions.risk import routes as risk_routes
from carecoord.web import routes as web_routes

__all__ = ["create_app"]

log = logging.getLogger("carecoord.http")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 401: "login", 403: "forbidden"}


class RequestLog:
    """Pure ASGI middleware: a request id on every response and a PHI-free access log line.

    The line carries method, route template (``/fhir/{res_type}/{res_id}``), status and duration;
    never the query string, ids or bodies, which can identify a patient.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Request ids: a random prefix per process and a counter (unique, and no system call
        # for randomness on every request).
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{self._prefix}{next(self._counter):016x}"
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
                request_id = value.decode()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                template = getattr(route, "path", None) or "(unmatched)"
                log.info(
                    "%s %s %s %.1fms request_id=%s",
                    scope["method"],
                    template,
                    status,
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )


def _in_memory(engine: Engine) -> bool:
    """An SQLite database that lives in this process only (no other process can store to it)."""
    database = engine.url.database or ""
    return engine.dialect.name == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or engine.url.query.get("mode") == "memory"
    )


def create_app(
    settings: Settings, *, engine: Engine | None = None, clock: Clock | None = None
) -> FastAPI:
    """Build the application for ``settings`` (an engine may be handed in, e.g. by tests)."""
    own_engine = engine is None
    engine = engine or make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)
    store_args: dict[str, Any] = {
        "retries": settings.write_retries,
        "default_count": settings.default_page_size,
        "max_count": settings.max_page_size,
        "max_include": settings.max_include,
        "base_url": settings.base_url,
        "group_commit": settings.group_commit,
    }
    if clock is not None:
        store_args["clock"] = clock
    store = FhirStore(engine, **store_args)
    journal = AuditJournal(
        store,
        journal_directory(
            settings.effective_audit_journal_dir, engine.url.render_as_string(hide_password=True)
        ),
        process=settings.audit_store_process and not _in_memory(engine),
    )
    store.settle_audit = journal.settle
    async_reader = (
        AsyncReader(
            engine.url.render_as_string(hide_password=False), max_size=settings.db_pool_size
        )
        if engine.dialect.name == "postgresql"
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_models(COORDINATED_TYPES)
        journal.start()  # also stores the journals that ended processes left behind
        yield
        if async_reader is not None:
            await async_reader.close()
        journal.close()
        if own_engine:
            engine.dispose()

    app = FastAPI(
        title="CareCoord",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.engine = engine
    token_url = f"{settings.public_url.rstrip('/')}/auth/token" if settings.public_url else None
    app.state.capability = capability_statement(store.registry, settings.base_url, token_url)
    app.state.tokens = TokenService(
        engine, load_secret_key(settings), ttl=settings.access_token_ttl_seconds
    )
    app.state.audit = RestAudit(journal)
    app.state.async_reader = async_reader
    app.state.session_source = None  # set by the SMART launch module when it is installed
    app.add_middleware(FastPaths)  # innermost: plain reads and writes, unrouted
    app.include_router(auth_router)  # before /fhir/{type}: it serves /fhir/.well-known/...
    install_events(app, settings, engine)  # $process-message ahead of /fhir/{type}; Encounter jobs
    app.include_router(router)
    install_smart(app, settings, engine)  # EHR launches, sessions, JWKS; sets session_source
    install_sync(app, settings, engine)  # GET /sync/status; validates config/sync/sync.toml
    register_sync_handlers(default_registry, settings=settings)
    register_push_handlers(default_registry, settings=settings)
    register_bulk_handlers(default_registry, settings=settings)
    for feature in (transition_routes, risk_routes, readmission_routes, metrics_routes):
        feature.install(app, settings, engine)
    pccm_routes.install(app, settings, engine)
    case_routes.install(app, settings, engine)
    web_routes.install(app, settings, engine)
    for handlers in (transition_handlers, pccm_handlers, case_handlers):
        handlers.register_handlers(default_registry, settings=settings)
    store.add_write_hook(PushHook(app.state.smart.connections))  # Task & co. to EHRs
    store.add_write_hook(case_phase_guard)  # EpisodeOfCare phase moves, through the API too
    import_handler_modules()
    install_jobs(app, settings, engine, default_registry)  # one worker thread, if configured

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.exception_handler(FhirError)
    async def fhir_error(_: Request, exc: FhirError) -> Response:
        return fhir_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "processing")
        detail = str(exc.detail)
        if exc.status_code == 404 and request.url.path.startswith("/fhir"):
            detail = "No such FHIR endpoint"
        return Response(
            operation_outcome([Issue(detail, code)]),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=FHIR_JSON,
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client hung up while sending its body: nothing to answer, nothing went wrong here.
        log.debug("client disconnected before the request body was read")
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Type only: exception messages can carry resource content or SQL parameters.
        log.error(
            "unhandled %s on %s request_id=%s",
            type(exc).__name__,
            request.method,
            request.scope.get("state", {}).get("request_id"),
        )
        return Response(
            operation_outcome([Issue("Internal server error", "exception")]),
            status_code=500,
            media_type=FHIR_JSON,
        )

    app.add_middleware(RequestLog)
    return app
