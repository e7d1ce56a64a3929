"""HTTP routes of the SMART client and :func:`install`, which adds them to the application.

``GET /launch`` (EHR launch), ``GET /login`` (standalone), ``GET /auth/callback``,
``GET /app/patient``, ``POST /logout`` and ``GET /.well-known/jwks.json``. Routes only translate:
the flows live in :mod:`carecoord.smart.launch`, :mod:`~carecoord.smart.sessions` and
:mod:`~carecoord.smart.ehrapi`. Log lines name the connection and the error class, never a
token, code, state or patient.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from carecoord.settings import ConfigError, Settings
from carecoord.smart.connections import EhrConnection, is_loopback
from carecoord.smart.ehrapi import fhir_read
from carecoord.smart.errors import (
    DiscoveryError,
    KeyStoreError,
    LaunchError,
    ReauthorizationRequired,
    SmartError,
    TokenEndpointUnavailable,
    TokenRejected,
    UnknownConnection,
)
from carecoord.smart.launch import (
    LAUNCH_COOKIE,
    LAUNCH_TTL_SECONDS,
    LaunchKind,
    begin_launch,
    complete_launch,
)
from carecoord.smart.pages import PAGE_HEADERS, message_page, patient_page
from carecoord.smart.runtime import SmartRuntime
from carecoord.smart.sessions import SESSION_COOKIE, SessionStore, current_session, hash_secret

__all__ = ["CALLBACK_PATH", "install", "router"]

log = logging.getLogger("carecoord.smart")

CALLBACK_PATH = "/auth/callback"
PATIENT_PATH = "/app/patient"
_BROWSER_ID = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    runtime: SmartRuntime | None = getattr(app.state, "smart", None)
    if runtime is not None:
        await runtime.aclose()


router = APIRouter(lifespan=_lifespan, include_in_schema=False)


def install(
    app: FastAPI, settings: Settings, engine: Engine, *, clock: Callable[[], float] = time.time
) -> None:
    """Add the SMART client to ``app``: connections (validated now), routes, shared state, and
    ``app.state.session_source`` (:func:`current_session`, read by the access policy).

    Idempotent: a second call on the same application does nothing. Raises
    :class:`ConfigError` naming the file and field when a connection file is invalid.
    """
    if getattr(app.state, "smart", None) is not None:
        return
    app.state.smart = SmartRuntime.from_settings(settings, engine, clock=clock)
    app.state.session_source = current_session
    app.include_router(router)


def _runtime(request: Request) -> SmartRuntime:
    runtime: SmartRuntime = request.app.state.smart
    return runtime


def _base_url(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def _secure(request: Request, settings: Settings) -> bool:
    host = urlsplit(settings.public_url).hostname if settings.public_url else request.url.hostname
    return not is_loopback(host)


def _connection_names(runtime: SmartRuntime) -> list[str]:
    return [c.name for c in runtime.connections]


def _fail(title: str, message: str, status: int, exc: Exception) -> Response:
    log.warning("%s: %s: %s", title, type(exc).__name__, exc)
    return message_page(title, message, status=status)


async def _start(
    request: Request, connection: EhrConnection, kind: LaunchKind, launch: str | None
) -> Response:
    runtime = _runtime(request)
    settings = runtime.settings
    browser = request.cookies.get(LAUNCH_COOKIE, "")
    if not _BROWSER_ID.match(browser):
        browser = secrets.token_urlsafe(32)
    try:
        url = await begin_launch(
            runtime,
            connection=connection,
            kind=kind,
            launch=launch,
            redirect_uri=_base_url(request, settings) + CALLBACK_PATH,
            browser=browser,
        )
    except DiscoveryError as exc:
        return _fail(
            "EHR not reachable", "The EHR's SMART configuration could not be read.", 502, exc
        )
    response = RedirectResponse(url, status_code=302, headers=PAGE_HEADERS)
    response.set_cookie(
        LAUNCH_COOKIE,
        browser,
        max_age=LAUNCH_TTL_SECONDS,
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/launch")
async def ehr_launch(request: Request, iss: str = "", launch: str = "") -> Response:
    """EHR launch: only a configured ``iss`` is accepted (no redirect, no fetch otherwise)."""
    if not iss or not launch or len(launch) > 2048:
        return message_page(
            "Launch not possible", "The launch request needs iss and launch.", status=400
        )
    try:
        connection = _runtime(request).connections.by_iss(iss)
    except UnknownConnection:
        log.info("EHR launch refused: unknown iss")
        return message_page(
            "Launch not possible", "This EHR is not configured for CareCoord.", status=400
        )
    return await _start(request, connection, "ehr", launch)


@router.get("/login")
async def standalone_login(request: Request, ehr: str = "") -> Response:
    """Standalone launch against the configured EHR called ``ehr``."""
    runtime = _runtime(request)
    try:
        connection = runtime.connections.get(ehr)
    except UnknownConnection:
        return message_page(
            "Sign in",
            "Choose a configured EHR to sign in with.",
            status=400,
            connections=_connection_names(runtime),
        )
    return await _start(request, connection, "standalone", None)


@router.get(CALLBACK_PATH)
async def callback(request: Request) -> Response:
    """The authorization server's redirect back: state, code exchange, id_token, session."""
    runtime = _runtime(request)
    try:
        raw_id, _ = await complete_launch(
            runtime,
            params=dict(request.query_params),
            browser=request.cookies.get(LAUNCH_COOKIE),
        )
    except LaunchError as exc:
        return _fail("Launch failed", f"{exc}. Please launch CareCoord again.", 400, exc)
    except TokenRejected as exc:
        return _fail(
            "Launch failed",
            f"The EHR refused to issue a token ({exc.error}). Please launch CareCoord again.",
            400,
            exc,
        )
    except (TokenEndpointUnavailable, DiscoveryError) as exc:
        return _fail("EHR not reachable", "The EHR did not answer; try again shortly.", 502, exc)
    except (KeyStoreError, ConfigError) as exc:
        return _fail("Launch failed", "CareCoord is not fully configured for this EHR.", 500, exc)
    response = RedirectResponse(PATIENT_PATH, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        raw_id,
        max_age=runtime.settings.session_ttl_seconds,
        path="/",
        secure=_secure(request, runtime.settings),
        httponly=True,
        samesite="lax",
    )
    return response


