"""Database engine, metadata and transaction helpers (SQLite by default, PostgreSQL in production).

Writers on SQLite open their transaction with ``BEGIN IMMEDIATE`` so that two writers never
deadlock on a lock upgrade; readers use plain deferred transactions and, in WAL mode, never block
writers. On PostgreSQL transactions run at READ COMMITTED and the store takes row or advisory locks
where it must serialise; serialization failures and deadlocks are retried by :func:`run_write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

__all__ = [
    "GroupCommitter",
    "RetryableConflict",
    "group_committer",
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


class GroupCommitter:
    """Group commit for SQLite: one thread runs concurrent write units in a shared transaction.

    SQLite has one writer at a time, and a commit's cost is mostly the pages it writes to the WAL:
    the index pages that consecutive writes share are written once per commit. Units submitted
    while a transaction runs join the next one, each in its own savepoint, so a unit that fails
    is rolled back alone and the others still commit. A caller gets its result only after the
    commit. Conflicts (``RetryableConflict``, "database is locked") run the unit again.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 64, retries: int = 8) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.retries = retries
        self._queue: queue.SimpleQueue[_Unit] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction shared with other units; its result once committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a write unit cannot start another write unit")
        future: Future[T] = Future()
        self._enqueue(_Unit(work, future))
        return future.result()

    async def run_async(self, work: Callable[[Connection], T]) -> T:
        """:meth:`run` for the event loop: the results of a batch reach each loop in one
        call (no thread-safe future per unit)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Unit(work, future, loop))
        return await future

    def _enqueue(self, unit: _Unit) -> None:
        self._ensure_thread()
        self._queue.put(unit)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)
                    thread.start()
                    self._thread = thread

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._run_batch(batch)
            except BaseException as exc:  # the thread must outlive any unit: callers wait on it
                _deliver([(unit, False, exc) for unit in batch if not unit.delivered])

    def _run_batch(self, batch: list[_Unit]) -> None:
        done: list[tuple[_Unit, Any]] = []
        failed: list[tuple[_Unit, bool, Any]] = []
        again: list[_Unit] = []
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    # Savepoints on the driver connection: SQLAlchemy's nested transactions cost
                    # more than the units they would wrap.
                    driver: Any = conn.connection.driver_connection
                    for unit in batch:
                        driver.execute("SAVEPOINT unit")
                        try:
                            result = unit.work(conn)
                        except BaseException as exc:  # not only Exception: see _loop
                            driver.execute("ROLLBACK TO unit")
                            driver.execute("RELEASE unit")
                            if _is_retryable(exc) and unit.attempt < self.retries:
                                again.append(unit)
                            else:
                                failed.append((unit, False, exc))
                            continue
                        driver.execute("RELEASE unit")
                        done.append((unit, result))
        except BaseException as exc:
            # BEGIN or COMMIT failed: nothing of this batch is written.
            for unit, _ in done:
                if _is_retryable(exc) and unit.attempt < self.retries:
                    again.append(unit)
                else:
                    failed.append((unit, False, exc))
            done = []
        _deliver([*failed, *((unit, True, result) for unit, result in done)])
        for unit in again:
            unit.attempt += 1
            time.sleep(random.uniform(0, min(0.1, 0.001 * 2**unit.attempt)))
            self._queue.put(unit)


class _Unit:
    __slots__ = ("attempt", "delivered", "future", "loop", "work")

    def __init__(
        self,
        work: Callable[[Connection], Any],
        future: Future[Any] | asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.work = work
        self.future = future
        self.loop = loop  # set for an asyncio future, which only its loop may complete
        self.attempt = 0
        self.delivered = False


def _deliver(outcomes: list[tuple[_Unit, bool, Any]]) -> None:
    """Complete the units' futures: thread futures at once, each event loop's in one call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Unit, bool, Any]]] = {}
    for unit, ok, value in outcomes:
        unit.delivered = True
        if unit.loop is None:
            _complete(unit.future, ok, value)
        else:
            by_loop.setdefault(unit.loop, []).append((unit, ok, value))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[_Unit, bool, Any]]) -> None:
    for unit, ok, value in items:
        if not unit.future.done():  # done: cancelled, the client went away
            _complete(unit.future, ok, value)


def _complete(future: Future[Any] | asyncio.Future[Any], ok: bool, value: Any) -> None:
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_COMMITTERS: weakref.WeakKeyDictionary[Engine, GroupCommitter] = weakref.WeakKeyDictionary()
_COMMITTERS_LOCK = threading.Lock()


def group_committer(engine: Engine) -> GroupCommitter | None:
    """The engine's group committer (SQLite), shared by every store on it; None on PostgreSQL,
    whose concurrent transactions already commit in groups."""
    if engine.dialect.name != "sqlite":
        return None
    with _COMMITTERS_LOCK:
        committer = _COMMITTERS.get(engine)
        if committer is None:
            committer = _COMMITTERS[engine] = GroupCommitter(engine)
        return committer
