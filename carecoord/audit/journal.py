"""The audit journal: reads are recorded on local disk before they are answered, and stored as
AuditEvents in large batches behind them.

A read of patient data must not be served unless it is audited, and must not be slowed by a
database commit of its own. :meth:`AuditJournal.append` writes the events as JSON lines to this
process's journal file (one ``write`` on a file opened for appending: once it returns, the events
survive a crash of the process) and raises if it cannot, so that the read is refused. A background
thread stores what the journal holds as FHIR AuditEvents, up to ``batch`` per transaction, and
records in the same transaction how many bytes of the file are now stored (``audit_journals``):
after a crash the journal resumes at that offset, so nothing is lost and nothing stored twice.

Each process appends to a file of its own, locked with ``flock`` while the process lives. At
start-up, and whenever the thread starts, journals whose lock is free (their process has ended)
are stored and removed. Journals live under ``<journal dir>/<database key>/`` so that a journal is
only ever replayed into the database it belongs to.

:meth:`settle` waits until everything appended so far is stored: AuditEvent searches call it, so
an auditor always sees every access made before the query.

With ``process=True`` the thread hands each batch to a storing process of its own
(:mod:`carecoord.audit.storer`) instead of storing it in this interpreter, so that the storing
work does not compete with the requests for the interpreter lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update

from carecoord.audit.events import audit_index
from carecoord.audit.storer import StorerProcess
from carecoord.audit.tables import audit_journals
from carecoord.fhir.store import FhirStore, Writer

__all__ = ["AuditJournal", "JournalError", "journal_directory", "settle_all", "store_range"]

log = logging.getLogger("carecoord.audit")

_SUFFIX = ".jsonl"
_READ_CHUNK = 1 << 20


#: Every journal of this process (stored and closed at interpreter exit, settled by settle_all).
_LIVE: weakref.WeakSet[AuditJournal] = weakref.WeakSet()


def settle_all(timeout: float = 10.0) -> bool:
    """Wait until every journal of this process has stored what it holds (e.g. before a
    database is emptied or copied); False if one did not within ``timeout``."""
    return all([journal.settle(timeout) for journal in list(_LIVE)])


@atexit.register
def _close_all() -> None:
    for journal in list(_LIVE):
        journal.close(timeout=10.0)


class JournalError(Exception):
    """The journal could not take an event (disk full, closed): the access must not be served."""


def journal_directory(base: Path, database_url: str) -> Path:
    """The folder of the journals that belong to this database (a key derived from its URL)."""
    key = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return base / key


@dataclass
class _File:
    """One journal file: its name, the lock-holding descriptor, and the ingest position."""

    name: str
    fd: int
    size: int = 0  # bytes appended (own file) or present (an orphan's) so far
    ingested: int = 0  # bytes of it already stored
    #: A storing attempt failed: it may have committed all the same (e.g. the connection broke
    #: after the commit), so the stored offset is read back before the next attempt.
    unsure: bool = False


class AuditJournal:
    """This process's audit journal and the thread that stores it (see the module docstring)."""

    def __init__(
        self,
        store: FhirStore,
        directory: Path,
        *,
        batch: int = 250,
        rotate_bytes: int = 64 << 20,
        idle_seconds: float = 0.2,
        linger_bytes: int = 256 << 10,
        retry_seconds: float = 1.0,
        process: bool = False,
    ) -> None:
        self.store = store
        self.directory = directory
        self.batch = batch
        self.rotate_bytes = rotate_bytes
        #: The thread stores at least this often, and sooner once ``linger_bytes`` are waiting
        #: (larger transactions cost less per event) or somebody waits in :meth:`settle`.
        self.idle_seconds = idle_seconds
        self.linger_bytes = linger_bytes
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()  # the appending side: current file, sizes
        self._cond = threading.Condition(threading.Lock())  # wake-ups and settle waits
        self._current: _File | None = None
        self._retired: list[_File] = []  # rotated files, not yet fully stored
        self._appended = 0  # bytes appended by this process, all files
        self._stored = 0  # bytes of those stored
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._settling = 0
        self._failing: str | None = None
        self._storer = (
            StorerProcess(store.engine.url.render_as_string(hide_password=False))
            if process
            else None
        )
        _LIVE.add(self)

    # -- appending (request side) -----------------------------------------------------------

    def append(self, events: Iterable[dict[str, Any]]) -> None:
        """Record events durably (against a crash of the process); raises :class:`JournalError`."""
        data = b"".join(orjson.dumps(event) + b"\n" for event in events)
        if not data:
            return
        with self._lock:
            if self._closed:
                raise JournalError("the audit journal is closed")
            current = self._current
            if current is None or current.size >= self.rotate_bytes:
                current = self._rotate()
            try:
                written = os.write(current.fd, data)
            except OSError as exc:
                raise JournalError(f"the audit journal could not be written ({exc.errno})") from exc
            if written != len(data):
                # A partial line must not merge with the next one: cut it off again.
                with contextlib.suppress(OSError):
                    os.ftruncate(current.fd, current.size)
                raise JournalError("the audit journal could not be written (short write)")
            current.size += written
            self._appended += written
        self._ensure_thread()
        if self.backlog >= self.linger_bytes:
            with self._cond:
                self._cond.notify_all()

    def _rotate(self) -> _File:
        """Open a new file for appending (the full one is stored and removed behind)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
        try:
            fd = os.open(
                self.directory / name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600
            )
        except OSError as exc:
            raise JournalError(f"the audit journal could not be created ({exc.errno})") from exc
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        opened = _File(name, fd)
        with self._cond:
            if self._current is not None:
                self._retired.append(self._current)
            self._current = opened
        return opened

    # -- waiting ----------------------------------------------------------------------------

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until everything appended so far is stored; False if that took over ``timeout``."""
        with self._lock:
            target = self._appended
        deadline = time.monotonic() + timeout
        with self._cond:
            self._settling += 1
            self._cond.notify_all()
            try:
                while self._stored < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None:
                        return self._stored >= target
                    self._cond.wait(min(left, 0.05))
            finally:
                self._settling -= 1
        return True

    @property
    def backlog(self) -> int:
        """Bytes appended by this process and not yet stored."""
        return self._appended - self._stored

    @property
    def failing(self) -> str | None:
        """The kind of the last storing error while it keeps failing (None when healthy)."""
        return self._failing

    # -- the storing thread -----------------------------------------------------------------

    def start(self) -> None:
        """Start the storing thread now (it also starts on the first append)."""
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stopping:
            return
        with self._cond:
            if self._thread is None and not self._stopping:
                thread = threading.Thread(target=self._run, name="audit-journal", daemon=True)
                self._thread = thread
                thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Store what is left, stop the thread, and remove this process's stored journals."""
        with self._lock:
            self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            self._drain_own()
        self._thread = None
        if self._storer is not None:
            self._storer.close()

    def _run(self) -> None:
        self.recover()
        while True:
            with self._cond:
                if not self._urgent():
                    self._cond.wait(self.idle_seconds)
            try:
                progressed = False
                while self._step():
                    progressed = True
                    if not self._urgent():
                        break  # the rest waits for a full batch (or the idle timer)
                self._failing = None
            except Exception as exc:  # kept in the journal, retried after a pause
                kind = getattr(exc, "kind", None) or type(exc).__name__
                if self._failing != kind:
                    log.error("audit journal: storing failed (%s); retrying", kind)
                self._failing = kind
                progressed = False
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(self.retry_seconds)
                continue
            with self._cond:
                if self._stopping and not progressed:
                    break
        self._drain_own()

    def _urgent(self) -> bool:
        """Store more now: a batch's worth is waiting, somebody settles, or the journal stops."""
        return self._stopping or self._settling > 0 or self.backlog >= self.linger_bytes

    def _drain_own(self) -> None:
        """At close: store the rest of this process's files and remove them."""
        try:
            while self._step():
                pass
            current = self._current
            if current is not None and current.ingested >= current.size:
                self._current = None
                self._remove(current)
        except Exception as exc:  # the file stays for the next start
            log.error("audit journal: not stored at shutdown (%s); kept", type(exc).__name__)

    def _step(self) -> bool:
        """Store one batch of the oldest file with something left; True if it stored anything."""
        with self._cond:
            files = [*self._retired, *([self._current] if self._current else [])]
        for journal in files:
            with self._lock:
                size = journal.size
            if journal.ingested < size:
                stored = self._store_batch(journal, size)
                with self._cond:
                    self._stored += stored
                    self._cond.notify_all()
                return stored > 0  # 0: only an unfinished line is left; wait for its end
            if journal is not self._current:
                with self._cond:
                    self._retired.remove(journal)
                self._remove(journal)
                return True
        return False

    def _store_batch(self, journal: _File, end: int) -> int:
        """Store up to ``batch`` events of ``journal`` from its offset; returns the bytes now
        stored (after a failed attempt, also those that attempt committed after all)."""
        moved = 0
        if journal.unsure:
            stored = self._offset(journal.name)
            if stored > journal.ingested:
                moved, journal.ingested = stored - journal.ingested, stored
            journal.unsure = False
        if journal.ingested >= end:
            return moved
        journal.unsure = True  # until the attempt is known to have committed, or not
        if self._storer is not None:
            consumed = self._storer.store(
                journal.name, journal.fd, journal.ingested, end, self.batch
            )
        else:
            consumed = store_range(
                self.store, journal.fd, journal.name, journal.ingested, end, self.batch
            )
        journal.unsure = False
        journal.ingested += consumed
        return moved + consumed

    def _remove(self, journal: _File) -> None:
        """Delete a fully stored file, then its offset row (in that order: a crash in between
        leaves a row without a file, never a file without its offset)."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / journal.name).unlink()
        with contextlib.suppress(OSError):
            os.close(journal.fd)
        self.store.write(
            lambda w: w.conn.execute(
                delete(audit_journals).where(audit_journals.c.name == journal.name)
            )
        )

    # -- journals of ended processes --------------------------------------------------------

    def recover(self) -> int:
        """Store and remove the journals of processes that ended; returns how many."""
        if not self.directory.is_dir():
            return 0
        own = {f.name for f in (self._current, *self._retired) if f is not None}
        done = 0
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if path.name in own:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its process is alive
                continue
            try:
                self._store_orphan(path.name, fd)
            except Exception as exc:  # left for the next attempt
                os.close(fd)
                log.error("audit journal: a left-over one was not stored (%s)", type(exc).__name__)
                continue
            done += 1
        return done

    def _store_orphan(self, name: str, fd: int) -> None:
        orphan = _File(name, fd, size=os.fstat(fd).st_size, ingested=self._offset(name))
        while orphan.ingested < orphan.size:
            consumed = self._store_batch(orphan, orphan.size)
            if consumed == 0:  # only an unfinished last line is left: its access was refused
                break
        log.info("audit journal: stored a left-over journal of an ended process")
        self._remove(orphan)

    def _offset(self, name: str) -> int:
        with self.store.engine.connect() as conn:
            found = conn.execute(
                select(audit_journals.c.ingested).where(audit_journals.c.name == name)
            ).scalar_one_or_none()
        return int(found or 0)


def store_range(store: FhirStore, fd: int, name: str, start: int, end: int, limit: int) -> int:
    """Store the whole lines of journal ``name`` (open as ``fd``) from ``start`` (at most
    ``limit`` events, none past ``end``) and the new offset, in one transaction; returns the
    bytes stored (0: only an unfinished line is there)."""
    events, consumed = _read_events(fd, start, end, limit, name)
    if consumed:
        store.write(lambda w: _store(w, name, events, start + consumed))
    return consumed


def _read_events(
    fd: int, start: int, end: int, limit: int, name: str
) -> tuple[list[dict[str, Any]], int]:
    """Whole lines of the file from ``start`` (at most ``limit`` events): events, bytes used."""
    # Enough for ``limit`` events (each is a few KB at most), never the whole file at once.
    data = os.pread(fd, min(end - start, _READ_CHUNK, limit * 4096 + 65536), start)
    events: list[dict[str, Any]] = []
    used = 0
    while len(events) < limit:
        newline = data.find(b"\n", used)
        if newline < 0:
            break
        line = data[used:newline]
        used = newline + 1
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.error("audit journal %s: an unreadable line was skipped", name)
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, used


def _store(w: Writer, name: str, events: list[dict[str, Any]], offset: int) -> None:
    for event in events:
        w.audit(event, audit_index(event))
    w.flush()
    moved = w.conn.execute(
        update(audit_journals).where(audit_journals.c.name == name).values(ingested=offset)
    )
    if moved.rowcount == 0:
        w.conn.execute(insert(audit_journals).values(name=name, ingested=offset))
