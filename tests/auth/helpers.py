"""Registered API clients and their tokens, for tests."""

from __future__ import annotations

import time
import uuid
from functools import cache
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine

from carecoord.auth.clients import add_client
from carecoord.auth.server import ASSERTION_TYPE, TokenService
from carecoord.crypto import load_secret_key
from carecoord.settings import Settings

TOKEN_URL = "http://testserver/auth/token"


@cache
def client_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "test-key"})


def public_jwks(key: ECKey | None = None) -> dict[str, Any]:
    key = key or client_key()
    return {"keys": [key.as_dict(private=False)]}


def assertion(
    client_id: str,
    *,
    token_url: str = TOKEN_URL,
    key: ECKey | None = None,
    lifetime: int = 240,
    jti: str | None = None,
    alg: str = "ES384",
    **claims: Any,
) -> str:
    key = key or client_key()
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + lifetime,
        "jti": jti or uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, algorithms=[alg])


def token_form(client_id: str, scope: str, **kw: Any) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(client_id, **kw),
    }


def issue_token(
    engine: Engine,
    settings: Settings,
    scope: str = "system/*.cruds",
    *,
    client_id: str | None = None,
    tenant: str | None = None,
) -> str:
    """Register a client with ``scope`` and return an access token from the real token service."""
    client_id = client_id or f"client-{uuid.uuid4().hex[:8]}"
    add_client(
        engine, client_id=client_id, name=client_id, scope=scope, jwks=public_jwks(), tenant=tenant
    )
    service = TokenService(engine, load_secret_key(settings))
    answer = service.token_request(
        token_form(client_id, scope), token_url=TOKEN_URL, issuer="http://testserver"
    )
    return str(answer["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
