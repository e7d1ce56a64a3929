"""Push to an EHR: conditional create, If-Match updates, merges and conflicts on 412/409."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import respx
from sqlalchemy import Engine, func, select

from carecoord.fhir.store import FhirStore, StoredResource
from carecoord.jobs import JobInfo, Registry, Worker, enqueue, get_job, list_jobs
from carecoord.jobs.clock import Clock as JobClock
from carecoord.jobs.tables import jobs
from carecoord.settings import Settings
from carecoord.smart.connections import load_connections
from carecoord.sync.config import SyncConfig
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, Pulled, local_id, save_pulled
from carecoord.sync.push import (
    PUSH_KIND,
    PushHook,
    PushState,
    enqueue_push,
    identifier_system,
    load_state,
    register_push_handlers,
    three_way_merge,
)
from carecoord.sync.push_tables import push_state
from carecoord.sync.runtime import SyncRuntime
from tests.sync.conftest import Clock, Sleeps, write_connection
from tests.sync.fake_fhir import FakeFhir

EHR = "push-ehr"
READ_ONLY = "ro-ehr"
PATIENT = local_id(EHR, "Patient", "p1")


# -- the EHR's write side ------------------------------------------------------------------------


@dataclass
class Write:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class PushEhr:
    """FakeFhir plus conditional create (``If-None-Exist: identifier=``) and ``If-Match`` PUT."""

    fake: FakeFhir
    writes: list[Write] = field(default_factory=list)
    created: int = 0
    precondition_status: int = 412
    before_put: Callable[[], None] | None = None  # e.g. a change racing with our PUT
    gone: set[tuple[str, str]] = field(default_factory=set)

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
        return httpx.Response(
            status,
            content=orjson.dumps(body),
            headers={"Content-Type": "application/fhir+json", **(headers or {})},
        )

    def _stored(self, status: int, stored: dict[str, Any], **headers: str) -> httpx.Response:
        version = stored["meta"]["versionId"]
        return self._answer(status, stored, {"ETag": f'W/"{version}"', **headers})

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = urlsplit(str(request.url)).path
        parts = [p for p in path.split("/") if p][1:]
        if request.method == "GET" and len(parts) == 2 and tuple(parts) in self.gone:
            return self._answer(410, {"resourceType": "OperationOutcome"})
        if request.method not in ("POST", "PUT") or not path.startswith("/fhir/"):
            return self.fake.handle(request)
        if self.fake.failures:
            failure = self.fake.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        body = orjson.loads(request.content)
        self.writes.append(Write(request.method, path, dict(request.headers), body))
        if request.method == "POST":
            return self._create(parts[0], request.headers.get("if-none-exist", ""), body)
        key = (parts[0], parts[1])
        if self.before_put is not None:
            self.before_put()
        if key in self.gone:
            return self._answer(410, {"resourceType": "OperationOutcome"})
        current = self.fake.resources.get(key)
        if current is not None and request.headers.get("if-match") != (
            f'W/"{current["meta"]["versionId"]}"'
        ):
            return self._answer(self.precondition_status, {"resourceType": "OperationOutcome"})
        return self._stored(200, self.fake.put(body))

    def _create(self, res_type: str, condition: str, body: dict[str, Any]) -> httpx.Response:
        name, _, value = condition.partition("=")
        assert name == "identifier"
        system, _, code = value.partition("|")
        matches = [
            r
            for (t, _), r in self.fake.resources.items()
            if t == res_type
            and any(i.get("system") == system and i.get("value") == code for i in r["identifier"])
        ]
        if len(matches) > 1:
            return self._answer(412, {"resourceType": "OperationOutcome"})
        if matches:
            return self._stored(200, matches[0])
        self.created += 1
        stored = self.fake.put({**body, "id": f"ehr-{self.created}"})
        location = f"{self.fake.fhir_base}/{res_type}/{stored['id']}/_history/1"
        return self._stored(201, stored, Location=location)

    def change(self, res_type: str, ehr_id: str, **elements: Any) -> None:
        """A change made in the EHR (a new version)."""
        self.fake.put({**self.fake.resources[(res_type, ehr_id)], **elements})

    def puts(self) -> list[Write]:
        return [w for w in self.writes if w.method == "PUT"]

    def posts(self) -> list[Write]:
        return [w for w in self.writes if w.method == "POST"]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def ehr(fake: FakeFhir) -> Iterator[PushEhr]:
    push_ehr = PushEhr(fake)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="ehr.example.org").mock(side_effect=push_ehr.handle)
        yield push_ehr


@pytest.fixture
def configured(settings: Settings, fake: FakeFhir) -> Settings:
    write_connection(
        settings,
        EHR,
        iss=fake.fhir_base,
        client_id="cc-backend",
        read_only=False,
        backend_scope="system/*.cruds",
    )
    write_connection(settings, READ_ONLY, iss="https://ro.example.org/fhir", client_id="cc")
    return settings


@pytest.fixture
def store(engine: Engine, configured: Settings) -> FhirStore:
    """The store with the push hook; the EHR's patient p1 already pulled."""
    store = FhirStore(engine, group_commit=False)
    with engine.begin() as conn:
        save_pulled(conn, EHR, [Pulled("Patient", "p1", "1", None)], now=0)
    store.update(
        "Patient",
        PATIENT,
        {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": SOURCE_TAG_SYSTEM, "code": EHR}]},
            "name": [{"family": "Doe"}],
        },
    )
    store.on_written = PushHook(load_connections(configured.config_dir))
    return store


