"""Queue health per job kind and per EHR connection: depth, age, dead letters, last error."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Engine, case, func, select, text

from carecoord.db import read_connection
from carecoord.jobs.clock import Clock, from_micros, to_micros, utc_now
from carecoord.jobs.tables import DEAD, OPEN_PREDICATE, READY, RUNNING, jobs

__all__ = ["QueueCounts", "QueueStats", "stats"]


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Jobs of one kind, one connection, or all of them.

    ``due`` are ready jobs whose time has come; ``oldest_ready_age`` is the age in seconds (since
    enqueue) of the oldest ready job, None when nothing is ready. ``last_error`` is the most recent
    failure of any job in the group, even one that later succeeded (``last_error_at`` says when).
    """

    ready: int = 0
    due: int = 0
    running: int = 0
    dead: int = 0
    oldest_ready_age: float | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def __add__(self, other: QueueCounts) -> QueueCounts:
        ages = [a for a in (self.oldest_ready_age, other.oldest_ready_age) if a is not None]
        newest = self
        if other.last_error_at is not None and (
            self.last_error_at is None or other.last_error_at > self.last_error_at
        ):
            newest = other
        return QueueCounts(
            ready=self.ready + other.ready,
            due=self.due + other.due,
            running=self.running + other.running,
            dead=self.dead + other.dead,
            oldest_ready_age=max(ages) if ages else None,
            last_error=newest.last_error,
            last_error_at=newest.last_error_at,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts per job kind, per connection (jobs that name one) and in total."""

    by_kind: dict[str, QueueCounts]
    by_connection: dict[str, QueueCounts]
    total: QueueCounts


def _sum(groups: Iterable[QueueCounts]) -> QueueCounts:
    total = QueueCounts()
    for group in groups:
        total = total + group
    return total


def stats(engine: Engine, *, clock: Clock = utc_now) -> QueueStats:
    """Ready, due, running and dead jobs, oldest ready age and last error per kind/connection."""
    now = to_micros(clock())
    counts = (
        select(
            jobs.c.kind,
            jobs.c.connection,
            func.sum(case((jobs.c.status == READY, 1), else_=0)).label("ready"),
            func.sum(case(((jobs.c.status == READY) & (jobs.c.run_at <= now), 1), else_=0)).label(
                "due"
            ),
            func.sum(case((jobs.c.status == RUNNING, 1), else_=0)).label("running"),
            func.sum(case((jobs.c.status == DEAD, 1), else_=0)).label("dead"),
            func.min(case((jobs.c.status == READY, jobs.c.created_at), else_=None)).label("oldest"),
        )
        .where(text(OPEN_PREDICATE))
        .group_by(jobs.c.kind, jobs.c.connection)
    )
    ranked = (
        select(
            jobs.c.kind,
            jobs.c.connection,
            jobs.c.last_error,
            jobs.c.failed_at,
            func.row_number()
            .over(
                partition_by=(jobs.c.kind, jobs.c.connection),
                order_by=(jobs.c.failed_at.desc(), jobs.c.id.desc()),
            )
            .label("rank"),
        )
        .where(jobs.c.failed_at.is_not(None))
        .subquery()
    )
    errors = select(
        ranked.c.kind, ranked.c.connection, ranked.c.last_error, ranked.c.failed_at
    ).where(ranked.c.rank == 1)
    cells: dict[tuple[str, str | None], QueueCounts] = {}
    with read_connection(engine) as conn:
        for row in conn.execute(counts):
            cells[(row.kind, row.connection)] = QueueCounts(
                ready=int(row.ready or 0),
                due=int(row.due or 0),
                running=int(row.running or 0),
                dead=int(row.dead or 0),
                oldest_ready_age=(
                    max(0.0, (now - row.oldest) / 1_000_000) if row.oldest is not None else None
                ),
            )
        for row in conn.execute(errors):
            cell = cells.get((row.kind, row.connection), QueueCounts())
            cells[(row.kind, row.connection)] = replace(
                cell, last_error=row.last_error, last_error_at=from_micros(row.failed_at)
            )
    by_kind: dict[str, QueueCounts] = {}
    by_connection: dict[str, QueueCounts] = {}
    for (kind, connection), cell in cells.items():
        by_kind[kind] = by_kind.get(kind, QueueCounts()) + cell
        if connection is not None:
            by_connection[connection] = by_connection.get(connection, QueueCounts()) + cell
    return QueueStats(
        by_kind=dict(sorted(by_kind.items())),
        by_connection=dict(sorted(by_connection.items())),
        total=_sum(cells.values()),
    )
