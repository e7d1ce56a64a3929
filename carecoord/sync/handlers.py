"""The ``sync.pull`` job: pull a population of a connection from the queue (and, registered
with it, ``sync.fetch``: :mod:`carecoord.sync.fetch`).

Payload ``{"connection": NAME, "population": SPEC}`` (SPEC as for ``sync run --population``; no
population: the connection's configured ones). Temporary EHR failures become
:class:`~carecoord.jobs.RetryLater` (with the server's or the circuit's wait), fatal ones
:class:`~carecoord.jobs.Fatal`; progress is checkpointed per page, so a retry resumes. The lease
is extended after every page; when the worker stops, the job ends early and runs again later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection

from carecoord.jobs import Fatal, JobContext, Registry, RetryLater, enqueue
from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.sync.config import parse_population
from carecoord.sync.errors import FatalError, PullStopped, SyncError, TemporaryError
from carecoord.sync.pull import PageReport
from carecoord.sync.runtime import SyncRuntime

__all__ = ["PULL_KIND", "PullHandler", "enqueue_pull", "register_handlers"]

PULL_KIND: Final = "sync.pull"


class PullHandler:
    """The ``sync.pull`` handler; ``settings`` None: read them (environment) at the first job."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def _settings(self) -> Settings:
        if self.settings is None:
            try:
                self.settings = load_settings()
            except ConfigError as exc:
                raise Fatal(f"settings: {exc}") from None
        return self.settings

    async def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        name = payload.get("connection")
        if not isinstance(name, str) or not name:
            raise Fatal("the payload names no connection")
        spec = payload.get("population")
        if spec is not None and not isinstance(spec, str):
            raise Fatal("the payload's population is not a string")

        def progress(_: PageReport) -> None:
            if ctx.stopping or not ctx.extend_lease():
                raise PullStopped("the worker is stopping; the pull resumes from its checkpoint")

        runtime = SyncRuntime(self._settings(), ctx.engine, clock=ctx.clock)
        try:
            population = None
            if spec is not None:
                population = parse_population(spec, runtime.settings_for(name).named_populations())
            await runtime.pull(name, population, progress=progress)
        except PullStopped as exc:
            raise RetryLater(0.0, str(exc)) from None
        except TemporaryError as exc:
            raise RetryLater(exc.retry_after, str(exc)) from None
        except (FatalError, SyncError, ConfigError) as exc:
            raise Fatal(str(exc)) from None
        finally:
            await runtime.aclose()


def register_handlers(registry: Registry, *, settings: Settings | None = None) -> None:
    """Register ``sync.pull`` and ``sync.fetch`` on ``registry`` (again: only the settings are
    updated)."""
    from carecoord.sync.fetch import register_fetch_handlers

    register_fetch_handlers(registry, settings=settings)
    existing = registry.get(PULL_KIND)
    if isinstance(existing, PullHandler):
        if settings is not None:
            existing.settings = settings
        return
    registry.register(PULL_KIND, PullHandler(settings))


def enqueue_pull(
    conn: Connection,
    *,
    connection: str,
    population: str | None = None,
    slot: str | None = None,
    run_at: datetime | None = None,
) -> int | None:
    """Queue a pull in the caller's transaction. ``slot`` (e.g. ``2030-01-01T12:05``) makes it
    once per slot: a scheduler that enqueues every few minutes never doubles a pull."""
    key = f"{connection}|{population or '*'}|{slot}" if slot else None
    return enqueue(
        conn,
        kind=PULL_KIND,
        payload={"connection": connection, "population": population},
        key=key,
        connection=connection,
        run_at=run_at,
    )
