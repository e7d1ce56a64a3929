"""Group commit of AuditEvents for reads: requests wait for their events, many share a commit."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from carecoord.audit.events import audit_index
from carecoord.fhir.store import FhirStore

__all__ = ["AuditWriter"]

log = logging.getLogger("carecoord.audit")
_STOP = object()


class AuditWriter:
    """One background thread writes queued AuditEvents, a batch per transaction."""

    def __init__(self, store: FhirStore, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    thread.start()
                    self._thread = thread

    def submit(self, events: list[dict[str, Any]]) -> Future[None]:
        """Queue events; the future completes when they are committed (or fails)."""
        future: Future[None] = Future()
        if not events:
            future.set_result(None)
            return future
        self._ensure_thread()
        self._queue.put((events, future))
        return future

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Write ``events`` before returning; raises if they cannot be written."""
        if events:
            await asyncio.wrap_future(self.submit(events))

    def record_sync(self, events: list[dict[str, Any]], timeout: float = 30.0) -> None:
        if events:
            self.submit(events).result(timeout)

    def close(self) -> None:
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[list[dict[str, Any]], Future[None]]]) -> None:
        events = [e for evs, _ in batch for e in evs]
        try:
            self.store.write(lambda w: [w.audit(e, audit_index(e)) for e in events])
        except Exception as exc:
            log.error("audit events could not be written: %s", type(exc).__name__)
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)
