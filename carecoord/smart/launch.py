"""EHR launch and standalone launch: the authorize redirect (state, PKCE S256, nonce) and the
callback (single-use state bound to the browser, code exchange, id_token, session).

A pending launch lives in the database (state hashed, verifier encrypted), so any server process
can finish it. The state is consumed by a DELETE before anything else is looked at: a second use,
an expired launch or another browser's state is refused and creates nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, insert, select
from starlette.concurrency import run_in_threadpool

from carecoord.smart.client_auth import client_credentials
from carecoord.smart.connections import EhrConnection
from carecoord.smart.errors import (
    AuthorizationDenied,
    DiscoveryError,
    IdTokenError,
    LaunchError,
    StateError,
    UnknownConnection,
)
from carecoord.smart.idtoken import validate_id_token
from carecoord.smart.runtime import SmartRuntime
from carecoord.smart.sessions import SessionStore, UserSession, hash_secret
from carecoord.smart.tables import smart_launches
from carecoord.smart.tokens import request_token
from carecoord.smart.vendors import profile_for

__all__ = [
    "LAUNCH_COOKIE",
    "LAUNCH_TTL_SECONDS",
    "LaunchKind",
    "PendingLaunch",
    "begin_launch",
    "complete_launch",
    "s256",
]

LAUNCH_COOKIE = "carecoord_launch"
#: How long a started launch may take to come back to the callback.
LAUNCH_TTL_SECONDS = 600
LaunchKind = Literal["ehr", "standalone"]
_ERROR_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_")


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier`` (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_params(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


@dataclass(frozen=True)
class PendingLaunch:
    """A launch row taken out of the database by its callback."""

    connection: str
    kind: LaunchKind
    browser_hash: str
    verifier: str
    nonce: str | None
    redirect_uri: str
    scope: str
    expires_at: int

    def __repr__(self) -> str:
        return f"PendingLaunch(connection={self.connection!r}, kind={self.kind!r})"


async def begin_launch(
    runtime: SmartRuntime,
    *,
    connection: EhrConnection,
    kind: LaunchKind,
    launch: str | None,
    redirect_uri: str,
    browser: str,
) -> str:
    """Record a pending launch and return the EHR's authorize URL to redirect to."""
    configuration = await runtime.discovery.get(connection)
    if not configuration.authorization_endpoint:
        raise DiscoveryError(f"EHR '{connection.name}' publishes no authorization endpoint")
    methods = configuration.code_challenge_methods_supported
    if methods and "S256" not in methods:
        raise DiscoveryError(f"EHR '{connection.name}' does not support PKCE S256")
    profile = profile_for(connection.vendor)
    wanted = connection.launch_scope if kind == "ehr" else connection.standalone_scope
    scope = profile.scope(connection, wanted, configuration)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    nonce = secrets.token_urlsafe(32) if "openid" in scope.split() else None
    now = int(runtime.clock())
    row = {
        "state_hash": hash_secret(state),
        "connection": connection.name,
        "kind": kind,
        "browser_hash": hash_secret(browser),
        "verifier_enc": runtime.launch_encryptor.encrypt(verifier),
        "nonce": nonce,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "created_at": now,
        "expires_at": now + LAUNCH_TTL_SECONDS,
    }

    def store() -> None:
        with runtime.engine.begin() as conn:
            conn.execute(delete(smart_launches).where(smart_launches.c.expires_at <= now))
            conn.execute(insert(smart_launches).values(**row))

    await run_in_threadpool(store)
    params = [
        ("response_type", "code"),
        ("client_id", connection.client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", state),
        ("aud", connection.iss),
        ("code_challenge", s256(verifier)),
        ("code_challenge_method", "S256"),
    ]
    if launch is not None:
        params.append(("launch", launch))
    if nonce is not None:
        params.append(("nonce", nonce))
    return _with_params(configuration.authorization_endpoint, params)


def _take_launch(runtime: SmartRuntime, state: str) -> PendingLaunch | None:
    """Remove the launch of ``state``; None when unknown or already taken by someone else."""
    key = hash_secret(state)
    with runtime.engine.begin() as conn:
        row = conn.execute(
            select(smart_launches).where(smart_launches.c.state_hash == key)
        ).one_or_none()
        if row is None:
            return None
        taken = conn.execute(delete(smart_launches).where(smart_launches.c.state_hash == key))
        if taken.rowcount != 1:
            return None
    return PendingLaunch(
        connection=row.connection,
        kind=row.kind,
        browser_hash=row.browser_hash,
        verifier=runtime.launch_encryptor.decrypt(row.verifier_enc),
        nonce=row.nonce,
        redirect_uri=row.redirect_uri,
        scope=row.scope,
        expires_at=row.expires_at,
    )


def _error_code(value: str) -> str:
    code = value[:64]
    return code if code and set(code) <= _ERROR_CODE_CHARS else "invalid_response"


async def complete_launch(
    runtime: SmartRuntime, *, params: Mapping[str, str], browser: str | None
) -> tuple[str, UserSession]:
    """Finish a launch from the callback's query; returns the new session's cookie value."""
    state = params.get("state", "")
    if not state or len(state) > 256:
        raise StateError("the callback carries no state")
    pending = await run_in_threadpool(_take_launch, runtime, state)
    if pending is None:
        raise StateError("the state is unknown or was used before")
    if browser is None or not hmac.compare_digest(hash_secret(browser), pending.browser_hash):
        raise StateError("the launch was started in another browser")
    if pending.expires_at <= runtime.clock():
        raise StateError("the launch expired; start it again")
    if "error" in params:
        code = _error_code(params["error"])
        raise AuthorizationDenied(f"the EHR did not authorize the launch ({code})", error=code)
    code = params.get("code", "")
    if not code:
        raise LaunchError("the callback carries no authorization code")
    try:
        connection = runtime.connections.get(pending.connection)
    except UnknownConnection as exc:
        raise LaunchError("the EHR connection of this launch is no longer configured") from exc
    configuration = await runtime.discovery.get(connection)
    profile = profile_for(connection.vendor)
    credentials = client_credentials(
        connection,
        token_url=configuration.token_endpoint,
        keys=runtime.keys,
        alg=profile.signing_alg(connection, configuration),
        now=runtime.clock(),
    )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "code_verifier": pending.verifier,
    }
    token = await request_token(runtime.http(), configuration.token_endpoint, form, credentials)
    claims: dict[str, Any] = {}
    if pending.nonce is not None:
        if token.id_token is None:
            raise IdTokenError("openid was requested but the EHR sent no id_token")
        claims = await validate_id_token(
            token.id_token.get_secret_value(),
            jwks=runtime.jwks,
            jwks_uri=configuration.jwks_uri,
            issuer=connection.id_token_issuer or configuration.issuer or connection.iss,
            client_id=connection.client_id,
            nonce=pending.nonce,
            now=runtime.clock(),
        )
    fhir_user = claims.get("fhirUser") or claims.get("profile")
    store = SessionStore(runtime)
    return await run_in_threadpool(
        lambda: store.create(
            connection=connection.name,
            token=token,
            scope=token.scope or pending.scope,
            fhir_user=fhir_user if isinstance(fhir_user, str) else None,
        )
    )
