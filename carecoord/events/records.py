"""Inbound event records: store each event once per (source, key), in the caller's transaction.

Intake paths call :func:`find_event` at the start of their write transaction (a replay is seen
before anything is written) and :func:`record_event` at its end, so that the event row and the
resources it produced commit together. On PostgreSQL both take a transaction-scoped advisory lock
on (source, key): concurrent deliveries of one event run one after the other, and the second sees
the first as a replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, insert, select, text, update

from carecoord.db import is_postgres, read_connection
from carecoord.events.tables import inbound_events
from carecoord.fhir.values import to_micros

__all__ = [
    "EventStatus",
    "InboundEvent",
    "dedup_key",
    "find_event",
    "get_event",
    "list_events",
    "payload_key",
    "record_event",
]

_KEY_MAX = 255
_ERROR_MAX = 500


class EventStatus(StrEnum):
    """What became of an event: processed, rejected (its content), error (our processing)."""

    PROCESSED = "processed"
    REJECTED = "rejected"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One stored event. ``payload`` is patient data: it is left out of ``repr``."""

    id: int
    source: str
    kind: str
    key: str
    received_at: datetime
    status: EventStatus
    error: str | None
    payload: bytes = field(repr=False)
    produced: tuple[str, ...]
    attempts: int


def payload_key(payload: bytes) -> str:
    """The key of an event that has no id of its own: the SHA-256 of its bytes."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def dedup_key(*parts: str) -> str:
    """A key from the event's own identity (``facility|control id``); hashed when too long."""
    key = "|".join(parts)
    if len(key) > _KEY_MAX or key.startswith("sha256:"):
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _lock(conn: Connection, source: str, key: str) -> None:
    if is_postgres(conn):
        digest = hashlib.blake2b(f"inbound-event\0{source}\0{key}".encode(), digest_size=8)
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": int.from_bytes(digest.digest(), "big") - (1 << 63)},
        )


def _event(row: Any) -> InboundEvent:
    return InboundEvent(
        id=row.id,
        source=row.source,
        kind=row.kind,
        key=row.dedup_key,
        received_at=datetime.fromtimestamp(row.received_at / 1_000_000, UTC),
        status=EventStatus(row.status),
        error=row.error,
        payload=bytes(row.payload),
        produced=tuple(orjson.loads(row.produced)),
        attempts=row.attempts,
    )


def find_event(conn: Connection, *, source: str, key: str) -> InboundEvent | None:
    """The stored event with this key, locking the key until the transaction ends."""
    _lock(conn, source, key)
    row = conn.execute(
        select(inbound_events).where(
            inbound_events.c.source == source, inbound_events.c.dedup_key == key
        )
    ).first()
    return _event(row) if row is not None else None


def record_event(
    conn: Connection,
    *,
    source: str,
    kind: str,
    key: str,
    payload: bytes,
    status: EventStatus | str,
    error: str | None = None,
    produced: Iterable[str] = (),
    received_at: datetime | None = None,
) -> tuple[int, bool]:
    """Store an event in the caller's transaction; return (id, is_new).

    A key already ``processed`` is a replay: nothing changes and ``is_new`` is False. A key that
    was rejected or failed before is a new attempt: its row takes this outcome (``attempts`` + 1).
    ``error`` must be short and free of patient data.
    """
    status = EventStatus(status)
    values = {
        "kind": kind[:64],
        "received_at": to_micros(received_at or datetime.now(UTC)),
        "status": status.value,
        "error": error[:_ERROR_MAX] if error else None,
        "payload": payload,
        "produced": orjson.dumps(list(produced)).decode(),
    }
    existing = find_event(conn, source=source, key=key)
    if existing is None:
        new_id: int = conn.execute(
            insert(inbound_events)
            .values(source=source, dedup_key=key, attempts=1, **values)
            .returning(inbound_events.c.id)
        ).scalar_one()
        return int(new_id), True
    if existing.status is EventStatus.PROCESSED:
        return existing.id, False
    conn.execute(
        update(inbound_events)
        .where(inbound_events.c.id == existing.id)
        .values(attempts=inbound_events.c.attempts + 1, **values)
    )
    return existing.id, True


def get_event(engine: Engine, event_id: int) -> InboundEvent | None:
    with read_connection(engine) as conn:
        row = conn.execute(select(inbound_events).where(inbound_events.c.id == event_id)).first()
    return _event(row) if row is not None else None


def list_events(
    engine: Engine,
    status: EventStatus | str | None = None,
    *,
    source: str | None = None,
    limit: int | None = None,
) -> list[InboundEvent]:
    """Stored events, oldest first; optionally of one status or source."""
    stmt = select(inbound_events).order_by(inbound_events.c.id)
    if status is not None:
        stmt = stmt.where(inbound_events.c.status == EventStatus(status).value)
    if source is not None:
        stmt = stmt.where(inbound_events.c.source == source)
    if limit is not None:
        stmt = stmt.limit(limit)
    with read_connection(engine) as conn:
        return [_event(row) for row in conn.execute(stmt)]
