"""The audit journal stored from a process of its own: every access stored once, through crashes of
that process and failed attempts that committed all the same."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from carecoord.app import _in_memory, create_app
from carecoord.audit.journal import AuditJournal
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from tests.audit.test_journal import _event, _offsets, _stored


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    """The process ended (a zombie not yet reaped by its parent counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_a_storing_process_stores_every_event_once_then_ends(
    store: FhirStore, engine: Engine, tmp_path: Path
) -> None:
    journal = AuditJournal(store, tmp_path / "journal", batch=100, process=True)
    store.settle_audit = journal.settle
    for i in range(0, 450, 50):
        journal.append([_event(j) for j in range(i, i + 50)])
    page = store.search(store.parse("AuditEvent", [("patient", "Patient/p449")]))
    assert len(page.matches) == 1  # the search waited for the other process
    assert _stored(engine) == sorted(f"req-{i}" for i in range(450))
    storer = journal._storer
    assert storer is not None
    pid = storer.pid
    assert pid is not None and pid != os.getpid()
    journal.close()
    assert _wait_gone(pid)  # the storing process ends with the journal
    assert list((tmp_path / "journal").iterdir()) == []
    assert _offsets(engine) == 0


def test_a_killed_storing_process_is_replaced_and_nothing_is_lost_or_doubled(
    store: FhirStore, engine: Engine, tmp_path: Path
) -> None:
    journal = AuditJournal(store, tmp_path / "journal", batch=10, retry_seconds=0.05, process=True)
    journal.append([_event(i) for i in range(25)])
    assert journal.settle(timeout=60)
    storer = journal._storer
    assert storer is not None
    first = storer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert _wait_gone(first)
    journal.append([_event(i) for i in range(25, 60)])
    assert journal.settle(timeout=60)
    assert _stored(engine) == sorted(f"req-{i}" for i in range(60))
    assert storer.pid not in (None, first)
    assert journal.failing is None
    journal.close()


def test_the_storing_process_ignores_an_interrupt_so_the_server_can_drain(
    store: FhirStore, engine: Engine, tmp_path: Path
) -> None:
    """Ctrl-C reaches the whole process group: the storing process stays to store what the
    server still has, and ends when the server closes the journal."""
    journal = AuditJournal(store, tmp_path / "journal", process=True)
    journal.append([_event(1)])
    assert journal.settle(timeout=60)
    storer = journal._storer
    assert storer is not None and storer.pid is not None
    pid = storer.pid
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    journal.append([_event(2)])
    journal.close()
    assert _stored(engine) == ["req-1", "req-2"]
    assert _wait_gone(pid)


def test_an_attempt_that_committed_before_it_failed_is_not_stored_again(
    store: FhirStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit went through but its answer was lost (a broken connection, a storing process
    killed right after the commit): the next attempt reads the stored offset back first."""
    journal = AuditJournal(store, tmp_path / "journal", retry_seconds=0.05)
    real_write = store.write
    calls = {"n": 0}

    def lost_answer(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        result = real_write(*args, **kwargs)
        if calls["n"] == 1:
            raise ConnectionError("connection lost after the commit")
        return result

    monkeypatch.setattr(store, "write", lost_answer)
    journal.append([_event(1), _event(2)])
    assert journal.settle(timeout=10)
    journal.append([_event(3)])
    assert journal.settle(timeout=10)
    assert _stored(engine) == ["req-1", "req-2", "req-3"]
    journal.close()


def test_the_app_stores_through_a_process_and_auditors_see_every_read(
    settings: Settings, engine: Engine, auth_header: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"audit_store_process": True})
    app = create_app(settings, engine=engine)
    with TestClient(app, base_url="http://testserver", headers=auth_header) as client:
        created = client.post(
            "/fhir/Patient",
            content=b'{"resourceType":"Patient","name":[{"family":"Okafor"}]}',
            headers={"Content-Type": "application/fhir+json"},
        )
        assert created.status_code == 201
        patient_id = created.json()["id"]
        for _ in range(3):
            assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
        found = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{patient_id}"})
        assert found.status_code == 200
        reads = [
            e["resource"]
            for e in found.json().get("entry", [])
            if e["resource"]["subtype"][0]["code"] == "read"
        ]
        assert len(reads) == 3
        storer = app.state.audit.journal._storer
        assert storer is not None and storer.pid is not None


def test_an_in_memory_database_is_stored_by_a_thread() -> None:
    assert _in_memory(create_engine("sqlite://"))
    assert _in_memory(create_engine("sqlite:///:memory:"))
    assert _in_memory(create_engine("sqlite:///file:cc?mode=memory&cache=shared&uri=true"))
    assert not _in_memory(create_engine("sqlite:////tmp/carecoord-test.db"))
    assert not _in_memory(create_engine("postgresql+psycopg://cc@db/prod"))
