"""Registered system clients of the API (integration engines, PCP systems) and their keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carecoord.auth.tables import api_clients
from carecoord.smart.scopes import InvalidScope, parse_scopes

__all__ = ["ApiClient", "ClientExists", "add_client", "get_client", "list_clients", "remove_client"]


class ClientExists(ValueError):
    """A client with this id is already registered."""


@dataclass(frozen=True, slots=True)
class ApiClient:
    client_id: str
    name: str
    scope: str
    jwks_url: str | None
    jwks: dict[str, Any] | None
    tenant: str | None
    disabled: bool


def _row(row: Any) -> ApiClient:
    return ApiClient(
        client_id=row.client_id,
        name=row.name,
        scope=row.scope,
        jwks_url=row.jwks_url,
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        tenant=row.tenant,
        disabled=bool(row.disabled),
    )


def _check_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ValueError("jwks must be a JSON Web Key Set: an object with a non-empty 'keys' list")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise ValueError("every JWKS key must be an RSA or EC public key")
        if "d" in key:
            raise ValueError("the JWKS holds a private key; register the public keys only")


def add_client(
    engine: Engine,
    *,
    client_id: str,
    name: str,
    scope: str,
    jwks_url: str | None = None,
    jwks: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> ApiClient:
    """Register a client that authenticates with ``private_key_jwt`` (JWKS URL or inline JWKS)."""
    if (jwks_url is None) == (jwks is None):
        raise ValueError("give exactly one of a JWKS URL or an inline JWKS")
    if jwks_url is not None and not jwks_url.startswith(
        ("https://", "http://localhost", "http://127.")
    ):
        raise ValueError("the JWKS URL must use https (http only for localhost)")
    if jwks is not None:
        _check_jwks(jwks)
    try:
        scopes = parse_scopes(scope)
    except InvalidScope as exc:
        raise ValueError(str(exc)) from exc
    if not scopes or any(s.context != "system" for s in scopes):
        raise ValueError("a system client needs system/ scopes only, e.g. 'system/*.rs'")
    values = {
        "client_id": client_id,
        "name": name,
        "scope": " ".join(str(s) for s in scopes),
        "jwks_url": jwks_url,
        "jwks": orjson.dumps(jwks).decode() if jwks is not None else None,
        "tenant": tenant,
        "created_at": int(time.time()),
        "disabled": False,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(api_clients).values(**values))
    except IntegrityError as exc:
        raise ClientExists(f"client {client_id!r} is already registered") from exc
    client = get_client(engine, client_id)
    assert client is not None
    return client


def get_client(engine: Engine, client_id: str) -> ApiClient | None:
    with engine.connect() as conn:
        row = conn.execute(select(api_clients).where(api_clients.c.client_id == client_id)).first()
    return _row(row) if row is not None else None


def list_clients(engine: Engine) -> list[ApiClient]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_clients).order_by(api_clients.c.client_id)).all()
    return [_row(r) for r in rows]


def remove_client(engine: Engine, client_id: str) -> bool:
    with engine.begin() as conn:
        return (
            conn.execute(delete(api_clients).where(api_clients.c.client_id == client_id)).rowcount
            > 0
        )


def disable_client(engine: Engine, client_id: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(api_clients).where(api_clients.c.client_id == client_id).values(disabled=True)
        )
        return result.rowcount > 0
