"""Calls to an EHR's FHIR API for a user session: the session's bearer token, refreshed shortly
before it expires or once after a 401; a second 401 means the user must launch again."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from starlette.concurrency import run_in_threadpool

from carecoord.smart.backend import expiry_margin
from carecoord.smart.client_auth import client_credentials
from carecoord.smart.connections import EhrConnection
from carecoord.smart.errors import (
    EhrUnavailable,
    ReauthorizationRequired,
    TokenRejected,
)
from carecoord.smart.runtime import SmartRuntime
from carecoord.smart.sessions import SessionStore, StoredTokens, UserSession
from carecoord.smart.tokens import request_token
from carecoord.smart.vendors import profile_for

__all__ = ["access_token", "fhir_read", "refresh_session"]

log = logging.getLogger("carecoord.smart.ehrapi")

FHIR_JSON = "application/fhir+json"


async def _stored(store: SessionStore, session: UserSession) -> StoredTokens:
    tokens = await run_in_threadpool(store.tokens, session.id)
    if tokens is None:
        raise ReauthorizationRequired("the session has ended; launch again")
    return tokens


async def refresh_session(
    runtime: SmartRuntime, session: UserSession, seen: StoredTokens
) -> StoredTokens:
    """New tokens for the session, unless someone refreshed since ``seen``; the refresh token
    replaces the old one when the EHR rotates it."""
    store = SessionStore(runtime)
    async with runtime.refresh_lock(session.id):
        current = await _stored(store, session)
        if current.version != seen.version:
            return current  # refreshed meanwhile by another request
        if current.refresh_token is None:
            raise ReauthorizationRequired("the EHR gave no refresh token; launch again")
        connection = runtime.connections.get(session.connection)
        configuration = await runtime.discovery.get(connection)
        profile = profile_for(connection.vendor)
        credentials = client_credentials(
            connection,
            token_url=configuration.token_endpoint,
            keys=runtime.keys,
            alg=profile.signing_alg(connection, configuration),
            now=runtime.clock(),
        )
        form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
        try:
            token = await request_token(
                runtime.http(), configuration.token_endpoint, form, credentials
            )
        except TokenRejected as exc:
            latest = await _stored(store, session)
            if latest.version != current.version:
                return latest  # another process rotated the refresh token first
            log.info("EHR '%s' refused a refresh (%s)", connection.name, exc.error)
            raise ReauthorizationRequired("the EHR refused to refresh; launch again") from exc
        await run_in_threadpool(store.replace_tokens, session.id, current.version, token)
        return await _stored(store, session)


async def access_token(runtime: SmartRuntime, session: UserSession) -> StoredTokens:
    """The session's tokens, refreshed first if the access token is about to expire."""
    tokens = await _stored(SessionStore(runtime), session)
    if tokens.expires_at is not None and tokens.refresh_token is not None:
        left = tokens.expires_at - runtime.clock()
        if left <= expiry_margin(300):
            tokens = await refresh_session(runtime, session, tokens)
    return tokens


async def _get(
    runtime: SmartRuntime, connection: EhrConnection, url: str, token: str
) -> httpx.Response:
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    try:
        return await runtime.http().get(url, headers=headers)
    except httpx.TimeoutException as exc:
        raise EhrUnavailable(f"EHR '{connection.name}' timed out") from exc
    except httpx.HTTPError as exc:
        raise EhrUnavailable(
            f"EHR '{connection.name}' is unreachable ({type(exc).__name__})"
        ) from exc


async def fhir_read(
    runtime: SmartRuntime, session: UserSession, res_type: str, res_id: str
) -> dict[str, Any]:
    """``GET {iss}/{type}/{id}`` with the session's token (one refresh and retry on a 401)."""
    connection = runtime.connections.get(session.connection)
    url = f"{connection.iss}/{quote(res_type, safe='')}/{quote(res_id, safe='')}"
    tokens = await access_token(runtime, session)
    response = await _get(runtime, connection, url, tokens.access_token)
    if response.status_code == 401:
        tokens = await refresh_session(runtime, session, tokens)
        response = await _get(runtime, connection, url, tokens.access_token)
        if response.status_code == 401:
            raise ReauthorizationRequired(
                f"EHR '{connection.name}' refused the refreshed token; launch again"
            )
    if response.status_code != 200:
        raise EhrUnavailable(f"EHR '{connection.name}' answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("resourceType") != res_type:
        raise EhrUnavailable(f"EHR '{connection.name}' did not answer with a {res_type}")
    return body
