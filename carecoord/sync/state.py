"""Runs and checkpoints of pulls: rows written inside the page transactions of a pull.

A run fixes its population's members when it starts (``members``; ``new_members`` are those
the last completed run did not have, so they are fetched whole) and is resumed, members and all,
by the next pull until it completes. A checkpoint per (connection, population, type) holds the
completed point (``since``, an EHR instant) and, during a run, the progress within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from carecoord.sync.tables import ERROR_LENGTH, sync_checkpoints, sync_runs

__all__ = [
    "FAILED",
    "OK",
    "RUNNING",
    "Checkpoint",
    "Counts",
    "Run",
    "add_counts",
    "create_run",
    "finish_run",
    "last_members",
    "load_checkpoint",
    "mark_running",
    "run_counts",
    "save_checkpoint",
    "unfinished_run",
]

RUNNING: Final = "running"
OK: Final = "ok"
FAILED: Final = "failed"
#: Runs kept per (connection, population); older ones are deleted when a run finishes.
KEEP_RUNS: Final = 20


@dataclass(frozen=True, slots=True)
class Counts:
    """Resources fetched, written (created or changed), skipped (same source version or
    unchanged) and rejected (invalid FHIR)."""

    fetched: int = 0
    written: int = 0
    skipped: int = 0
    rejected: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.fetched + other.fetched,
            self.written + other.written,
            self.skipped + other.skipped,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    connection: str
    population: str
    members: tuple[str, ...]
    new_members: frozenset[str]
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Progress of one (connection, population, type)."""

    connection: str
    population: str
    res_type: str
    since: str | None = None
    pending_since: str | None = None
    run_id: int | None = None
    done_run: int | None = None
    last_chunk: str | None = None
    cursor_chunk: str | None = None
    cursor_url: str | None = None

    def started(self, run_id: int, pending_since: str | None) -> Checkpoint:
        """The checkpoint as a new run of this type begins (progress reset)."""
        return replace(
            self,
            run_id=run_id,
            pending_since=pending_since,
            last_chunk=None,
            cursor_chunk=None,
            cursor_url=None,
        )


def _members(text: str) -> tuple[str, ...]:
    value = orjson.loads(text)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def unfinished_run(conn: Connection, connection: str, population: str) -> Run | None:
    """The latest run of the population if it did not complete (it is resumed)."""
    r = sync_runs
    row = conn.execute(
        select(r.c.id, r.c.status, r.c.members, r.c.new_members)
        .where(r.c.connection == connection, r.c.population == population)
        .order_by(r.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row.status == OK:
        return None
    return Run(
        id=int(row.id),
        connection=connection,
        population=population,
        members=_members(row.members),
        new_members=frozenset(_members(row.new_members)),
        resumed=True,
    )


def last_members(conn: Connection, connection: str, population: str) -> frozenset[str]:
    """Members of the population's last completed run (empty before the first one)."""
    r = sync_runs
    row = conn.execute(
        select(r.c.members)
        .where(r.c.connection == connection, r.c.population == population, r.c.status == OK)
        .order_by(r.c.id.desc())
        .limit(1)
    ).first()
    return frozenset(_members(row.members)) if row is not None else frozenset()


def create_run(
    conn: Connection,
    connection: str,
    population: str,
    members: Sequence[str],
    new_members: Sequence[str],
    *,
    now: int,
) -> Run:
    """Start a run with the population's members fixed for its whole life."""
    ordered = sorted(set(members))
    fresh = sorted(set(new_members))
    run_id: int = conn.execute(
        sync_runs.insert()
        .values(
            connection=connection,
            population=population,
            status=RUNNING,
            started_at=now,
            members=orjson.dumps(ordered).decode(),
            new_members=orjson.dumps(fresh).decode(),
            fetched=0,
            written=0,
            skipped=0,
            rejected=0,
        )
        .returning(sync_runs.c.id)
    ).scalar_one()
    return Run(int(run_id), connection, population, tuple(ordered), frozenset(fresh))


def mark_running(conn: Connection, run_id: int) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(status=RUNNING))


def add_counts(conn: Connection, run_id: int, counts: Counts) -> None:
    """Add a page's counts to its run (in the page's transaction)."""
    r = sync_runs
    conn.execute(
        update(r)
        .where(r.c.id == run_id)
        .values(
            fetched=r.c.fetched + counts.fetched,
            written=r.c.written + counts.written,
            skipped=r.c.skipped + counts.skipped,
            rejected=r.c.rejected + counts.rejected,
        )
    )


def run_counts(conn: Connection, run_id: int) -> Counts:
    r = sync_runs
    row = conn.execute(
        select(r.c.fetched, r.c.written, r.c.skipped, r.c.rejected).where(r.c.id == run_id)
    ).first()
    if row is None:
        return Counts()
    return Counts(row.fetched, row.written, row.skipped, row.rejected)


def finish_run(conn: Connection, run: Run, *, status: str, error: str | None, now: int) -> None:
    """Mark the run ``ok`` or ``failed`` (with a short error) and drop old runs."""
    r = sync_runs
    conn.execute(
        update(r)
        .where(r.c.id == run.id)
        .values(status=status, finished_at=now, error=error[:ERROR_LENGTH] if error else None)
    )
    if status == OK:
        old = [
            row[0]
            for row in conn.execute(
                select(r.c.id)
                .where(r.c.connection == run.connection, r.c.population == run.population)
                .order_by(r.c.id.desc())
                .offset(KEEP_RUNS)
            )
        ]
        if old:
            conn.execute(delete(r).where(r.c.id.in_(old)))


def load_checkpoint(
    conn: Connection, connection: str, population: str, res_type: str
) -> Checkpoint:
    """The stored checkpoint, or an empty one."""
    c = sync_checkpoints
    row = conn.execute(
        select(c).where(
            c.c.connection == connection, c.c.population == population, c.c.res_type == res_type
        )
    ).first()
    if row is None:
        return Checkpoint(connection, population, res_type)
    return Checkpoint(
        connection=connection,
        population=population,
        res_type=res_type,
        since=row.since,
        pending_since=row.pending_since,
        run_id=row.run_id,
        done_run=row.done_run,
        last_chunk=row.last_chunk,
        cursor_chunk=row.cursor_chunk,
        cursor_url=row.cursor_url,
    )


def save_checkpoint(conn: Connection, checkpoint: Checkpoint, *, now: int) -> None:
    """Create or replace the checkpoint row (in the caller's transaction)."""
    c = sync_checkpoints
    values: dict[str, Any] = {
        "connection": checkpoint.connection,
        "population": checkpoint.population,
        "res_type": checkpoint.res_type,
        "since": checkpoint.since,
        "pending_since": checkpoint.pending_since,
        "run_id": checkpoint.run_id,
        "done_run": checkpoint.done_run,
        "last_chunk": checkpoint.last_chunk,
        "cursor_chunk": checkpoint.cursor_chunk,
        "cursor_url": checkpoint.cursor_url,
        "updated_at": now,
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(c).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.c.connection, c.c.population, c.c.res_type],
        set_={k: v for k, v in values.items() if k not in ("connection", "population", "res_type")},
    )
    conn.execute(stmt)
