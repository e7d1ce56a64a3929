"""The API's authorization server: SMART backend services (``client_credentials`` with a
``private_key_jwt`` assertion), and verification of the access tokens it issues.

Access tokens are JWTs signed with HS256 under a key derived from the service's secret: only this
service issues and checks them, and checking one costs microseconds and no database query.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from carecoord.auth import InvalidClient, InvalidRequestError, InvalidScope, UnsupportedGrantType
from carecoord.auth.clients import ApiClient, get_client
from carecoord.auth.tables import api_used_jtis
from carecoord.crypto import derive_key
from carecoord.smart.scopes import ClinicalScope, parse_scopes
from carecoord.smart.scopes import InvalidScope as MalformedScope

__all__ = ["ASSERTION_TYPE", "ApiToken", "TokenService"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # seconds: SMART backend services, exp at most 5 minutes ahead
_LEEWAY = 30
_JWKS_TTL = 300.0
_VERIFIED_MAX = 10_000  # remembered tokens; the memo starts afresh past this


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A verified access token of this service."""

    client_id: str
    scope: str
    tenant: str | None
    expires_at: int


def _within(requested: ClinicalScope, registered: ClinicalScope) -> bool:
    return (
        requested.context == registered.context
        and registered.res_type in ("*", requested.res_type)
        and requested.permissions <= registered.permissions
        and set(registered.params) <= set(requested.params)
    )


class TokenService:
    """Issues access tokens to registered clients and verifies them on every request."""

    def __init__(
        self,
        engine: Engine,
        secret: bytes,
        *,
        ttl: int = 300,
        http: httpx.Client | None = None,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self._key = OctKey.import_key(derive_key(secret, "api-access-token"))
        self._http = http or httpx.Client(timeout=5.0, follow_redirects=False)
        self._jwks: dict[str, tuple[float, KeySet]] = {}
        self._lock = threading.Lock()
        #: Tokens whose signature was checked already; a hit still checks the expiry.
        self._verified: dict[str, ApiToken] = {}

    # -- issuing -----------------------------------------------------------------------------

    def token_request(self, form: dict[str, str], *, token_url: str, issuer: str) -> dict[str, Any]:
        """Answer a token request (form fields) or raise an AuthError."""
        grant = form.get("grant_type")
        if grant != "client_credentials":
            raise UnsupportedGrantType(f"grant_type must be client_credentials, not {grant!r}")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise InvalidClient("client_assertion is missing")
        client = self.authenticate(assertion, token_url=token_url)
        scope = self._grant(client, form.get("scope", ""))
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": client.client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
        }
        if client.tenant:
            claims["tenant"] = client.tenant
        token = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.ttl,
            "scope": scope,
        }

    def _grant(self, client: ApiClient, requested: str) -> str:
        try:
            wanted = parse_scopes(requested)
        except MalformedScope as exc:
            raise InvalidScope(str(exc)) from exc
        registered = parse_scopes(client.scope)
        if not wanted:
            raise InvalidScope("request at least one system/ scope, e.g. system/Patient.rs")
        granted = [w for w in wanted if any(_within(w, r) for r in registered)]
        if not granted:
            raise InvalidScope("none of the requested scopes is granted to this client")
        return " ".join(str(g) for g in granted)

    def authenticate(self, assertion: str, *, token_url: str) -> ApiClient:
        """Verify a client's JWT assertion (RFC 7523 + SMART backend services)."""
        header, claims = _peek(assertion)  # unverified: only to find the client and its keys
        if header.get("alg") not in ASSERTION_ALGS:
            raise InvalidClient(f"assertion alg must be one of {', '.join(ASSERTION_ALGS)}")
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise InvalidClient("assertion has no iss")
        client = get_client(self.engine, client_id)
        if client is None or client.disabled:
            raise InvalidClient("unknown or disabled client")
        keys = self._client_keys(client, header.get("kid"))
        try:
            verified = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGS)
        except JoseError as exc:
            raise InvalidClient("assertion signature does not verify") from exc
        c = verified.claims
        now = int(time.time())
        if c.get("sub") != client_id:
            raise InvalidClient("assertion sub must equal iss (the client id)")
        aud = c.get("aud")
        if not (aud == token_url or (isinstance(aud, list) and token_url in aud)):
            raise InvalidClient("assertion aud must be this token endpoint")
        exp = c.get("exp")
        if not isinstance(exp, int):
            raise InvalidClient("assertion has no exp")
        if exp < now - _LEEWAY:
            raise InvalidClient("assertion has expired")
        if exp > now + MAX_ASSERTION_LIFETIME + _LEEWAY:
            raise InvalidClient("assertion exp is more than 5 minutes ahead")
        jti = c.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidClient("assertion has no jti")
        self._use_jti(client_id, jti, exp, now)
        return client

    def _use_jti(self, client_id: str, jti: str, exp: int, now: int) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(api_used_jtis).where(api_used_jtis.c.expires_at < now - _LEEWAY)
                )
                conn.execute(
                    insert(api_used_jtis).values(
                        client_id=client_id, jti=jti[:255], expires_at=exp + _LEEWAY
                    )
                )
        except IntegrityError as exc:
            raise InvalidClient("assertion jti was already used") from exc

    def _client_keys(self, client: ApiClient, kid: object) -> KeySet:
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        assert client.jwks_url is not None
        with self._lock:
            cached = self._jwks.get(client.client_id)
        if cached is not None and cached[0] > time.monotonic():
            keys = cached[1]
            if kid is None or any(k.kid == kid for k in keys.keys):
                return keys
        keys = self._fetch_jwks(client.jwks_url)
        with self._lock:
            self._jwks[client.client_id] = (time.monotonic() + _JWKS_TTL, keys)
        return keys

    def _fetch_jwks(self, url: str) -> KeySet:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise InvalidClient("the client's JWKS could not be fetched") from exc

    # -- verifying ---------------------------------------------------------------------------

    def verify(self, token: str) -> ApiToken | None:
        """The token's grant, or None if it is not a valid, current token of this service.

        A token checked once is remembered (signature checks are the costly part); verification
        needs no database, so the remembered answer is the one a new check would give until the
        token expires.
        """
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at > time.time():
                return known
            self._verified.pop(token, None)
            return None
        grant = self._verify(token)
        if grant is not None:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[token] = grant
        return grant

    def _verify(self, token: str) -> ApiToken | None:
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
        except (JoseError, ValueError):
            return None
        c = decoded.claims
        exp = c.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            return None
        sub, scope = c.get("sub"), c.get("scope")
        if not isinstance(sub, str) or not isinstance(scope, str):
            return None
        tenant = c.get("tenant")
        return ApiToken(sub, scope, tenant if isinstance(tenant, str) else None, exp)


def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWS before its signature is checked (to find the client)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise InvalidRequestError("client_assertion is not a compact JWS")
    try:
        header = orjson.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidClient("client_assertion cannot be decoded") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidClient("client_assertion cannot be decoded")
    return header, claims
