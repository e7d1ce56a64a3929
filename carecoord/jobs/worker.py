"""The worker: claims due jobs under a lease, runs their handlers, records the outcome.

Each claim and each outcome is one short write transaction (:mod:`carecoord.jobs.claim` has the
SQL); the handler runs outside any transaction. At-least-once: a worker that dies leaves its job
``running`` until the lease expires; a later claim takes it again (and dead-letters it if that was
its last attempt).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Awaitable
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine

from carecoord.db import read_connection, run_write
from carecoord.jobs.claim import ClaimedJob, anything_due, claim_job, extend_lease, finish
from carecoord.jobs.clock import Clock, from_micros, to_micros, utc_now
from carecoord.jobs.errors import Fatal, RetryLater
from carecoord.jobs.registry import JobContext, Registry
from carecoord.jobs.tables import DEAD, DONE, ERROR_LENGTH, READY

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_POLL_INTERVAL",
    "Outcome",
    "Worker",
    "backoff_delay",
    "error_text",
    "run_workers",
]

log = logging.getLogger("carecoord.jobs")

DEFAULT_LEASE_SECONDS: Final = 300.0
DEFAULT_POLL_INTERVAL: Final = 1.0
DEFAULT_BACKOFF_BASE: Final = 5.0
DEFAULT_BACKOFF_CAP: Final = 1800.0
#: The shortest retry delay: a retried job is never due again within the same ``run_once``.
MIN_RETRY_DELAY: Final = 0.001
_ERROR_TEXT: Final = 300


class Outcome(StrEnum):
    """What became of one attempt."""

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    LOST = "lost"  # the lease was lost before the outcome could be written


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next try after failed ``attempt`` (1-based): exponential, full jitter.

    Uniform in ``[0, min(cap, base * 2 ** (attempt - 1))]``.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))
    return rng.uniform(0.0, ceiling)


def error_text(exc: BaseException) -> str:
    """Exception type and message on one line, trimmed: what ``last_error`` keeps."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    limit = min(_ERROR_TEXT, ERROR_LENGTH)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _default_worker_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


