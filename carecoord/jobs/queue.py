"""Enqueue jobs inside the caller's transaction (the outbox), list them, revive dead ones.

``enqueue`` writes one row with the caller's connection, so the job commits or rolls back with
the resources that caused it. A ``key`` makes producers idempotent: a second job of the same kind
and key is not added while the first one's row exists, whatever its status (``purge_done``
ends that for finished jobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, Row, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from carecoord.db import read_connection, run_write
from carecoord.jobs.clock import Clock, from_micros, to_micros, utc_now
from carecoord.jobs.errors import InvalidJob
from carecoord.jobs.registry import is_valid_kind
from carecoord.jobs.tables import (
    CONNECTION_LENGTH,
    DEAD,
    KEY_LENGTH,
    OPEN_PREDICATE,
    OPEN_STATUSES,
    READY,
    RUNNING,
    STATUSES,
    jobs,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "JobInfo",
    "JobSpec",
    "enqueue",
    "enqueue_many",
    "get_job",
    "list_dead",
    "list_jobs",
    "purge_done",
    "retry_dead",
]

#: Attempts of a job unless ``enqueue`` says otherwise (with the default backoff, about 50 minutes).
DEFAULT_MAX_ATTEMPTS: Final = 12


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None and not 0 < len(value) <= limit:
        raise InvalidJob(f"{name} must be 1 to {limit} characters")


def enqueue(
    conn: Connection,
    *,
    kind: str,
    payload: Mapping[str, Any],
    key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    connection: str | None = None,
    clock: Clock = utc_now,
) -> int | None:
    """Add a job in the caller's open transaction; its id, or None when ``key`` already exists.

    ``payload`` must be JSON-serialisable; keep it to references (resource ids, connection
    names), never copies of patient data. ``run_at`` (aware) delays the job; ``connection`` names
    the EHR connection it talks to, for per-connection status.
    """
    values = _row(JobSpec(kind, payload, key, run_at, max_attempts, connection), to_micros(clock()))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(jobs)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[jobs.c.kind, jobs.c.dedup_key])
        .returning(jobs.c.id)
    )
    job_id = conn.execute(statement).scalar_one_or_none()
    return int(job_id) if job_id is not None else None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :func:`enqueue_many` (the arguments of :func:`enqueue`)."""

    kind: str
    payload: Mapping[str, Any]
    key: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    connection: str | None = None


def _row(spec: JobSpec, now: int) -> dict[str, Any]:
    """The checked ``jobs`` row of one job."""
    if not is_valid_kind(spec.kind):
        raise InvalidJob("kind must be 1 to 64 letters, digits or _ . : -")
    _check_text("key", spec.key, KEY_LENGTH)
    _check_text("connection", spec.connection, CONNECTION_LENGTH)
    attempts = DEFAULT_MAX_ATTEMPTS if spec.max_attempts is None else spec.max_attempts
    if attempts < 1:
        raise InvalidJob("max_attempts must be at least 1")
    if spec.run_at is not None and spec.run_at.tzinfo is None:
        raise InvalidJob("run_at must be timezone-aware")
    try:
        body = orjson.dumps(dict(spec.payload)).decode()
    except TypeError as exc:
        raise InvalidJob(f"payload is not JSON-serialisable: {type(exc).__name__}") from exc
    return {
        "kind": spec.kind,
        "payload": body,
        "dedup_key": spec.key,
        "connection": spec.connection,
        "status": READY,
        "attempts": 0,
        "max_attempts": attempts,
        "run_at": to_micros(spec.run_at) if spec.run_at is not None else now,
        "created_at": now,
    }


def enqueue_many(conn: Connection, specs: Sequence[JobSpec], *, clock: Clock = utc_now) -> None:
    """Add several jobs in one statement in the caller's transaction (keys already queued are
    skipped, as with :func:`enqueue`)."""
    if not specs:
        return
    now = to_micros(clock())
    rows = [_row(spec, now) for spec in specs]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(jobs)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[jobs.c.kind, jobs.c.dedup_key])
    )


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as the operator sees it (no payload: it stays in the database)."""

    id: int
    kind: str
    status: str
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    key: str | None
    connection: str | None
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    failed_at: datetime | None
    finished_at: datetime | None


def _optional_time(micros: int | None) -> datetime | None:
    return from_micros(micros) if micros is not None else None


def _info(row: Row[Any]) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        status=row.status,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_at=from_micros(row.run_at),
        created_at=from_micros(row.created_at),
        key=row.dedup_key,
        connection=row.connection,
        locked_by=row.locked_by,
        locked_until=_optional_time(row.locked_until),
        last_error=row.last_error,
        failed_at=_optional_time(row.failed_at),
        finished_at=_optional_time(row.finished_at),
    )


_INFO_COLUMNS = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.status,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.run_at,
    jobs.c.created_at,
    jobs.c.dedup_key,
    jobs.c.connection,
    jobs.c.locked_by,
    jobs.c.locked_until,
    jobs.c.last_error,
    jobs.c.failed_at,
    jobs.c.finished_at,
)


def list_jobs(
    engine: Engine,
    *,
    statuses: Iterable[str] = (READY, RUNNING, DEAD),
    kind: str | None = None,
    connection: str | None = None,
    limit: int = 100,
) -> list[JobInfo]:
    """Jobs in ``statuses`` (default: every unfinished and dead one), oldest first."""
    wanted = list(statuses)
    unknown = set(wanted) - set(STATUSES)
    if unknown:
        raise InvalidJob(f"unknown job status: {', '.join(sorted(unknown))}")
    query = select(*_INFO_COLUMNS).where(jobs.c.status.in_(wanted))
    if set(wanted) <= set(OPEN_STATUSES):
        query = query.where(text(OPEN_PREDICATE))  # lets SQLite use the partial index
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    if connection is not None:
        query = query.where(jobs.c.connection == connection)
    query = query.order_by(jobs.c.id).limit(limit)
    with read_connection(engine) as conn:
        return [_info(row) for row in conn.execute(query)]


def list_dead(
    engine: Engine, *, kind: str | None = None, connection: str | None = None, limit: int = 100
) -> list[JobInfo]:
    """Dead-lettered jobs, oldest first, with the reason in ``last_error``."""
    return list_jobs(engine, statuses=(DEAD,), kind=kind, connection=connection, limit=limit)


def get_job(engine: Engine, job_id: int) -> JobInfo | None:
    """One job by id, or None."""
    with read_connection(engine) as conn:
        row = conn.execute(select(*_INFO_COLUMNS).where(jobs.c.id == job_id)).one_or_none()
    return _info(row) if row is not None else None


def retry_dead(engine: Engine, job_id: int, *, clock: Clock = utc_now) -> bool:
    """Make a dead job ready now with a fresh set of attempts; False if it is not dead.

    ``last_error`` stays until the next failure, so the reason remains visible.
    """
    now = to_micros(clock())

    def work(conn: Connection) -> bool:
        result = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == DEAD)
            .values(status=READY, attempts=0, run_at=now, finished_at=None)
        )
        return result.rowcount == 1

    return run_write(engine, work)


def purge_done(engine: Engine, *, older_than: timedelta, clock: Clock = utc_now) -> int:
    """Delete done jobs that finished more than ``older_than`` ago; how many were deleted.

    Their keys become free again: a producer that enqueues the same key later adds a new job.
    """
    cutoff = to_micros(clock() - older_than)

    def work(conn: Connection) -> int:
        result = conn.execute(
            delete(jobs).where(text("status = 'done'"), jobs.c.finished_at < cutoff)
        )
        return int(result.rowcount)

    return run_write(engine, work)
