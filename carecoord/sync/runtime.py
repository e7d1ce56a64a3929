"""What sync needs at run time: connections, sync settings, one :class:`EhrClient` per
connection (backend-services auth, limits, the circuit restored from the database) and the store.

Use one runtime per event loop (the CLI and each job make their own) and close it after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine

from carecoord.db import run_write
from carecoord.fhir.store import FhirStore
from carecoord.jobs.clock import Clock, to_micros, utc_now
from carecoord.settings import Settings
from carecoord.smart.connections import ConnectionRegistry, EhrConnection
from carecoord.smart.errors import DiscoveryError, SmartError, UnknownConnection
from carecoord.smart.runtime import SmartRuntime
from carecoord.sync.breaker import CircuitBreaker
from carecoord.sync.client import EhrClient, Sleep, new_http_client
from carecoord.sync.config import ConnectionSync, Population, SyncConfig, load_sync_config
from carecoord.sync.errors import (
    AuthorizationFailed,
    EhrUnreachable,
    SyncConfigError,
)
from carecoord.sync.health import load_circuit, record_outcome
from carecoord.sync.pull import Progress, Puller, PullReport, error_text
from carecoord.sync.quirks import quirks_for

__all__ = ["SyncRuntime"]

log = logging.getLogger("carecoord.sync")

HttpFactory = Callable[[ConnectionSync], httpx.AsyncClient]


class SyncRuntime:
    """Clients and settings for pulls (and, later, pushes) within one event loop."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        smart: SmartRuntime | None = None,
        config: SyncConfig | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        http_factory: HttpFactory = new_http_client,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.smart = smart or SmartRuntime.from_settings(
            settings, engine, clock=lambda: clock().timestamp()
        )
        self.config = config if config is not None else load_sync_config(settings.config_dir)
        self.store = FhirStore(
            engine, retries=settings.write_retries, group_commit=settings.group_commit
        )
        self._sleep = sleep
        self._http_factory = http_factory
        self._clients: dict[str, EhrClient] = {}
        self._lock = asyncio.Lock()

    @property
    def connections(self) -> ConnectionRegistry:
        return self.smart.connections

    def connection(self, name: str) -> EhrConnection:
        """The configured connection; :class:`SyncConfigError` when there is none."""
        try:
            return self.connections.get(name)
        except UnknownConnection:
            raise SyncConfigError(f"no EHR connection named {name!r} is configured") from None

    def settings_for(self, name: str) -> ConnectionSync:
        return self.config.for_connection(name)

    def populations(self, name: str) -> list[Population]:
        """The connection's configured populations (else open cases)."""
        return self.settings_for(name).default_populations()

    async def client(self, name: str) -> EhrClient:
        """The connection's client, made on first use (SMART discovery happens then)."""
        async with self._lock:
            found = self._clients.get(name)
            if found is not None:
                return found
            connection = self.connection(name)
            limits = self.settings_for(name)
            try:
                auth: Any = await self.smart.backend.auth(connection)
            except DiscoveryError as exc:
                raise EhrUnreachable(
                    f"EHR '{name}': SMART discovery failed ({type(exc).__name__})"
                ) from None
            except SmartError as exc:
                raise AuthorizationFailed(
                    f"EHR '{name}': backend services unavailable ({type(exc).__name__})"
                ) from None
            breaker = CircuitBreaker(
                name,
                failures=limits.circuit_failures,
                cooldown=limits.circuit_cooldown_seconds,
                clock=self._wall,
            )
            saved = await asyncio.to_thread(load_circuit, self.engine, name)
            if saved is not None:
                breaker.restore(saved)
            client = EhrClient(
                connection,
                http=self._http_factory(limits),
                auth=auth,
                limits=limits,
                breaker=breaker,
                quirks=quirks_for(connection),
                sleep=self._sleep,
                clock=self._wall,
            )
            self._clients[name] = client
            return client

    def _wall(self) -> float:
        return self.clock().timestamp()

    async def pull(
        self,
        connection: str,
        population: Population | None = None,
        *,
        progress: Progress | None = None,
    ) -> list[PullReport]:
        """Pull one population, or each of the connection's configured ones, now."""
        populations = [population] if population is not None else self.populations(connection)
        try:
            client = await self.client(connection)
        except Exception as exc:
            if connection in self.connections:
                await asyncio.to_thread(self._record_failure, connection, exc)
            raise
        puller = Puller(
            store=self.store,
            client=client,
            settings=self.settings_for(connection),
            clock=self.clock,
            progress=progress,
        )
        return [await puller.run(p) for p in populations]

    def _record_failure(self, connection: str, exc: Exception) -> None:
        now = to_micros(self.clock())
        run_write(
            self.engine,
            lambda conn: record_outcome(conn, connection, ok=False, now=now, error=error_text(exc)),
        )

    async def aclose(self) -> None:
        """Close every client and the SMART runtime's HTTP client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await self.smart.aclose()
