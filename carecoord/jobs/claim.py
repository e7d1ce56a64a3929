"""The lease protocol in SQL: probe, claim, extend and finish a job in the caller's transaction.

On PostgreSQL the job row is picked with ``FOR UPDATE SKIP LOCKED`` inside the claiming
``UPDATE``, so concurrent workers never take the same job and never wait for each other; on SQLite
the caller's ``BEGIN IMMEDIATE`` transaction serialises claims. A lease is identified by the worker
id and the attempt number: extending or finishing it changes the row only while both still match,
so a worker that lost its lease cannot overwrite a newer attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, FromClause, and_, literal_column, select, update

from carecoord.jobs.tables import DEAD, READY, RUNNING, jobs

__all__ = [
    "LEASE_EXPIRED",
    "ClaimedJob",
    "anything_due",
    "claim_job",
    "extend_lease",
    "finish",
]

#: ``last_error`` of an attempt whose worker did not finish within its lease.
LEASE_EXPIRED: Final = "LeaseExpired: the worker did not finish within its lease"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds a lease on."""

    id: int
    kind: str
    payload: str
    attempt: int
    max_attempts: int
    key: str | None
    connection: str | None
    created_at: int
    worker_id: str


def _status_is(table: FromClause, status: str) -> ColumnElement[bool]:
    # A literal, not a bind parameter: the planners then match the partial indexes.
    return table.c.status == literal_column(f"'{status}'")


def _expired(table: FromClause, due_by: int) -> ColumnElement[bool]:
    """Running, but the lease ended: the worker died (or is too slow)."""
    return and_(_status_is(table, RUNNING), table.c.locked_until <= due_by)


def _due(table: FromClause, due_by: int) -> ColumnElement[bool]:
    return and_(_status_is(table, READY), table.c.run_at <= due_by)


def _kind_in(table: FromClause, kinds: tuple[str, ...]) -> ColumnElement[bool]:
    # ``kind || ''`` keeps planners without statistics (SQLite) off the (kind, dedup_key) index:
    # the claim must walk the partial index in run_at order, not sort every ready job of a kind.
    return table.c.kind.op("||")(literal_column("''")).in_(kinds)


def anything_due(
    conn: Connection, *, due_by: int, kinds: tuple[str, ...], check_leases: bool
) -> bool:
    """Is there a due job (or, with ``check_leases``, an expired lease)? A read-only probe."""
    conditions = [_due(jobs, due_by)]
    if check_leases:
        conditions.insert(0, _expired(jobs, due_by))
    for condition in conditions:
        query = select(jobs.c.id).where(condition, _kind_in(jobs, kinds)).limit(1)
        if conn.execute(query).first() is not None:
            return True
    return False


def _bury_exhausted(conn: Connection, *, due_by: int, now: int) -> None:
    """Dead-letter jobs whose worker died on their last attempt."""
    # The subquery reads an alias, so it is not correlated with the UPDATE.
    picked = jobs.alias("picked")
    exhausted = (
        select(picked.c.id)
        .where(_expired(picked, due_by), picked.c.attempts >= picked.c.max_attempts)
        .with_for_update(skip_locked=True)
    )
    conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(exhausted.scalar_subquery()))
        .values(
            status=DEAD,
            last_error=LEASE_EXPIRED,
            failed_at=now,
            finished_at=now,
            locked_by=None,
            locked_until=None,
        )
    )


def claim_job(
    conn: Connection,
    *,
    worker_id: str,
    kinds: tuple[str, ...],
    due_by: int,
    now: int,
    lease_until: int,
    check_leases: bool,
) -> ClaimedJob | None:
    """Lease one job of ``kinds``: an expired lease first (with ``check_leases``), else the
    earliest due ready job. ``attempts`` counts the claim."""
    if check_leases:
        _bury_exhausted(conn, due_by=due_by, now=now)
    picked = jobs.alias("picked")
    lease: dict[str, Any] = {
        "status": RUNNING,
        "attempts": jobs.c.attempts + 1,
        "locked_by": worker_id,
        "locked_until": lease_until,
    }
    candidates = [(_due(picked, due_by), (picked.c.run_at, picked.c.id), lease)]
    if check_leases:
        expired_values = {**lease, "last_error": LEASE_EXPIRED, "failed_at": now}
        candidates.insert(
            0, (_expired(picked, due_by), (picked.c.locked_until, picked.c.id), expired_values)
        )
    for condition, order, values in candidates:
        pick = (
            select(picked.c.id)
            .where(condition, _kind_in(picked, kinds))
            .order_by(*order)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        row = conn.execute(
            update(jobs)
            .where(jobs.c.id == pick)
            .values(**values)
            .returning(
                jobs.c.id,
                jobs.c.kind,
                jobs.c.payload,
                jobs.c.attempts,
                jobs.c.max_attempts,
                jobs.c.dedup_key,
                jobs.c.connection,
                jobs.c.created_at,
            )
        ).one_or_none()
        if row is not None:
            return ClaimedJob(
                id=row.id,
                kind=row.kind,
                payload=row.payload,
                attempt=row.attempts,
                max_attempts=row.max_attempts,
                key=row.dedup_key,
                connection=row.connection,
                created_at=row.created_at,
                worker_id=worker_id,
            )
    return None


def _held(job: ClaimedJob) -> ColumnElement[bool]:
    return and_(
        jobs.c.id == job.id,
        jobs.c.status == RUNNING,
        jobs.c.locked_by == job.worker_id,
        jobs.c.attempts == job.attempt,
    )


def extend_lease(conn: Connection, job: ClaimedJob, *, until: int) -> bool:
    """Move the lease's end; False if the lease is no longer this attempt's."""
    result = conn.execute(update(jobs).where(_held(job)).values(locked_until=until))
    return result.rowcount == 1


def finish(conn: Connection, job: ClaimedJob, values: dict[str, Any]) -> bool:
    """Release the lease writing the attempt's outcome; False if the lease was lost."""
    statement = update(jobs).where(_held(job)).values(locked_by=None, locked_until=None, **values)
    return conn.execute(statement).rowcount == 1
