"""The ``sync.fetch`` job: fetch one resource an event only referenced from its EHR connection.

Subscription notifications (``id-only`` entries, event focus and context) and intake of a
configured connection's resources enqueue ``{"connection", "reference"}``. The handler reads
``{iss}/{Type}/{id}`` through the connection's resilient :class:`EhrClient` and stores the answer
through the identity map (:func:`~carecoord.sync.upsert.upsert_from_source`): the same local
resource a pull makes, skipped when that source version (or a later one) is stored already, an
Encounter's new version noting its automation event (source ``sync:<connection>``). Pull
checkpoints are not touched. A resource the EHR no longer has (404, 410) ends the job quietly;
temporary failures retry with the server's wait, fatal ones dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Engine

from carecoord.events.encounters import encounter_hook
from carecoord.events.intake import SYNC_FETCH
from carecoord.fhir.errors import FhirError
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.validation import validate_resource
from carecoord.jobs import Fatal, JobContext, Registry, RetryLater
from carecoord.jobs.clock import Clock, to_micros
from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.sync.client import EhrClient
from carecoord.sync.errors import (
    FatalError,
    InvalidResponse,
    RequestRejected,
    SyncError,
    TemporaryError,
)
from carecoord.sync.identity import ReferenceMapper
from carecoord.sync.runtime import SyncRuntime
from carecoord.sync.upsert import UpsertResult, from_source, upsert_from_source

__all__ = [
    "FETCH_KIND",
    "FetchHandler",
    "Fetcher",
    "NotAtEhr",
    "register_fetch_handlers",
]

log = logging.getLogger("carecoord.sync.fetch")

FETCH_KIND: Final = SYNC_FETCH
RuntimeFactory = Callable[[Settings, Engine, Clock], SyncRuntime]


class NotAtEhr(FatalError):
    """The reference does not name a resource of the connection (another server, ``urn:``...)."""


class Fetcher:
    """Fetches single resources from one connection into the store."""

    def __init__(self, *, store: FhirStore, client: EhrClient, clock: Clock) -> None:
        self.store = store
        self.client = client
        self.connection = client.name
        self.clock = clock
        self.mapper = ReferenceMapper(client.name, client.base)

    async def fetch(self, reference: str) -> str:
        """Fetch and store ``reference``; ``written``, ``unchanged`` (that source version or a
        later one is stored) or ``gone`` (the EHR has no such resource)."""
        target = self.mapper.parse(reference)
        if target is None:
            raise NotAtEhr(f"the reference is not to a resource of EHR '{self.connection}'")
        res_type, source_id = target
        what = f"GET {res_type} read"
        response = await self.client.send("GET", self.client.url(res_type, source_id), what=what)
        if response.status in (404, 410):
            log.info("fetch from EHR %s: the %s is gone (%d)", self.connection, res_type,
                     response.status)  # fmt: skip
            return "gone"
        if response.status != 200:
            raise RequestRejected(
                f"EHR '{self.connection}' answered {response.status} to {what}",
                status=response.status,
            )
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != res_type:
            raise InvalidResponse(
                f"EHR '{self.connection}' did not answer {what} with a {res_type}"
            )
        if body.get("id") != source_id:
            raise InvalidResponse(f"EHR '{self.connection}' answered {what} with another id")
        try:
            validate_resource(body)
        except FhirError:
            raise InvalidResponse(
                f"EHR '{self.connection}' answered {what} with an invalid {res_type}"
            ) from None
        item = from_source(self.mapper, body)
        now = to_micros(self.clock())

        def work(w: Writer) -> UpsertResult:
            w.on_written = encounter_hook(source=f"sync:{self.connection}")
            return upsert_from_source(w, self.connection, [item], now=now)

        result = await asyncio.to_thread(self.store.write, work)
        return "written" if result.written else "unchanged"


def _default_runtime(settings: Settings, engine: Engine, clock: Clock) -> SyncRuntime:
    return SyncRuntime(settings, engine, clock=clock)


class FetchHandler:
    """The ``sync.fetch`` handler; ``settings`` None: read them (environment) at the first job."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        runtime_factory: RuntimeFactory = _default_runtime,
    ) -> None:
        self.settings = settings
        self.runtime_factory = runtime_factory

    def _settings(self) -> Settings:
        if self.settings is None:
            try:
                self.settings = load_settings()
            except ConfigError as exc:
                raise Fatal(f"settings: {exc}") from None
        return self.settings

    async def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        name, reference = payload.get("connection"), payload.get("reference")
        if not isinstance(name, str) or not name:
            raise Fatal("the payload names no connection")
        if not isinstance(reference, str) or not reference:
            raise Fatal("the payload names no reference")
        runtime = self.runtime_factory(self._settings(), ctx.engine, ctx.clock)
        try:
            client = await runtime.client(name)
            fetcher = Fetcher(store=runtime.store, client=client, clock=ctx.clock)
            outcome = await fetcher.fetch(reference)
            log.debug("fetch from EHR %s: %s", name, outcome)
        except TemporaryError as exc:
            raise RetryLater(exc.retry_after, str(exc)) from None
        except (FatalError, SyncError, ConfigError) as exc:
            raise Fatal(str(exc)) from None
        finally:
            await runtime.aclose()


def register_fetch_handlers(
    registry: Registry,
    *,
    settings: Settings | None = None,
    runtime_factory: RuntimeFactory | None = None,
) -> None:
    """Register ``sync.fetch`` on ``registry`` (again: only settings and factory are updated)."""
    existing = registry.get(FETCH_KIND)
    if isinstance(existing, FetchHandler):
        if settings is not None:
            existing.settings = settings
        if runtime_factory is not None:
            existing.runtime_factory = runtime_factory
        return
    registry.register(
        FETCH_KIND, FetchHandler(settings, runtime_factory=runtime_factory or _default_runtime)
    )