@pytest.fixture
def worker(
    engine: Engine, configured: Settings, sleeps: Sleeps, clock: Clock, ehr: PushEhr
) -> Worker:
    def runtime(settings: Settings, engine: Engine, job_clock: JobClock) -> SyncRuntime:
        config = SyncConfig({"max_retries": 1, "backoff_base_seconds": 0})
        return SyncRuntime(settings, engine, config=config, sleep=sleeps, clock=job_clock)

    registry = Registry()
    register_push_handlers(registry, settings=configured, runtime_factory=runtime)
    return Worker(engine, registry, clock=clock, backoff_base=1, backoff_cap=1)


def task(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "for": {"reference": f"Patient/{PATIENT}"},
        "owner": {"reference": "Practitioner/nurse-1", "display": "Care coordinator"},
        "description": "Follow-up call within 2 business days",
        **extra,
    }


def write_task(store: FhirStore, res_id: str = "task-1", **extra: Any) -> StoredResource:
    return store.update("Task", res_id, task(**extra)).resource


def push_jobs(engine: Engine) -> list[JobInfo]:
    return list_jobs(engine, statuses=("ready", "running", "done", "dead"), kind=PUSH_KIND)


def state(engine: Engine, res_id: str = "task-1") -> PushState:
    with engine.connect() as conn:
        found = load_state(conn, EHR, "Task", res_id)
    assert found is not None
    return found


def pushed(store: FhirStore, worker: Worker, **extra: Any) -> StoredResource:
    """Task task-1 written and pushed once (EHR id ehr-1, version 1)."""
    stored = write_task(store, **extra)
    assert worker.run_once() == 1
    return stored


# -- tests ---------------------------------------------------------------------------------------


def test_three_way_merge_keeps_both_sides_and_names_collisions() -> None:
    base = {"resourceType": "Task", "status": "requested", "priority": "routine", "note": [1]}
    ours = {**base, "status": "in-progress"}
    theirs = {**base, "id": "e1", "priority": "urgent", "note": [1, 2]}
    merged, collisions = three_way_merge(base, ours, theirs)
    assert collisions == []
    assert merged == {
        "resourceType": "Task",
        "id": "e1",
        "status": "in-progress",
        "priority": "urgent",
        "note": [1, 2],
    }
    dropped = {k: v for k, v in theirs.items() if k != "note"}
    merged, _ = three_way_merge(base, ours, dropped)
    assert "note" not in merged  # removed in the EHR only: stays removed
    _, collisions = three_way_merge(base, ours, {**theirs, "status": "cancelled"})
    assert collisions == ["status"]
    _, collisions = three_way_merge(None, ours, {**ours, "priority": "urgent"})
    assert collisions == ["priority"]  # no base: any difference is a collision


