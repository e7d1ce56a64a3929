"""The audit journal: reads are on disk before they are answered and stored exactly once."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from carecoord.audit import journal as journal_module
from carecoord.audit.events import audit_event
from carecoord.audit.journal import AuditJournal, JournalError, journal_directory
from carecoord.audit.tables import audit_journals
from carecoord.fhir.access import Agent
from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resource_versions, resources


def _event(i: int) -> dict[str, Any]:
    return audit_event(
        interaction="read",
        agent=Agent("client", "journal-test"),
        recorded="2026-11-23T10:00:00.000000Z",
        request_id=f"req-{i}",
        patients=[f"p{i}"],
        targets=[f"Patient/p{i}"],
    )


def _stored(engine: Engine) -> list[str]:
    """Request ids of the stored AuditEvents (each journal event carries its own)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.content).where(resources.c.res_type == "AuditEvent")
        ).all()
    out = []
    for (content,) in rows:
        data = orjson.loads(content)
        for entity in data.get("entity", []):
            if entity.get("type", {}).get("code") == "XrequestId":
                out.append(entity["what"]["identifier"]["value"])
    return sorted(out)


def _offsets(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_journals)).scalar_one())


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


def test_appended_events_are_stored_and_searchable(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    journal = AuditJournal(store, journal_dir)
    store.settle_audit = journal.settle
    journal.append([_event(1), _event(2)])
    page = store.search(store.parse("AuditEvent", [("patient", "Patient/p1")]))
    assert len(page.matches) == 1  # the search waited for the journal
    assert _stored(engine) == ["req-1", "req-2"]
    journal.close()
    assert list(journal_dir.iterdir()) == []  # stored files are removed
    assert _offsets(engine) == 0


def test_events_are_stored_in_batches_exactly_once(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    journal = AuditJournal(store, journal_dir, batch=100)
    for i in range(0, 450, 50):
        journal.append([_event(j) for j in range(i, i + 50)])
    assert journal.settle()
    assert _stored(engine) == sorted(f"req-{i}" for i in range(450))
    assert journal.backlog == 0
    journal.close()


def test_a_journal_left_by_an_ended_process_is_stored_once(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    """The process stored two of five events (and their offset), then died: the next start
    stores the other three, not the first two again."""
    journal_dir.mkdir(parents=True)
    lines = [orjson.dumps(_event(i)) + b"\n" for i in range(5)]
    name = "otherhost-4242-abc.jsonl"
    (journal_dir / name).write_bytes(b"".join(lines))
    first_two = lines[0] + lines[1]
    store.write(lambda w: journal_module._store(w, name, [_event(0), _event(1)], len(first_two)))
    assert _stored(engine) == ["req-0", "req-1"]

    journal = AuditJournal(store, journal_dir)
    assert journal.recover() == 1
    assert _stored(engine) == [f"req-{i}" for i in range(5)]
    assert not (journal_dir / name).exists()
    assert _offsets(engine) == 0
    assert journal.recover() == 0  # nothing left to do, nothing doubled
    assert len(_stored(engine)) == 5


def test_an_unfinished_last_line_of_a_dead_journal_is_dropped(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    """A write cut short was refused (503), so its half line is not an access to store."""
    journal_dir.mkdir(parents=True)
    whole = orjson.dumps(_event(1)) + b"\n"
    (journal_dir / "dead-1-x.jsonl").write_bytes(whole + orjson.dumps(_event(2))[:40])
    assert AuditJournal(store, journal_dir).recover() == 1
    assert _stored(engine) == ["req-1"]


def test_the_journal_of_a_live_process_is_left_alone(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    journal_dir.mkdir(parents=True)
    path = journal_dir / "live-7-y.jsonl"
    path.write_bytes(orjson.dumps(_event(1)) + b"\n")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held as its process would hold it
    try:
        assert AuditJournal(store, journal_dir).recover() == 0
        assert _stored(engine) == []
        assert path.exists()
    finally:
        os.close(fd)


def test_an_outage_of_the_database_loses_nothing(
    store: FhirStore, engine: Engine, journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = AuditJournal(store, journal_dir, retry_seconds=0.05)
    real_write = store.write

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(store, "write", down)
    journal.append([_event(1)])  # the access is recorded all the same
    assert journal.settle(timeout=0.3) is False
    assert journal.failing == "ConnectionError"
    monkeypatch.setattr(store, "write", real_write)
    journal.append([_event(2)])
    assert journal.settle(timeout=10)
    assert _stored(engine) == ["req-1", "req-2"]
    assert journal.failing is None
    journal.close()


def test_a_write_the_disk_refuses_is_an_error_and_leaves_no_half_line(
    store: FhirStore, engine: Engine, journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = AuditJournal(store, journal_dir)
    journal.append([_event(1)])
    real_write = os.write

    def short(fd: int, data: bytes) -> int:
        return real_write(fd, data[:25])

    monkeypatch.setattr(journal_module.os, "write", short)
    with pytest.raises(JournalError):
        journal.append([_event(2)])

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", full)
    with pytest.raises(JournalError):
        journal.append([_event(3)])
    monkeypatch.setattr(journal_module.os, "write", real_write)
    journal.append([_event(4)])
    assert journal.settle()
    assert _stored(engine) == ["req-1", "req-4"]
    journal.close()


def test_full_journal_files_are_rotated_stored_and_removed(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    journal = AuditJournal(store, journal_dir, rotate_bytes=4096)
    for i in range(30):
        journal.append([_event(i)])
    assert journal.settle()
    assert _stored(engine) == sorted(f"req-{i}" for i in range(30))
    journal.close()
    assert list(journal_dir.iterdir()) == []


def test_a_closed_journal_refuses_new_events(store: FhirStore, journal_dir: Path) -> None:
    journal = AuditJournal(store, journal_dir)
    journal.close()
    with pytest.raises(JournalError):
        journal.append([_event(1)])


def test_each_database_has_its_own_journal_folder(tmp_path: Path) -> None:
    one = journal_directory(tmp_path, "sqlite:////data/a.db")
    other = journal_directory(tmp_path, "postgresql+psycopg://cc@db/prod")
    assert one != other and one.parent == other.parent == tmp_path
    assert journal_directory(tmp_path, "sqlite:////data/a.db") == one


def test_a_stored_event_keeps_one_copy_of_its_content_and_reads_in_every_way(
    store: FhirStore, engine: Engine, journal_dir: Path
) -> None:
    """An AuditEvent never gets a second version: its version row shares the resource row's
    content instead of a copy, and vread and history still return it."""
    journal = AuditJournal(store, journal_dir)
    store.settle_audit = journal.settle
    journal.append([_event(7)])
    assert journal.settle()
    with engine.connect() as conn:
        res_id = conn.execute(
            select(resources.c.res_id).where(resources.c.res_type == "AuditEvent")
        ).scalar_one()
        copies = conn.execute(
            select(func.count())
            .select_from(resource_versions)
            .where(
                resource_versions.c.res_type == "AuditEvent",
                resource_versions.c.content.is_not(None),
            )
        ).scalar_one()
    assert copies == 0
    current = store.read("AuditEvent", res_id)
    assert store.vread("AuditEvent", res_id, 1).content == current.content
    for page in (store.history("AuditEvent", res_id), store.history("AuditEvent"), store.history()):
        (entry,) = [e for e in page.entries if e.resource.res_id == res_id]
        assert entry.method == "POST"
        assert entry.resource.content == current.content
        assert orjson.loads(entry.resource.content or b"{}")["entity"][1]["what"]["identifier"] == {
            "value": "req-7"
        }
    journal.close()
