"""What the SMART routes share, kept on ``app.state.smart``: connections, HTTP client, caches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine

from carecoord import __version__
from carecoord.crypto import Encryptor, load_secret_key
from carecoord.settings import Settings
from carecoord.smart.backend import BackendServices
from carecoord.smart.connections import ConnectionRegistry, load_connections
from carecoord.smart.discovery import Discovery
from carecoord.smart.idtoken import JwksCache
from carecoord.smart.keys import KeyStore

__all__ = ["HTTP_TIMEOUT", "SmartRuntime", "new_http_client"]

#: Timeouts of every call to an EHR (discovery, JWKS, token endpoint, FHIR API).
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def new_http_client() -> httpx.AsyncClient:
    """The client for EHR calls: no redirects followed (no fetches to hosts nobody configured)."""
    return httpx.AsyncClient(
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
        headers={"User-Agent": f"CareCoord/{__version__}"},
    )


@dataclass
class SmartRuntime:
    """Connections, keys, caches and the HTTP client of the SMART client, per application."""

    settings: Settings
    engine: Engine
    connections: ConnectionRegistry
    keys: KeyStore
    clock: Callable[[], float] = time.time
    discovery: Discovery = field(init=False)
    jwks: JwksCache = field(init=False)
    backend: BackendServices = field(init=False)
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _encryptors: dict[str, Encryptor] = field(default_factory=dict, init=False, repr=False)
    _refresh_locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.discovery = Discovery(self.connections, self.http, clock=self.clock)
        self.jwks = JwksCache(self.http, clock=self.clock)
        self.backend = BackendServices(self.discovery, self.keys, clock=self.clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engine: Engine,
        *,
        connections: ConnectionRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> SmartRuntime:
        """Load connections from ``settings.config_dir`` (ConfigError names file and field)."""
        registry = connections if connections is not None else load_connections(settings.config_dir)
        return cls(
            settings=settings,
            engine=engine,
            connections=registry,
            keys=KeyStore(settings.effective_keys_dir, clock=clock),
            clock=clock,
        )

    def http(self) -> httpx.AsyncClient:
        """The shared client for EHR calls (created on first use)."""
        if self._client is None or self._client.is_closed:
            self._client = new_http_client()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (application shutdown)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _encryptor(self, purpose: str) -> Encryptor:
        # The secret is read on first use only: installing the routes touches no key file.
        if purpose not in self._encryptors:
            self._encryptors[purpose] = Encryptor(load_secret_key(self.settings), purpose)
        return self._encryptors[purpose]

    @property
    def token_encryptor(self) -> Encryptor:
        """Encrypts access and refresh tokens at rest."""
        return self._encryptor("smart-token-encryption")

    @property
    def launch_encryptor(self) -> Encryptor:
        """Encrypts PKCE verifiers of pending launches."""
        return self._encryptor("smart-launch-verifier")

    def refresh_lock(self, key: str) -> asyncio.Lock:
        """One lock per session, so one process refreshes a session's token once at a time."""
        if len(self._refresh_locks) > 10_000:
            self._refresh_locks = {k: v for k, v in self._refresh_locks.items() if v.locked()}
        return self._refresh_locks.setdefault(key, asyncio.Lock())