def test_conditional_create_sends_if_none_exist_and_records_the_ehr_id(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    write_task(store)
    assert worker.run_once() == 1

    (post,) = ehr.writes
    assert post.method == "POST" and post.path == "/fhir/Task"
    system = identifier_system("Task")
    assert post.headers["if-none-exist"] == f"identifier={system}|task-1"
    assert "id" not in post.body and "meta" not in post.body
    assert post.body["for"] == {"reference": "Patient/p1"}  # the EHR's own patient id
    assert post.body["owner"] == {  # our practitioner: a logical reference
        "display": "Care coordinator",
        "type": "Practitioner",
        "identifier": {"system": identifier_system("Practitioner"), "value": "nurse-1"},
    }
    assert {"system": system, "value": "task-1"} in post.body["identifier"]
    saved = state(engine)
    assert (saved.ehr_id, saved.ehr_version, saved.pushed_version, saved.conflict) == (
        "ehr-1",
        "1",
        1,
        False,
    )
    assert [j.status for j in push_jobs(engine)] == ["done"]


def test_an_update_sends_if_match(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    pushed(store, worker)
    write_task(store, status="in-progress")
    assert worker.run_once() == 1

    (put,) = ehr.puts()
    assert put.path == "/fhir/Task/ehr-1"
    assert put.headers["if-match"] == 'W/"1"'
    assert put.body["id"] == "ehr-1" and put.body["status"] == "in-progress"
    saved = state(engine)
    assert (saved.ehr_version, saved.pushed_version) == ("2", 2)
    assert len(ehr.posts()) == 1


@pytest.mark.parametrize("status", [412, 409])
def test_a_precondition_failure_with_a_change_that_does_not_collide_is_merged(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr, status: int
) -> None:
    ehr.precondition_status = status
    pushed(store, worker)
    ehr.change("Task", "ehr-1", priority="urgent")  # the EHR's change (version 2)
    write_task(store, status="in-progress")  # ours
    assert worker.run_once() == 1

    first, merged = ehr.puts()
    assert first.headers["if-match"] == 'W/"1"'
    assert merged.headers["if-match"] == 'W/"2"'
    assert merged.body["priority"] == "urgent"  # the EHR's change kept
    assert merged.body["status"] == "in-progress"  # ours applied
    assert ehr.fake.resources[("Task", "ehr-1")]["meta"]["versionId"] == "3"
    saved = state(engine)
    assert (saved.ehr_version, saved.pushed_version, saved.conflict) == ("3", 2, False)
    assert push_jobs(engine)[-1].status == "done"


@pytest.mark.parametrize("status", [412, 409])
def test_a_colliding_change_records_a_conflict_and_overwrites_nothing(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr, status: int
) -> None:
    ehr.precondition_status = status
    pushed(store, worker)
    ehr.change("Task", "ehr-1", status="cancelled")
    write_task(store, status="in-progress")
    assert worker.run_once() == 1

    assert len(ehr.puts()) == 1  # the refused one; no merged PUT
    assert ehr.fake.resources[("Task", "ehr-1")]["status"] == "cancelled"
    saved = state(engine)
    assert saved.conflict and saved.conflict_reason is not None
    assert "status" in saved.conflict_reason and "in-progress" not in saved.conflict_reason
    job = push_jobs(engine)[-1]
    assert job.status == "dead" and job.last_error is not None
    assert job.last_error.startswith("Fatal: conflict:")

    # Later versions are held until a person resolves the conflict.
    write_task(store, status="completed")
    assert worker.run_once() == 1
    assert len(ehr.puts()) == 1
    assert push_jobs(engine)[-1].status == "dead"


def test_a_resource_deleted_in_the_ehr_is_a_conflict(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    pushed(store, worker)
    ehr.gone.add(("Task", "ehr-1"))
    write_task(store, status="in-progress")
    assert worker.run_once() == 1
    saved = state(engine)
    assert saved.conflict and "deleted" in (saved.conflict_reason or "")
    assert push_jobs(engine)[-1].status == "dead"


def test_read_only_connections_and_pulled_resources_get_no_job(
    engine: Engine, store: FhirStore
) -> None:
    write_task(store)
    assert [j.connection for j in push_jobs(engine)] == [EHR]
    tag = {"tag": [{"system": SOURCE_TAG_SYSTEM, "code": EHR}]}
    write_task(store, "from-ehr", meta=tag)
    store.update("Patient", "local-patient", {"resourceType": "Patient"})
    assert len(push_jobs(engine)) == 1


def test_a_duplicate_enqueue_makes_one_job(engine: Engine, store: FhirStore) -> None:
    stored = write_task(store)  # the hook queued it
    connections = store.on_written.connections  # type: ignore[union-attr]
    again = store.write(lambda w: enqueue_push(w, stored, connections=connections))
    assert again == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1


def test_a_temporary_error_is_retried(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr, clock: Clock
) -> None:
    ehr.fake.failures = [httpx.Response(503), httpx.Response(503)]
    write_task(store)
    assert worker.run_once() == 1
    (job,) = push_jobs(engine)
    assert job.status == "ready" and job.attempts == 1
    assert job.last_error is not None and "503" in job.last_error
    assert ehr.writes == []

    clock.now = clock.now.replace(hour=13)
    assert worker.run_once() == 1
    assert get_job(engine, job.id).status == "done"  # type: ignore[union-attr]
    assert len(ehr.posts()) == 1 and state(engine).ehr_id == "ehr-1"


def test_replaying_a_push_after_success_creates_nothing_twice(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    pushed(store, worker)
    payload = {"connection": EHR, "type": "Task", "id": "task-1", "version": 1}
    with engine.begin() as conn:
        enqueue(conn, kind=PUSH_KIND, payload=payload, connection=EHR)
    assert worker.run_once() == 1
    assert len(ehr.writes) == 1  # already pushed: skipped

    # The push happened but its result was lost (crash before push_state was written).
    with engine.begin() as conn:
        conn.execute(jobs.delete())
        conn.execute(push_state.delete())
        enqueue(conn, kind=PUSH_KIND, payload=payload, connection=EHR)
    assert worker.run_once() == 1
    assert ehr.created == 1 and len(ehr.fake.resources) == 1
    assert state(engine).ehr_id == "ehr-1"
    assert push_jobs(engine)[-1].status == "done"


def test_a_subject_the_ehr_does_not_know_dead_letters_the_push(
    engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    store.update("Task", "task-2", task(**{"for": {"reference": "Patient/ours-only"}}))
    assert worker.run_once() == 1
    (job,) = push_jobs(engine)
    assert job.status == "dead" and "subject" in (job.last_error or "")
    assert ehr.writes == []
