"""Push conflicts a person resolves: list (CLI, JSON endpoint, status) and keep ours or theirs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from carecoord.app import create_app
from carecoord.cli import app as cli_app
from carecoord.fhir.store import FhirStore
from carecoord.jobs import Worker
from carecoord.settings import Settings
from carecoord.sync.config import SyncConfig
from carecoord.sync.conflicts import (
    ConflictNotFound,
    Keep,
    NothingToKeep,
    conflict_id,
    from_ehr_form,
    list_conflicts,
    parse_conflict_id,
    resolve_conflict,
)
from carecoord.sync.errors import TemporaryError
from carecoord.sync.identity import ReferenceMapper, local_id
from carecoord.sync.push import identifier_system
from carecoord.sync.runtime import SyncRuntime
from tests.auth.helpers import bearer, issue_token
from tests.sync import test_push
from tests.sync.conftest import Clock, Sleeps
from tests.sync.test_push import EHR, PATIENT, PushEhr, pushed, state, write_task

# The push tests' EHR (conditional create, If-Match), connection and store with its push hook.
configured, ehr, store, worker = (
    test_push.configured,
    test_push.ehr,
    test_push.store,
    test_push.worker,
)

CONFLICT = conflict_id(EHR, "Task", "task-1")


def conflicted(store: FhirStore, worker: Worker, ehr: PushEhr) -> None:
    """task-1 pushed (EHR id ehr-1), then changed on both sides in colliding ways."""
    pushed(store, worker)
    ehr.change("Task", "ehr-1", status="cancelled", statusReason={"text": "Patient declined"})
    write_task(store, status="in-progress")
    assert worker.run_once() == 1
    assert state(store.engine).conflict


def resolve(configured: Settings, engine: Engine, sleeps: Sleeps, clock: Clock, keep: Keep) -> str:
    async def go() -> str:
        runtime = SyncRuntime(
            configured, engine, config=SyncConfig({"max_retries": 0}), sleep=sleeps, clock=clock
        )
        try:
            client = await runtime.client(EHR)
            return await resolve_conflict(
                store=runtime.store, client=client, res_type="Task", local="task-1", keep=keep,
                clock=clock,
            )  # fmt: skip
        finally:
            await runtime.aclose()

    return asyncio.run(go())


def local_task(store: FhirStore) -> dict[str, Any]:
    stored = store.read("Task", "task-1")
    assert stored.content is not None
    body: dict[str, Any] = orjson.loads(stored.content)
    return body


# -- listing -------------------------------------------------------------------------------------


def test_conflicts_are_listed_by_cli_endpoint_and_status(
    configured: Settings, engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    assert list_conflicts(engine) == []
    conflicted(store, worker, ehr)
    (found,) = list_conflicts(engine)
    assert (found.id, found.ehr_id, found.local_version) == (CONFLICT, "ehr-1", 2)
    assert found.reason is not None and "status" in found.reason
    assert list_conflicts(engine, "other-ehr") == []

    app = create_app(configured, engine=engine)
    token = issue_token(engine, configured, "system/*.rs", client_id="ops")
    with TestClient(app, base_url="http://testserver", headers=bearer(token)) as api:
        body = api.get("/sync/conflicts").json()
        assert [c["id"] for c in body["conflicts"]] == [CONFLICT]
        assert body["conflicts"][0]["resource"] == "Task/task-1"
        assert "Patient declined" not in str(body)  # element names only, never values
        assert api.get("/sync/conflicts", params={"connection": "other"}).json() == {
            "conflicts": []
        }
        status = {c["connection"]: c for c in api.get("/sync/status").json()["connections"]}
        assert status[EHR]["conflicts"] == 1
    with TestClient(app, base_url="http://testserver") as anonymous:
        assert anonymous.get("/sync/conflicts").status_code == 401

    env = {"CARECOORD_DATABASE_URL": configured.database_url,
           "CARECOORD_CONFIG_DIR": str(configured.config_dir)}  # fmt: skip
    result = CliRunner().invoke(cli_app, ["sync", "conflicts", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [c["id"] for c in orjson.loads(result.stdout)["conflicts"]] == [CONFLICT]


def test_conflict_ids_round_trip_and_bad_ones_are_refused() -> None:
    assert parse_conflict_id(CONFLICT) == (EHR, "Task", "task-1")
    for bad in ("task-1", f"{EHR}:Patient/p1", f"{EHR}:Task/", "Task/task-1"):
        with pytest.raises(ValueError):
            parse_conflict_id(bad)


# -- keep ours -----------------------------------------------------------------------------------


def test_keep_ours_pushes_over_the_ehrs_current_version(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    conflicted(store, worker, ehr)
    assert resolve(configured, engine, sleeps, clock, Keep.OURS) == "ours"
    last = ehr.puts()[-1]
    assert last.headers["if-match"] == 'W/"2"'  # the EHR's version read just before
    assert last.body["status"] == "in-progress"
    assert ehr.fake.resources[("Task", "ehr-1")]["status"] == "in-progress"
    saved = state(engine)
    assert (saved.conflict, saved.pushed_version, saved.ehr_version) == (False, 2, "3")
    assert list_conflicts(engine) == []
    # Pushes flow again: the next local change is an ordinary If-Match update.
    write_task(store, status="completed")
    assert worker.run_once() == 1
    assert ehr.puts()[-1].headers["if-match"] == 'W/"3"'
    assert ehr.fake.resources[("Task", "ehr-1")]["status"] == "completed"


def test_keep_ours_recreates_a_resource_the_ehr_deleted(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    pushed(store, worker)
    ehr.gone.add(("Task", "ehr-1"))
    write_task(store, status="in-progress")
    assert worker.run_once() == 1
    assert state(engine).conflict
    del ehr.fake.resources[("Task", "ehr-1")]
    assert resolve(configured, engine, sleeps, clock, Keep.OURS) == "created"
    saved = state(engine)
    assert (saved.conflict, saved.ehr_id, saved.pushed_version) == (False, "ehr-2", 2)
    assert ehr.fake.resources[("Task", "ehr-2")]["status"] == "in-progress"


def test_keep_ours_when_the_ehr_changed_again_keeps_the_conflict(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    conflicted(store, worker, ehr)
    ehr.before_put = lambda: ehr.change("Task", "ehr-1", priority="urgent")
    with pytest.raises(TemporaryError, match="again"):
        resolve(configured, engine, sleeps, clock, Keep.OURS)
    assert state(engine).conflict
    assert ehr.fake.resources[("Task", "ehr-1")]["status"] == "cancelled"


# -- keep theirs ---------------------------------------------------------------------------------


def test_keep_theirs_takes_the_ehrs_version_into_our_store(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    conflicted(store, worker, ehr)
    puts_before = len(ehr.puts())
    assert resolve(configured, engine, sleeps, clock, Keep.THEIRS) == "theirs"
    task = local_task(store)
    assert task["status"] == "cancelled"
    assert task["statusReason"] == {"text": "Patient declined"}
    assert task["for"] == {"reference": f"Patient/{PATIENT}"}  # EHR id mapped back
    assert task["owner"] == {"reference": "Practitioner/nurse-1", "display": "Care coordinator"}
    assert "identifier" not in task  # our stable identifier is the push's, not the resource's
    assert store.read("Task", "task-1").version_id == 3
    saved = state(engine)
    assert (saved.conflict, saved.pushed_version, saved.ehr_version) == (False, 3, "2")
    assert len(ehr.puts()) == puts_before  # nothing was written to the EHR
    assert list_conflicts(engine) == []
    # Pushes flow again, based on the EHR's version we took.
    write_task(
        store,
        status="cancelled",
        statusReason={"text": "Patient declined"},
        note=[{"text": "Declined by phone"}],
    )
    assert worker.run_once() == 1
    last = ehr.puts()[-1]
    assert last.headers["if-match"] == 'W/"2"'
    assert last.body["note"] == [{"text": "Declined by phone"}]
    assert ehr.fake.resources[("Task", "ehr-1")]["statusReason"] == {"text": "Patient declined"}


def test_keep_theirs_of_a_deleted_ehr_copy_is_refused(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    pushed(store, worker)
    ehr.gone.add(("Task", "ehr-1"))
    write_task(store, status="in-progress")
    assert worker.run_once() == 1
    with pytest.raises(NothingToKeep, match="keep ours"):
        resolve(configured, engine, sleeps, clock, Keep.THEIRS)
    assert state(engine).conflict


def test_resolving_without_a_conflict_is_refused(
    configured: Settings,
    engine: Engine,
    store: FhirStore,
    worker: Worker,
    ehr: PushEhr,
    sleeps: Sleeps,
    clock: Clock,
) -> None:
    pushed(store, worker)
    with pytest.raises(ConflictNotFound):
        resolve(configured, engine, sleeps, clock, Keep.OURS)


def test_cli_resolve_keeps_theirs(
    configured: Settings, engine: Engine, store: FhirStore, worker: Worker, ehr: PushEhr
) -> None:
    conflicted(store, worker, ehr)
    env = {"CARECOORD_DATABASE_URL": configured.database_url,
           "CARECOORD_CONFIG_DIR": str(configured.config_dir),
           "CARECOORD_KEYS_DIR": str(configured.keys_dir)}  # fmt: skip
    runner = CliRunner()
    bad = runner.invoke(cli_app, ["sync", "conflicts", "resolve", CONFLICT, "--keep", "mine"],
                        env=env)  # fmt: skip
    assert bad.exit_code == 2
    done = runner.invoke(cli_app, ["sync", "conflicts", "resolve", CONFLICT, "--keep", "theirs"],
                         env=env)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "resolved (theirs)" in done.stdout
    assert local_task(store)["status"] == "cancelled"
    again = runner.invoke(cli_app, ["sync", "conflicts", "resolve", CONFLICT, "--keep", "ours"],
                          env=env)  # fmt: skip
    assert again.exit_code == 1
    assert "no open conflict" in again.output


# -- the EHR's form back to ours (pure) ----------------------------------------------------------


def test_from_ehr_form_maps_references_back_and_drops_our_identifier() -> None:
    mapper = ReferenceMapper(EHR, "https://ehr.example.org/fhir")
    theirs = {
        "resourceType": "Task",
        "id": "ehr-9",
        "meta": {"versionId": "4", "lastUpdated": "2030-01-01T00:00:00Z"},
        "identifier": [
            {"system": identifier_system("Task"), "value": "task-9"},
            {"system": "urn:ehr:task", "value": "T-1"},
        ],
        "for": {"reference": "Patient/p1"},
        "basedOn": [{"reference": "https://ehr.example.org/fhir/CarePlan/cp-7"}],
        "owner": {"type": "Practitioner",
                  "identifier": {"system": identifier_system("Practitioner"), "value": "n-1"}},
        "focus": {"reference": "#contained-1"},
    }  # fmt: skip
    current = {"resourceType": "Task", "id": "task-9",
               "meta": {"versionId": "2", "profile": ["http://example.org/p"]}}  # fmt: skip
    local = from_ehr_form(
        theirs, current, mapper=mapper, local_of={("CarePlan", "cp-7"): "our-careplan"}
    )
    assert local["id"] == "task-9"
    assert local["meta"] == {"profile": ["http://example.org/p"]}
    assert local["identifier"] == [{"system": "urn:ehr:task", "value": "T-1"}]
    assert local["for"] == {"reference": f"Patient/{local_id(EHR, 'Patient', 'p1')}"}
    assert local["basedOn"] == [{"reference": "CarePlan/our-careplan"}]
    assert local["owner"] == {"reference": "Practitioner/n-1"}
    assert local["focus"] == {"reference": "#contained-1"}
