"""SMART Backend Services: ``client_credentials`` with a ``private_key_jwt`` assertion, as an
``httpx.Auth`` that works with both ``httpx.Client`` and ``httpx.AsyncClient``.

The token request is yielded from the auth flow, so it goes through the same client (and the same
mocks in tests). Tokens are kept in memory until shortly before they expire; a 401 from the EHR
fetches one new token and retries once, and a second 401 raises :class:`EhrAccessError`.
Responses are read in full (the flow needs the token answer's body), so do not stream with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import httpx

from carecoord.smart.client_auth import client_credentials
from carecoord.smart.connections import EhrConnection
from carecoord.smart.discovery import Discovery, SmartConfiguration
from carecoord.smart.errors import EhrAccessError
from carecoord.smart.keys import KeyStore
from carecoord.smart.tokens import parse_token_response, token_request
from carecoord.smart.vendors import profile_for

__all__ = ["BackendAuth", "BackendServices", "TokenCache", "expiry_margin"]

#: Lifetime assumed when the token answer has no ``expires_in``.
DEFAULT_EXPIRES_IN = 300


def expiry_margin(expires_in: float) -> float:
    """How long before expiry a token is replaced: 60 s, or a quarter of a short life."""
    return min(60.0, expires_in / 4)


@dataclass
class TokenCache:
    """One access token in memory with its replacement time."""

    token: str | None = None
    renew_at: float = 0.0

    def valid(self, now: float) -> str | None:
        return self.token if self.token is not None and now < self.renew_at else None

    def put(self, token: str, expires_in: int | None, now: float) -> None:
        life = float(DEFAULT_EXPIRES_IN if expires_in is None else expires_in)
        self.token, self.renew_at = token, now + life - expiry_margin(life)

    def clear(self) -> None:
        self.token, self.renew_at = None, 0.0

    def __repr__(self) -> str:
        return f"TokenCache(token={'***' if self.token else None}, renew_at={self.renew_at})"


class BackendAuth(httpx.Auth):
    """Bearer auth for one connection's backend-services client (sync and async)."""

    requires_request_body = True
    requires_response_body = True

    def __init__(
        self,
        connection: EhrConnection,
        configuration: SmartConfiguration,
        keys: KeyStore,
        *,
        clock: Callable[[], float] = time.time,
        cache: TokenCache | None = None,
    ) -> None:
        profile = profile_for(connection.vendor)
        self.connection = connection
        self.token_url = profile.backend_token_url(connection, configuration)
        self._params = profile.backend_token_params(connection, configuration)
        self._alg = profile.signing_alg(connection, configuration)
        self._keys = keys
        self._clock = clock
        self.cache = cache or TokenCache()

    def token_request(self) -> httpx.Request:
        """A client_credentials request with a fresh client assertion."""
        credentials = client_credentials(
            self.connection,
            token_url=self.token_url,
            keys=self._keys,
            alg=self._alg,
            now=self._clock(),
            method="private_key_jwt",
            client_id=self.connection.backend_id,
        )
        form = {"grant_type": "client_credentials", **self._params}
        return token_request(self.token_url, form, credentials)

    def _new_token(self) -> Generator[httpx.Request, httpx.Response, str]:
        response = yield self.token_request()
        token = parse_token_response(response)
        value = token.access_token.get_secret_value()
        self.cache.put(value, token.expires_in, self._clock())
        return value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.cache.valid(self._clock())
        if token is None:
            token = yield from self._new_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        self.cache.clear()
        token = yield from self._new_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.cache.clear()
            raise EhrAccessError(
                f"EHR '{self.connection.name}' answered 401 to a new backend-services token; "
                "check the app registration (client id, public key, scopes)"
            )


class BackendServices:
    """One :class:`BackendAuth` per connection, built from discovery (tokens shared per process)."""

    def __init__(
        self, discovery: Discovery, keys: KeyStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._discovery = discovery
        self._keys = keys
        self._clock = clock
        self._caches: dict[str, TokenCache] = {}

    async def auth(self, connection: EhrConnection) -> BackendAuth:
        """An ``httpx.Auth`` for the connection's backend-services client."""
        configuration = await self._discovery.get(connection)
        cache = self._caches.setdefault(connection.name, TokenCache())
        return BackendAuth(connection, configuration, self._keys, clock=self._clock, cache=cache)
