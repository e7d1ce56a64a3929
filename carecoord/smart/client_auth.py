"""How CareCoord authenticates to an EHR's token endpoint: PKCE-only public client, client
secret (HTTP Basic), or a ``private_key_jwt`` assertion signed with our keys (RFC 7523)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

from joserfc import jwt

from carecoord.smart.connections import ClientAuthMethod, EhrConnection, SigningAlg
from carecoord.smart.keys import KeyStore, SigningKey

__all__ = [
    "ASSERTION_LIFETIME_SECONDS",
    "ASSERTION_TYPE",
    "ClientCredentials",
    "client_assertion",
    "client_credentials",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART: the assertion's ``exp`` is no more than five minutes in the future.
ASSERTION_LIFETIME_SECONDS = 300


def client_assertion(
    key: SigningKey,
    *,
    client_id: str,
    audience: str,
    now: float,
    lifetime: int = ASSERTION_LIFETIME_SECONDS,
) -> str:
    """A signed client assertion: iss = sub = client id, aud = token URL, unique jti, kid."""
    issued = int(now)
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + min(lifetime, ASSERTION_LIFETIME_SECONDS),
        "jti": secrets.token_urlsafe(32),
    }
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


@dataclass(frozen=True)
class ClientCredentials:
    """Form fields and headers that authenticate one token request (never log them)."""

    form: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ClientCredentials(form={sorted(self.form)}, headers={sorted(self.headers)})"


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 2.3.1: both parts are form-urlencoded before the Basic encoding.
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def client_credentials(
    connection: EhrConnection,
    *,
    token_url: str,
    keys: KeyStore,
    alg: SigningAlg,
    now: float,
    method: ClientAuthMethod | None = None,
    client_id: str | None = None,
) -> ClientCredentials:
    """The client authentication for a token request to ``token_url``."""
    method = method or connection.client_auth
    client_id = client_id or connection.client_id
    if method == "public":
        return ClientCredentials(form={"client_id": client_id})
    if method == "confidential":
        secret = connection.client_secret().get_secret_value()
        return ClientCredentials(headers={"Authorization": _basic(client_id, secret)})
    assertion = client_assertion(
        keys.signing_key(alg), client_id=client_id, audience=token_url, now=now
    )
    return ClientCredentials(
        form={"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    )
