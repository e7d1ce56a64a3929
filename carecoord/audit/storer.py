"""The audit journal's storing process (setting ``audit_store_process``).

Storing a read's AuditEvent costs about as much CPU as serving the read. Done by a thread of the
server, that work competes with the requests for the interpreter lock, and every hand-over of the
lock stalls the event loop: audited reads at 32 connections ran at 0.6-0.7 times the rate of an
empty endpoint, with a p99 of ~100 ms (docs/performance.md). A process of its own does the same
work with its own interpreter, and the operating system shares the CPU between the two in slices
of a few milliseconds.

The journal's thread in the server stays in charge of what is stored and when: it asks for a range
of a journal file and waits for the answer. The request carries the file's descriptor
(``SCM_RIGHTS``); the storing process reads the range through it, stores the events and the new
offset in one transaction (:func:`carecoord.audit.journal.store_range`), closes it and answers
how many bytes it stored. Holding the descriptor also holds the journal's ``flock``: if the server
dies while a batch is being committed, no other process recovers that journal before the commit
has ended.

The storing process ends when the server closes its end of the socket, or when the server dies
(end of file); it ignores SIGINT and SIGTERM, so that a Ctrl-C or a service stop lets the server
drain its journal through it first.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import orjson

__all__ = ["StorerError", "StorerProcess", "main"]

log = logging.getLogger("carecoord.audit")

_MAX_MESSAGE = 64 << 10
#: The storing process's command (``-c``: ``-m`` would import this module twice, once through
#: the package).
_ENTRY = "import sys; from carecoord.audit.storer import main; sys.exit(main())"


class StorerError(Exception):
    """The storing process could not store a batch (``kind``: what went wrong, without data)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class StorerProcess:
    """The server's handle on its storing process: started on first use, restarted after it
    ended, stopped by :meth:`close`."""

    def __init__(
        self,
        database_url: str,
        *,
        start_timeout: float = 120.0,
        reply_timeout: float = 300.0,
    ) -> None:
        self._database_url = database_url
        self.start_timeout = start_timeout
        #: A batch waits for the database's write lock at most ``busy_timeout`` (SQLite) or a
        #: statement timeout; a process silent for this long is stopped and started again.
        self.reply_timeout = reply_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        """The running storing process's id (None before the first batch or after close)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def store(self, name: str, fd: int, start: int, end: int, limit: int) -> int:
        """Store up to ``limit`` events of journal ``name`` (open as ``fd``) from ``start`` (none
        past ``end``) with the new offset; returns the bytes stored. Raises :class:`StorerError`
        if the process failed (whether that batch was committed is then unknown)."""
        request = orjson.dumps({"name": name, "start": start, "end": end, "limit": limit})
        with self._lock:
            sock = self._running()
            try:
                socket.send_fds(sock, [request], [fd])
                reply = sock.recv(_MAX_MESSAGE)
            except OSError as exc:  # a timeout included
                self._stop()
                raise StorerError(type(exc).__name__, "the storing process did not answer") from exc
            if not reply:
                self._stop()
                raise StorerError("StorerEnded", "the storing process ended")
        answer = orjson.loads(reply)
        if "error" in answer:
            kind = str(answer["error"])
            raise StorerError(kind, f"the storing process could not store a batch ({kind})")
        return int(answer["consumed"])

    def close(self, timeout: float = 15.0) -> None:
        """Stop the storing process (it finishes the batch it has, if any)."""
        with self._lock:
            self._stop(timeout)

    def _running(self) -> socket.socket:
        if self._proc is not None and self._sock is not None and self._proc.poll() is None:
            return self._sock
        self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise StorerError(type(exc).__name__, "the storing process could not start") from exc
        finally:
            theirs.close()
        self._proc, self._sock = proc, ours
        try:
            ours.settimeout(self.start_timeout)
            ours.send(orjson.dumps({"database_url": self._database_url}))
            ready = ours.recv(_MAX_MESSAGE)
        except OSError as exc:
            self._stop()
            raise StorerError(type(exc).__name__, "the storing process did not start") from exc
        if not ready or orjson.loads(ready).get("ready") is not True:
            self._stop()
            raise StorerError("StorerEnded", "the storing process did not start")
        ours.settimeout(self.reply_timeout)
        return ours

    def _stop(self, timeout: float = 5.0) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            sock.close()  # the process sees the end of its input and exits
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _serve(sock: socket.socket) -> None:
    from carecoord.audit.journal import store_range
    from carecoord.db import make_engine
    from carecoord.fhir.store import FhirStore

    setup = orjson.loads(sock.recv(_MAX_MESSAGE) or b"{}")
    engine = make_engine(setup["database_url"], pool_size=1)
    store = FhirStore(engine, group_commit=False)
    sock.send(orjson.dumps({"ready": True}))
    try:
        while True:
            message, fds, _flags, _address = socket.recv_fds(sock, _MAX_MESSAGE, 1)
            if not message:
                return  # the server closed its end, or ended
            answer: dict[str, Any]
            try:
                request = orjson.loads(message)
                if not fds:
                    raise ValueError("no journal descriptor with the request")
                consumed = store_range(
                    store,
                    fds[0],
                    request["name"],
                    request["start"],
                    request["end"],
                    request["limit"],
                )
                answer = {"consumed": consumed}
            except Exception as exc:  # answered, kept in the journal, retried by the server
                answer = {"error": type(exc).__name__}
            finally:
                for fd in fds:
                    os.close(fd)
            sock.send(orjson.dumps(answer))
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the storing process (``argv``: the socket's descriptor), started by
    :class:`StorerProcess`."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=os.environ.get("CARECOORD_LOG_LEVEL", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    sock = socket.socket(fileno=int(args[0]))
    try:
        _serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server ended while a batch was stored: its journal keeps the rest
    finally:
        sock.close()
    return 0
