"""The inbound event record: one row per (source, key); a replay changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from carecoord.db import run_write
from carecoord.events import (
    EventStatus,
    dedup_key,
    find_event,
    get_event,
    list_events,
    payload_key,
    record_event,
)

T1 = datetime(2024, 1, 1, 12, tzinfo=UTC)
T2 = datetime(2024, 1, 2, 12, tzinfo=UTC)


def record(engine: Engine, **kw: object) -> tuple[int, bool]:
    values: dict[str, object] = {
        "source": "davinci",
        "kind": "notification-discharge",
        "key": "bundle-1",
        "payload": b"{}",
        "status": EventStatus.PROCESSED,
        "received_at": T1,
        **kw,
    }
    return run_write(engine, lambda conn: record_event(conn, **values))  # type: ignore[arg-type]


def test_a_new_event_is_stored_with_what_it_produced(engine: Engine) -> None:
    event_id, is_new = record(engine, produced=["Encounter/e1", "Patient/p1"])
    assert is_new
    event = get_event(engine, event_id)
    assert event is not None
    assert (event.source, event.kind, event.key, event.status) == (
        "davinci",
        "notification-discharge",
        "bundle-1",
        EventStatus.PROCESSED,
    )
    assert event.produced == ("Encounter/e1", "Patient/p1")
    assert event.received_at == T1
    assert event.payload == b"{}"
    assert event.attempts == 1
    assert "payload" not in repr(event)


def test_a_replay_of_a_processed_event_changes_nothing(engine: Engine) -> None:
    first, _ = record(engine, produced=["Encounter/e1"])
    again, is_new = record(engine, payload=b"other", received_at=T2, status="rejected")
    assert (again, is_new) == (first, False)
    event = get_event(engine, first)
    assert event is not None
    assert (event.payload, event.received_at, event.status, event.attempts) == (
        b"{}",
        T1,
        EventStatus.PROCESSED,
        1,
    )


def test_a_new_attempt_after_a_rejection_takes_the_row(engine: Engine) -> None:
    first, _ = record(engine, status="rejected", error="bad", payload=b"x")
    again, is_new = record(engine, received_at=T2, produced=["Patient/p1"])
    assert (again, is_new) == (first, True)
    event = get_event(engine, first)
    assert event is not None
    assert (event.status, event.error, event.attempts, event.received_at) == (
        EventStatus.PROCESSED,
        None,
        2,
        T2,
    )


def test_same_key_from_another_source_is_another_event(engine: Engine) -> None:
    first, _ = record(engine)
    second, is_new = record(engine, source="subscription")
    assert is_new and second != first


def test_list_and_find(engine: Engine) -> None:
    record(engine, key="k1")
    record(engine, key="k2", status="rejected", error="unsupported")
    record(engine, key="k3", status="error", error="db")
    assert [e.key for e in list_events(engine)] == ["k1", "k2", "k3"]
    assert [e.key for e in list_events(engine, "rejected")] == ["k2"]
    assert [e.key for e in list_events(engine, EventStatus.ERROR)] == ["k3"]
    assert list_events(engine, source="nope") == []
    found = run_write(engine, lambda conn: find_event(conn, source="davinci", key="k2"))
    assert found is not None and found.error == "unsupported"
    with pytest.raises(ValueError):
        list_events(engine, "bogus")


def test_keys() -> None:
    assert dedup_key("GENHOSP", "MSG1") == "GENHOSP|MSG1"
    long = dedup_key("F" * 300, "MSG1")
    assert long.startswith("sha256:") and len(long) == 71
    assert payload_key(b"abc") == payload_key(b"abc") != payload_key(b"abd")
