"""Enqueue as an outbox (atomic with the store's writes), dedup keys, listing, purge, stats."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from carecoord.db import read_connection, run_write
from carecoord.fhir.store import FhirStore, Writer
from carecoord.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    InvalidJob,
    Registry,
    Worker,
    enqueue,
    list_dead,
    list_jobs,
    purge_done,
    stats,
)
from carecoord.jobs.tables import jobs
from tests.fhir import factories
from tests.jobs.conftest import START, Add, FakeClock, job


def _count(engine: Engine) -> int:
    with read_connection(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


class Boom(Exception):
    pass


def test_enqueue_rolls_back_with_the_store_transaction(engine: Engine, store: FhirStore) -> None:
    def work(writer: Writer) -> None:
        created = writer.create("Patient", factories.patient(), res_id="outbox-1")
        enqueue(writer.conn, kind="ehr.push", payload={"ref": f"Patient/{created.resource.res_id}"})
        raise Boom

    with pytest.raises(Boom):
        store.write(work)
    assert _count(engine) == 0
    assert store.write(lambda w: w.find("Patient", [("_id", "outbox-1")])) == []


def test_enqueue_commits_with_the_store_transaction(engine: Engine, store: FhirStore) -> None:
    def work(writer: Writer) -> int | None:
        writer.create("Patient", factories.patient(), res_id="outbox-2")
        return enqueue(
            writer.conn, kind="ehr.push", payload={"ref": "Patient/outbox-2"}, connection="epic"
        )

    job_id = store.write(work)
    assert _count(engine) == 1
    info = job(engine, job_id)
    assert (info.kind, info.status, info.attempts, info.connection) == (
        "ehr.push",
        "ready",
        0,
        "epic",
    )
    assert info.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert store.read("Patient", "outbox-2").version_id == 1


def test_same_key_twice_is_one_job(engine: Engine, add: Add) -> None:
    first = add(kind="ehr.push", key="Task/1:v1", payload={"n": 1})
    assert first is not None
    assert add(kind="ehr.push", key="Task/1:v1", payload={"n": 2}) is None
    # In one transaction too (no error that would abort a PostgreSQL transaction).
    ids = run_write(
        engine,
        lambda conn: [
            enqueue(conn, kind="ehr.push", key="Task/2:v1", payload={}),
            enqueue(conn, kind="ehr.push", key="Task/2:v1", payload={}),
        ],
    )
    assert ids[0] is not None and ids[1] is None
    # The key is per kind; jobs without a key never collide.
    assert add(kind="notify", key="Task/1:v1") is not None
    assert add(kind="ehr.push") is not None
    assert add(kind="ehr.push") is not None
    assert _count(engine) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": ""},
        {"kind": "x" * 65},
        {"kind": "push to ehr"},
        {"kind": "k", "key": ""},
        {"kind": "k", "max_attempts": 0},
        {"kind": "k", "payload": {"when": object()}},
        {"kind": "k", "connection": "c" * 65},
        {"kind": "k", "run_at": START.replace(tzinfo=None)},
    ],
)
def test_invalid_jobs_are_refused(migrated_engine: Engine, kwargs: dict[str, Any]) -> None:
    # Refused before any SQL runs, so the shared engine needs no emptying.
    kwargs.setdefault("payload", {})
    with pytest.raises(InvalidJob), migrated_engine.connect() as conn:
        enqueue(conn, **kwargs)


def test_list_and_purge(engine: Engine, add: Add, clock: FakeClock) -> None:
    done_id = add(kind="a")
    ready_id = add(kind="b", run_at=START + timedelta(hours=1))
    registry = Registry()
    registry.register("a", lambda payload, ctx: None)
    Worker(engine, registry, clock=clock).run_once()
    assert job(engine, done_id).status == "done"
    assert [j.id for j in list_jobs(engine)] == [ready_id]
    assert [j.id for j in list_jobs(engine, statuses=("done",))] == [done_id]
    assert list_dead(engine) == []
    with pytest.raises(InvalidJob):
        list_jobs(engine, statuses=("finished",))
    assert purge_done(engine, older_than=timedelta(days=1), clock=clock) == 0
    clock.advance(2 * 86400)
    assert purge_done(engine, older_than=timedelta(days=1), clock=clock) == 1
    assert [j.id for j in list_jobs(engine, statuses=("ready", "done"))] == [ready_id]


def test_stats_per_kind_and_connection(engine: Engine, add: Add, clock: FakeClock) -> None:
    add(kind="ehr.push", connection="epic")
    clock.advance(60)
    add(kind="ehr.push", connection="epic", run_at=START + timedelta(hours=1))
    add(kind="ehr.push", connection="cerner")
    add(kind="notify")
    dead_id = add(kind="ehr.pull", connection="epic", max_attempts=1)
    registry = Registry()

    def fail(payload: object, ctx: object) -> None:
        raise ConnectionError("EHR unreachable")

    registry.register("ehr.pull", fail)
    clock.advance(30)
    Worker(engine, registry, clock=clock).run_once()
    assert job(engine, dead_id).status == "dead"

    result = stats(engine, clock=clock)
    push = result.by_kind["ehr.push"]
    assert (push.ready, push.due, push.running, push.dead) == (3, 2, 0, 0)
    assert push.oldest_ready_age == pytest.approx(90.0)
    assert push.last_error is None
    epic = result.by_connection["epic"]
    assert (epic.ready, epic.due, epic.dead) == (2, 1, 1)
    assert epic.last_error == "ConnectionError: EHR unreachable"
    assert epic.last_error_at == clock()
    assert result.by_connection["cerner"].ready == 1
    assert set(result.by_connection) == {"cerner", "epic"}
    assert result.by_kind["notify"].ready == 1
    assert (result.total.ready, result.total.dead) == (4, 1)
    assert result.total.last_error == "ConnectionError: EHR unreachable"


def test_stats_of_an_empty_queue(engine: Engine) -> None:
    result = stats(engine)
    assert result.by_kind == {} and result.by_connection == {}
    assert result.total.ready == 0 and result.total.oldest_ready_age is None


def test_enqueue_many_adds_jobs_in_one_statement_and_skips_queued_keys(engine: Engine) -> None:
    from carecoord.jobs import JobSpec, enqueue_many

    specs = [JobSpec("demo.kind", {"n": n}, key=f"k{n}") for n in range(3)]
    with engine.begin() as conn:
        enqueue_many(conn, specs)
        enqueue_many(conn, [*specs, JobSpec("demo.kind", {"n": 9}, key="k9")])
    queued = list_jobs(engine, kind="demo.kind")
    assert sorted(j.key or "" for j in queued) == ["k0", "k1", "k2", "k9"]
    with engine.begin() as conn, pytest.raises(InvalidJob, match="run_at"):
        enqueue_many(conn, [JobSpec("demo.kind", {}, run_at=datetime(2030, 1, 1))])