async def launch_patient(request: Request) -> dict[str, Any] | Response:
    """The launch patient read from the EHR with the session's token (refreshed when needed),
    or the page to answer instead (not signed in, no patient, session ended, EHR down)."""
    runtime = _runtime(request)
    session = await current_session(request)
    if session is None:
        return message_page(
            "Not signed in",
            "Open CareCoord from your EHR, or sign in through your EHR below.",
            status=401,
            connections=_connection_names(runtime),
        )
    if not session.patient:
        return message_page(
            "No patient", "This session has no patient in context; launch from a chart.", status=409
        )
    try:
        resource: dict[str, Any] = await fhir_read(runtime, session, "Patient", session.patient)
    except ReauthorizationRequired as exc:
        await run_in_threadpool(SessionStore(runtime).delete, session.id)
        response = _fail("Session ended", "Your EHR session has ended; launch again.", 401, exc)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    except (SmartError, ConfigError) as exc:
        return _fail("EHR not reachable", "The EHR did not return the patient.", 502, exc)
    return resource


@router.get(PATIENT_PATH)
async def patient(request: Request) -> Response:
    """The launch patient's name, birth date and id, read from the EHR with the session's token."""
    found = await launch_patient(request)
    if isinstance(found, Response):
        return found
    session = await current_session(request)
    return patient_page(found, banner=bool(session and session.need_patient_banner))


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session: the row is deleted and the cookie cleared."""
    raw_id = request.cookies.get(SESSION_COOKIE)
    if raw_id:
        await run_in_threadpool(SessionStore(_runtime(request)).delete, hash_secret(raw_id))
    response = message_page("Signed out", "You are signed out of CareCoord.", status=200)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> Response:
    """Our public signing keys (active ones and those retired within their grace period)."""
    try:
        body = _runtime(request).keys.jwks()
    except KeyStoreError as exc:
        log.error("JWKS unavailable: %s", exc)
        body = {"keys": []}
    return JSONResponse(
        body, headers={"Cache-Control": "public, max-age=3600"}, media_type="application/json"
    )
