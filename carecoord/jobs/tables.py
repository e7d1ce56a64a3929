"""The ``jobs`` table: the durable queue and outbox, in the same database as the data.

Times are integers, microseconds since the Unix epoch (UTC), like the FHIR store's. A job moves
``ready -> running -> done``; a failed attempt goes back to ``ready`` with a later ``run_at``, the
last one (or a :class:`~carecoord.jobs.errors.Fatal`) to ``dead``. ``attempts`` counts claims, so
an attempt whose worker died counts too.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from carecoord.db import metadata

__all__ = [
    "DEAD",
    "DONE",
    "OPEN_PREDICATE",
    "OPEN_STATUSES",
    "READY",
    "RUNNING",
    "STATUSES",
    "jobs",
]

READY: Final = "ready"
RUNNING: Final = "running"
DONE: Final = "done"
DEAD: Final = "dead"
STATUSES: Final = (READY, RUNNING, DONE, DEAD)
#: Statuses of jobs that are not finished (or need a person): the partial index ``ix_jobs_open``.
OPEN_STATUSES: Final = (READY, RUNNING, DEAD)
#: The predicate of ``ix_jobs_open``; queries repeat it verbatim so that SQLite can use the index.
OPEN_PREDICATE: Final = "status IN ('ready', 'running', 'dead')"

KIND_LENGTH: Final = 64
KEY_LENGTH: Final = 255
CONNECTION_LENGTH: Final = 64
WORKER_ID_LENGTH: Final = 128
ERROR_LENGTH: Final = 500

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
JobId = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("id", JobId, primary_key=True, autoincrement=True),
    Column("kind", String(KIND_LENGTH), nullable=False),
    Column("payload", Text(), nullable=False),
    Column("dedup_key", String(KEY_LENGTH), nullable=True),
    Column("connection", String(CONNECTION_LENGTH), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("max_attempts", Integer(), nullable=False),
    Column("run_at", BigInteger(), nullable=False),
    Column("locked_by", String(WORKER_ID_LENGTH), nullable=True),
    Column("locked_until", BigInteger(), nullable=True),
    Column("last_error", String(ERROR_LENGTH), nullable=True),
    Column("failed_at", BigInteger(), nullable=True),
    Column("created_at", BigInteger(), nullable=False),
    Column("finished_at", BigInteger(), nullable=True),
    UniqueConstraint("kind", "dedup_key", name="uq_jobs_kind_dedup_key"),
    CheckConstraint("status IN ('ready', 'running', 'done', 'dead')", name="status"),
    Index(
        "ix_jobs_due",
        "run_at",
        "id",
        postgresql_where=text("status = 'ready'"),
        sqlite_where=text("status = 'ready'"),
    ),
    Index(
        "ix_jobs_lease",
        "locked_until",
        postgresql_where=text("status = 'running'"),
        sqlite_where=text("status = 'running'"),
    ),
    Index(
        "ix_jobs_open",
        "status",
        "kind",
        "connection",
        postgresql_where=text(OPEN_PREDICATE),
        sqlite_where=text(OPEN_PREDICATE),
    ),
    Index(
        "ix_jobs_finished",
        "finished_at",
        postgresql_where=text("status = 'done'"),
        sqlite_where=text("status = 'done'"),
    ),
    Index(
        "ix_jobs_failed",
        "kind",
        "connection",
        "failed_at",
        postgresql_where=text("failed_at IS NOT NULL"),
        sqlite_where=text("failed_at IS NOT NULL"),
    ),
)
