"""OpenID Connect ``id_token`` validation against the EHR's JWKS (cached, refetched on an
unknown ``kid``). Only asymmetric algorithms are accepted: ``alg: none`` and HS* (key confusion)
fail before any key is looked at, and symmetric keys in a JWKS are ignored.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from carecoord.smart.discovery import cache_seconds
from carecoord.smart.errors import IdTokenError

__all__ = ["ALLOWED_ALGORITHMS", "JwksCache", "validate_id_token"]

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
#: Clock skew tolerated on exp and iat.
LEEWAY_SECONDS = 60
#: A JWKS is fetched again for an unknown kid at most this often.
MIN_REFETCH_SECONDS = 30


@dataclass
class _Entry:
    keys: KeySet
    fetched_at: float
    expires_at: float


class JwksCache:
    """EHR key sets by URL; only URLs from discovered configurations are passed in."""

    def __init__(
        self,
        http: Callable[[], httpx.AsyncClient],
        *,
        clock: Callable[[], float] = time.time,
        default_ttl: int = 3600,
    ) -> None:
        self._http = http
        self._clock = clock
        self._default_ttl = default_ttl
        self._entries: dict[str, _Entry] = {}

    async def key_set(self, uri: str, *, refetch: bool = False) -> KeySet:
        """The key set at ``uri``: cached, or fetched (again, when ``refetch`` and not too soon)."""
        now = self._clock()
        entry = self._entries.get(uri)
        if entry is not None:
            fresh = entry.expires_at > now
            if fresh and not refetch:
                return entry.keys
            if refetch and now - entry.fetched_at < MIN_REFETCH_SECONDS:
                return entry.keys
        try:
            response = await self._http().get(uri, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise IdTokenError(f"the EHR's JWKS is unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise IdTokenError(f"the EHR's JWKS answered {response.status_code}")
        try:
            body = response.json()
            usable = [
                k for k in body["keys"] if isinstance(k, dict) and k.get("kty") in ("RSA", "EC")
            ]
            keys = KeySet.import_key_set({"keys": usable})
        except (ValueError, KeyError, TypeError, JoseError) as exc:
            raise IdTokenError("the EHR's JWKS is not a usable key set") from exc
        ttl = cache_seconds(response.headers, self._default_ttl)
        self._entries[uri] = _Entry(keys, now, now + ttl)
        return keys


def _header(raw: str) -> dict[str, Any]:
    try:
        segment = raw.split(".")[0]
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(decoded)
    except (ValueError, IndexError) as exc:
        raise IdTokenError("the id_token is not a JWT") from exc
    if not isinstance(header, dict):
        raise IdTokenError("the id_token is not a JWT")
    return header


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenError(f"the id_token has no numeric '{name}'")
    return float(value)


async def validate_id_token(
    raw: str,
    *,
    jwks: JwksCache,
    jwks_uri: str | None,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: int = LEEWAY_SECONDS,
) -> dict[str, Any]:
    """The id_token's claims after checking signature, iss, aud (and azp), exp, iat and nonce."""
    alg = _header(raw).get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise IdTokenError(f"id_token algorithm {str(alg)[:16]!r} is not allowed")
    if not jwks_uri:
        raise IdTokenError("the EHR publishes no jwks_uri to check the id_token with")
    keys = await jwks.key_set(jwks_uri)
    try:
        try:
            token = jwt.decode(raw, keys, algorithms=[alg])
        except InvalidKeyIdError:
            keys = await jwks.key_set(jwks_uri, refetch=True)
            token = jwt.decode(raw, keys, algorithms=[alg])
    except InvalidKeyIdError as exc:
        raise IdTokenError("the id_token is signed with a key the EHR does not publish") from exc
    except (JoseError, ValueError) as exc:
        raise IdTokenError(f"the id_token signature is invalid ({type(exc).__name__})") from exc
    claims = dict(token.claims)
    if claims.get("iss") != issuer:
        raise IdTokenError("the id_token's iss is not the EHR's issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise IdTokenError("the id_token's aud is not our client id")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenError("the id_token has several audiences and azp is not our client id")
    if _number(claims, "exp") <= now - leeway:
        raise IdTokenError("the id_token has expired")
    if _number(claims, "iat") > now + leeway:
        raise IdTokenError("the id_token is issued in the future")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
            raise IdTokenError("the id_token's nonce does not match this launch")
    return claims
