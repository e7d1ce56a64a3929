"""The server's in-process worker: one thread started and stopped with the app's lifespan.

This is the mode for SQLite (one writer anyway). On PostgreSQL the server may run it too, or leave
the queue to ``carecoord worker`` processes (any number, on any host): turn it off with the
setting ``run_worker_in_process = false``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine

from carecoord.jobs.clock import Clock, utc_now
from carecoord.jobs.registry import Registry
from carecoord.jobs.worker import DEFAULT_POLL_INTERVAL, Worker
from carecoord.settings import Settings

__all__ = ["RUN_WORKER_IN_PROCESS", "SHUTDOWN_TIMEOUT", "InProcessWorker", "install"]

log = logging.getLogger("carecoord.jobs")

#: Default of the ``run_worker_in_process`` setting while ``Settings`` does not have it.
RUN_WORKER_IN_PROCESS: Final = True
#: Seconds shutdown waits for the job in hand; an unfinished job runs again after its lease.
SHUTDOWN_TIMEOUT: Final = 30.0


@dataclass
class InProcessWorker:
    """One worker thread of the server, kept on ``app.state.jobs``."""

    worker: Worker
    enabled: bool = True
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.worker.run_forever,
            args=(self._stop,),
            name="carecoord-jobs",
            daemon=True,  # a stuck handler must not keep the process alive: its lease expires
        )
        self._thread.start()

    def stop(self) -> bool:
        """Ask the worker to stop and wait for the job in hand; False if it did not finish."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            log.warning(
                "worker %s still busy after %.0f s at shutdown; its job runs again after the lease",
                self.worker.worker_id,
                self.shutdown_timeout,
            )
            return False
        return True


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: InProcessWorker | None = getattr(app.state, "jobs", None)
    if runtime is not None and runtime.enabled:
        runtime.start()
    try:
        yield
    finally:
        if runtime is not None:
            await asyncio.to_thread(runtime.stop)


def install(
    app: FastAPI,
    settings: Settings,
    engine: Engine,
    registry: Registry,
    *,
    clock: Clock = utc_now,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    """Run one worker for ``registry`` in a thread while ``app`` runs (unless the setting
    ``run_worker_in_process`` is false). Idempotent: a second call does nothing."""
    if getattr(app.state, "jobs", None) is not None:
        return
    enabled = bool(getattr(settings, "run_worker_in_process", RUN_WORKER_IN_PROCESS))
    worker = Worker(engine, registry, clock=clock, poll_interval=poll_interval)
    app.state.jobs = InProcessWorker(worker, enabled=enabled, shutdown_timeout=shutdown_timeout)
    app.include_router(APIRouter(lifespan=_lifespan, include_in_schema=False))
