"""Decide a request's access policy once: a bearer token of this service, or a launch session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from carecoord.auth.server import TokenService
from carecoord.fhir.access import AccessPolicy, Agent, relative_reference
from carecoord.fhir.errors import FhirError, Unauthorized

__all__ = ["SessionLike", "SessionSource", "base_of", "request_policy"]


class SessionLike(Protocol):
    """What the access policy needs from a SMART launch session."""

    @property
    def connection(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def patient(self) -> str | None: ...
    @property
    def fhir_user(self) -> str | None: ...


SessionSource = Callable[[Request], Awaitable[Any]]


def base_of(request: Request, public_url: str | None) -> str:
    """The service's external base URL (no trailing slash)."""
    if public_url:
        return public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="carecoord"'
    if error:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}


def _pulled(state: Any, connection: str, res_type: str, source_id: str) -> str | None:
    """Our id of the EHR's ``res_type/source_id`` when it was pulled from ``connection`` (the
    sync identity map: derived from the source id, or the local resource it adopted)."""
    cache: dict[tuple[str, str, str], str] = state.__dict__.setdefault("_pulled_ids", {})
    key = (connection, res_type, source_id)
    if key in cache:
        return cache[key]
    from carecoord.sync.identity import lookup  # the sync package imports this module

    store = getattr(state, "store", None)
    if store is None:
        return None
    with store.engine.connect() as conn:
        found = lookup(conn, connection, [(res_type, source_id)]).get((res_type, source_id))
    if found is None or not found.pulled:
        return None
    try:
        store.read(res_type, found.local_id)
    except FhirError:
        return None
    cache[key] = found.local_id  # a pulled resource keeps its local id: safe to remember
    return found.local_id


def _local_ids(
    state: Any, connection: str, patient: str | None, fhir_user: str | None
) -> tuple[str | None, str | None]:
    """The launch's patient and user as CareCoord knows them: the EHR sends its own ids, and
    resources pulled from that EHR live here under ids derived from them (ADR 0011)."""
    if patient:
        patient = _pulled(state, connection, "Patient", patient) or patient
    user = relative_reference(fhir_user) if fhir_user else None
    if user is not None:
        res_type, _, res_id = user.partition("/")
        if res_type in ("Practitioner", "PractitionerRole", "Patient"):
            found = _pulled(state, connection, res_type, res_id)
            fhir_user = f"{res_type}/{found or res_id}"
    return patient, fhir_user


_TOKEN_POLICIES = 1024


def _token_policy(state: Any, scope: str, client_id: str, tenant: str | None) -> AccessPolicy:
    """The policy of a bearer token's grant: immutable, so one per scope, client and tenant is
    kept per application (with the access rules it has built) instead of one per request."""
    policies: dict[tuple[str, str, str | None], AccessPolicy] | None = getattr(
        state, "token_policies", None
    )
    if policies is None:
        policies = state.token_policies = {}
    key = (scope, client_id, tenant)
    policy = policies.get(key)
    if policy is None:
        if len(policies) >= _TOKEN_POLICIES:
            policies.clear()
        policy = policies[key] = AccessPolicy.from_scope_string(
            scope, Agent("client", client_id), tenant=tenant
        )
    return policy


async def request_policy(request: Request) -> AccessPolicy | None:
    """The caller's policy; None when authentication is switched off. 401 when unauthenticated."""
    state = request.app.state
    cached = request.scope.get("state", {}).get("access_policy")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    settings = state.settings
    tokens: TokenService | None = getattr(state, "tokens", None)
    header = request.headers.get("authorization")
    policy: AccessPolicy | None = None
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or tokens is None:
            raise Unauthorized(
                "The Authorization header must be a Bearer token",
                headers=_challenge("invalid_request"),
            )
        grant = tokens.verify(token.strip())
        if grant is None:
            raise Unauthorized(
                "The access token is invalid or expired",
                headers=_challenge("invalid_token", "The access token is invalid or expired"),
            )
        policy = _token_policy(state, grant.scope, grant.client_id, grant.tenant)
    else:
        source: SessionSource | None = getattr(state, "session_source", None)
        session = await source(request) if source is not None else None
        if session is not None:
            patient, user = await run_in_threadpool(
                _local_ids, state, session.connection, session.patient, session.fhir_user
            )
            policy = AccessPolicy.from_scope_string(
                session.scope,
                Agent("user", user or "unknown", connection=session.connection),
                patient=patient,
            )
        elif settings.auth_required:
            raise Unauthorized(
                "Authentication required: a Bearer token or a session from a SMART launch",
                headers=_challenge(),
            )
    request.scope.setdefault("state", {})["access_policy"] = policy
    return policy
