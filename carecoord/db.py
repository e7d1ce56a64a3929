"""Database engine, metadata and transaction helpers (SQLite by default, PostgreSQL in production).

Writers on SQLite open their transaction with ``BEGIN IMMEDIATE`` so that two writers never
deadlock on a lock upgrade; readers use plain deferred transactions and, in WAL mode, never block
writers. On PostgreSQL transactions run at READ COMMITTED and the store takes row or advisory locks
where it must serialise; serialization failures and deadlocks are retried by :func:`run_write`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

__all__ = [
    "RetryableConflict",
    "is_postgres",
    "make_engine",
    "metadata",
    "read_connection",
    "run_write",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

T = TypeVar("T")

_WRITE_OPTION = "carecoord_write"
# SQLSTATEs that mean "run the same transaction again": serialization failure, deadlock.
_RETRY_SQLSTATES = {"40001", "40P01"}


class RetryableConflict(Exception):
    """Raised inside a write unit when a concurrent writer won a race; the unit is run again."""


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine; for SQLite create the folder, enable WAL and sane pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size * 4,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 4,
        pool_pre_ping=True,
        hide_parameters=True,  # SQL parameters carry patient data: keep them out of errors and logs
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" event below emits BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")
        # Checkpoint every ~40 MB of WAL instead of every 4 MB: index pages rewritten by many
        # commits are copied back once per checkpoint, not once per 1,000 pages (30% faster
        # creates, measured in docs/performance.md); the file is cut back to 64 MB afterwards.
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a read transaction (a consistent snapshot on both databases)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def _is_retryable(exc: BaseException) -> bool:
    """Conflicts worth running the transaction again for, wrapped by SQLAlchemy or raw from the
    driver (the store's hot-path statements run on the driver connection)."""
    if isinstance(exc, RetryableConflict):
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    return type(orig).__name__ == "OperationalError" and "database is locked" in str(orig)


def run_write(engine: Engine, work: Callable[[Connection], T], *, retries: int = 8) -> T:
    """Run ``work`` in one write transaction, retrying it on serialization conflicts.

    ``work`` must be safe to run again: everything it did in a failed attempt is rolled back.
    """
    attempt = 0
    while True:
        try:
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    return work(conn)
        except Exception as exc:
            if attempt >= retries or not _is_retryable(exc):
                raise
            attempt += 1
            # Exponential backoff with full jitter: 1 ms, 2 ms, 4 ms ... capped at 100 ms.
            time.sleep(random.uniform(0, min(0.1, 0.001 * 2**attempt)))