class Worker:
    """Claims and runs jobs of the kinds in ``registry``; one job at a time, one thread each."""

    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        *,
        worker_id: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        retries: int = 8,
    ) -> None:
        if lease_seconds <= 0 or poll_interval <= 0 or backoff_base < 0 or backoff_cap < 0:
            raise ValueError("lease, poll interval and backoff must be positive")
        self.engine = engine
        self.registry = registry
        self.worker_id = (worker_id or _default_worker_id())[:128]
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.rng = rng or random.Random()
        self.retries = retries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: threading.Event | None = None
        self._busy = False  # the last claim found a job: skip the read-only probe
        self._leases_checked_at: int | None = None
        self._lease_check_interval = int(min(lease_seconds / 4, 15.0) * 1_000_000)

    # -- claiming --------------------------------------------------------------------------------

    def _now(self) -> int:
        return to_micros(self.clock())

    def _lease_end(self, now: int, seconds: float | None = None) -> int:
        return now + int((seconds if seconds is not None else self.lease_seconds) * 1_000_000)

    def claim(self) -> ClaimedJob | None:
        """Take one due job (or one whose lease expired) under a new lease; None if none."""
        return self._claim(self._now())

    def _claim(self, due_by: int, *, check_leases: bool = False) -> ClaimedJob | None:
        kinds = self.registry.kinds
        if not kinds:
            return None
        now = self._now()
        # Expired leases are rare (a worker died): look for them now and then, not every claim.
        check_leases = (
            check_leases
            or self._leases_checked_at is None
            or now - self._leases_checked_at >= self._lease_check_interval
        )
        if not self._busy and not self._anything_due(due_by, kinds, check_leases):
            if check_leases:
                self._leases_checked_at = now
            return None

        def work(conn: Connection) -> ClaimedJob | None:
            at = self._now()
            return claim_job(
                conn,
                worker_id=self.worker_id,
                kinds=kinds,
                due_by=due_by,
                now=at,
                lease_until=self._lease_end(at),
                check_leases=check_leases,
            )

        job = run_write(self.engine, work, retries=self.retries)
        if check_leases:
            self._leases_checked_at = now
        self._busy = job is not None
        return job

    def _anything_due(self, due_by: int, kinds: tuple[str, ...], check_leases: bool) -> bool:
        """A cheap read first, so that an idle worker never takes the write lock."""
        with read_connection(self.engine) as conn:
            return anything_due(conn, due_by=due_by, kinds=kinds, check_leases=check_leases)

    # -- running ---------------------------------------------------------------------------------

    def process(self, job: ClaimedJob) -> Outcome:
        """Run the job's handler and record the outcome (done, retry later, or dead)."""
        fn = self.registry.get(job.kind)
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            key=job.key,
            connection=job.connection,
            created_at=from_micros(job.created_at),
            worker_id=self.worker_id,
            engine=self.engine,
            clock=self.clock,
            _extend=lambda seconds: self._extend(job, seconds),
            _stopping=self._stop_requested,
        )
        started = time.perf_counter()
        try:
            if fn is None:
                raise Fatal(f"no handler for job kind {job.kind}")
            try:
                payload = orjson.loads(job.payload)
            except orjson.JSONDecodeError as exc:
                raise Fatal("the payload is not valid JSON") from exc
            if not isinstance(payload, dict):
                raise Fatal("the payload is not a JSON object")
            result = fn(payload, ctx)
            if inspect.isawaitable(result):
                self._run_async(result)
        except Fatal as exc:
            return self._fail(job, exc, final=True)
        except RetryLater as exc:
            return self._fail(job, exc, delay=exc.delay)
        except Exception as exc:
            return self._fail(job, exc)
        outcome = self._record(job, {"status": DONE, "finished_at": self._now()})
        if outcome is Outcome.DONE:
            log.debug(
                "job %d kind=%s done in %.1f ms",
                job.id,
                job.kind,
                (time.perf_counter() - started) * 1000,
            )
        return outcome

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _run_async(self, awaitable: Awaitable[None]) -> None:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(awaitable)

    def _record(self, job: ClaimedJob, values: dict[str, Any]) -> Outcome:
        """Write the outcome if this worker still holds the job's lease."""
        held = run_write(self.engine, lambda conn: finish(conn, job, values), retries=self.retries)
        if not held:
            log.warning(
                "job %d kind=%s: lease lost before the outcome was written; the newer attempt "
                "decides",
                job.id,
                job.kind,
            )
            return Outcome.LOST
        status = values["status"]
        return Outcome.DONE if status == DONE else Outcome.DEAD if status == DEAD else Outcome.RETRY

    def _fail(
        self, job: ClaimedJob, exc: Exception, *, final: bool = False, delay: float | None = None
    ) -> Outcome:
        now = self._now()
        error = {"last_error": error_text(exc), "failed_at": now}
        if final or job.attempt >= job.max_attempts:
            log.error(
                "job %d kind=%s attempt %d/%d failed with %s; dead",
                job.id,
                job.kind,
                job.attempt,
                job.max_attempts,
                type(exc).__name__,
            )
            return self._record(job, {"status": DEAD, "finished_at": now, **error})
        if delay is None:
            delay = backoff_delay(
                job.attempt, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng
            )
        delay = max(delay, MIN_RETRY_DELAY)
        log.warning(
            "job %d kind=%s attempt %d/%d failed with %s; retry in %.1f s",
            job.id,
            job.kind,
            job.attempt,
            job.max_attempts,
            type(exc).__name__,
            delay,
        )
        run_at = now + int(timedelta(seconds=delay) / timedelta(microseconds=1))
        return self._record(job, {"status": READY, "run_at": run_at, **error})

    def _extend(self, job: ClaimedJob, seconds: float | None) -> bool:
        until = self._lease_end(self._now(), seconds)
        return run_write(
            self.engine, lambda conn: extend_lease(conn, job, until=until), retries=self.retries
        )

    # -- loops -----------------------------------------------------------------------------------

    def run_once(self, *, limit: int | None = None) -> int:
        """Run every job due now (each at most once), then return how many ran."""
        horizon = self._now()
        count = 0
        while limit is None or count < limit:
            job = self._claim(horizon, check_leases=count == 0)
            if job is None:
                break
            self.process(job)
            count += 1
        return count

    def run_forever(self, stop_event: threading.Event) -> None:
        """Claim and run jobs until ``stop_event`` is set; the job in hand is finished first."""
        log.info("worker %s started for %d job kinds", self.worker_id, len(self.registry))
        self._stop = stop_event
        failures = 0
        try:
            while not stop_event.is_set():
                try:
                    job = self.claim()
                    if job is not None:
                        self.process(job)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    log.warning(
                        "worker %s: database error %s; jobs in hand run again after their lease",
                        self.worker_id,
                        type(exc).__name__,
                    )
                    stop_event.wait(min(self.poll_interval * 2**failures, 30.0))
                    continue
                if job is None:
                    stop_event.wait(self.poll_interval)
        finally:
            self.close()
            log.info("worker %s stopped", self.worker_id)

    def close(self) -> None:
        """Close the event loop of async handlers, if one was made."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
        self._loop = None


def run_workers(
    engine: Engine,
    registry: Registry,
    stop_event: threading.Event,
    *,
    concurrency: int = 1,
    **options: Any,
) -> list[threading.Thread]:
    """Start ``concurrency`` workers, each in its own thread, until ``stop_event`` is set.

    Returns the started (daemon) threads; set the event and join them for a graceful stop.
    """
    base_id = options.pop("worker_id", None) or _default_worker_id()
    threads = []
    for number in range(concurrency):
        worker = Worker(engine, registry, worker_id=f"{base_id}/{number}", **options)
        thread = threading.Thread(
            target=worker.run_forever,
            args=(stop_event,),
            name=f"carecoord-worker-{number}",
            daemon=True,  # a hard stop must not wait for handlers: their leases expire
        )
        thread.start()
        threads.append(thread)
    return threads
