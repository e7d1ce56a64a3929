"""Sync status (function, ``GET /sync/status``), the saved circuit, and the ``sync.pull`` job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.db import run_write
from carecoord.fhir.access import AccessPolicy, Agent
from carecoord.jobs import Registry, Worker, get_job, list_jobs
from carecoord.settings import Settings
from carecoord.sync.config import SyncConfig, parse_population
from carecoord.sync.errors import CircuitOpen, EhrServerError, TemporaryError
from carecoord.sync.handlers import PULL_KIND, PullHandler, enqueue_pull, register_handlers
from carecoord.sync.routes import _may_see_status, install
from carecoord.sync.status import sync_status
from tests.auth.helpers import bearer, issue_token
from tests.sync.conftest import CONNECTION, Clock, RuntimeFactory, run
from tests.sync.ehr_data import seed
from tests.sync.fake_fhir import FakeFhir

pytestmark = pytest.mark.usefixtures("ehr_http")
P1_P2 = parse_population("patients:p1,p2")


def pull(runtime: Any) -> None:
    async def go() -> None:
        try:
            await runtime.pull(CONNECTION, P1_P2)
        finally:
            await runtime.aclose()

    run(go())


def test_status_after_a_success_and_a_failure(
    fake: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, clock: Clock
) -> None:
    seed(fake)
    pull(make_runtime())
    clock.now += timedelta(minutes=10)
    fake.failures = [httpx.Response(503)]
    with pytest.raises(EhrServerError):
        pull(make_runtime(max_retries=0))
    clock.now += timedelta(minutes=5)
    run_write(engine, lambda conn: enqueue_pull(conn, connection=CONNECTION, slot="x"))

    (status,) = sync_status(engine, [CONNECTION], clock=clock)
    assert status.configured
    assert status.lag_seconds == pytest.approx(15 * 60)
    assert status.consecutive_failures == 1 and status.total_failures == 1
    assert status.last_error is not None and "503" in status.last_error
    assert status.queue.ready == 1
    assert status.circuit == "closed"
    (population,) = status.populations
    assert population.last_status == "failed" and population.last_success is not None
    body = status.as_json()
    assert body["queue"]["ready"] == 1 and body["failures"] == {"consecutive": 1, "total": 1}


def test_an_open_circuit_is_saved_and_restored(
    fake: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, clock: Clock
) -> None:
    fake.failures = [httpx.Response(503)]
    with pytest.raises(TemporaryError):  # the 503, or the circuit it opened for another type
        pull(make_runtime(max_retries=0, circuit_failures=1, circuit_cooldown_seconds=60))
    config = SyncConfig({"circuit_cooldown_seconds": 60})
    assert sync_status(engine, [CONNECTION], config=config, clock=clock)[0].circuit == "open"
    before = len(fake.requests)
    with pytest.raises(CircuitOpen):  # another process: fails fast, no request to the EHR
        pull(make_runtime(max_retries=0, circuit_failures=1, circuit_cooldown_seconds=60))
    assert [r.path for r in fake.requests[before:]] == ["/fhir/.well-known/smart-configuration"]
    clock.now += timedelta(seconds=61)
    assert sync_status(engine, [CONNECTION], config=config, clock=clock)[0].circuit == "half-open"
    seed(fake)
    pull(make_runtime(max_retries=0, circuit_failures=1, circuit_cooldown_seconds=60))
    assert sync_status(engine, [CONNECTION], config=config, clock=clock)[0].circuit == "closed"


def test_status_endpoint_needs_authentication(
    fake: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, connected: Settings
) -> None:
    seed(fake)
    pull(make_runtime())
    app = create_app(connected, engine=engine)
    install(app, connected, engine)
    install(app, connected, engine)  # idempotent
    token = issue_token(engine, connected, "system/*.rs")
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get("/sync/status").status_code == 401
        answer = client.get("/sync/status", headers=bearer(token))
    assert answer.status_code == 200
    (connection,) = answer.json()["connections"]
    assert connection["connection"] == CONNECTION and connection["circuit"] == "closed"
    assert connection["last_success"].endswith("Z") and connection["last_error"] is None


def test_patient_scopes_alone_may_not_see_sync_status() -> None:
    agent = Agent("user", "Practitioner/1")
    assert not _may_see_status(AccessPolicy.from_scope_string("patient/*.rs", agent))
    assert _may_see_status(AccessPolicy.from_scope_string("user/Patient.rs", agent))
    assert _may_see_status(AccessPolicy.from_scope_string("system/*.rs", agent))


# -- the sync.pull job -----------------------------------------------------------------------------


def _worker(engine: Engine, settings: Settings, clock: Clock) -> Worker:
    registry = Registry()
    register_handlers(registry, settings=settings)
    return Worker(engine, registry, clock=clock)


def test_the_pull_job_pulls(
    fake: FakeFhir, engine: Engine, connected: Settings, clock: Clock
) -> None:
    seed(fake)
    job_id = run_write(
        engine,
        lambda conn: enqueue_pull(
            conn, connection=CONNECTION, population="patients:p1,p2", slot="12:00"
        ),
    )
    again = run_write(
        engine,
        lambda conn: enqueue_pull(
            conn, connection=CONNECTION, population="patients:p1,p2", slot="12:00"
        ),
    )
    assert job_id is not None and again is None  # once per slot
    assert _worker(engine, connected, clock).run_once() == 1
    job = get_job(engine, job_id)
    assert job is not None and job.status == "done" and job.connection == CONNECTION
    (status,) = sync_status(engine, [CONNECTION], clock=clock)
    assert status.last_success is not None


def test_a_temporary_failure_reschedules_the_job_after_retry_after(
    fake: FakeFhir, engine: Engine, connected: Settings, clock: Clock
) -> None:
    fake.failures = [httpx.Response(429, headers={"Retry-After": "600"})]
    job_id = run_write(
        engine, lambda conn: enqueue_pull(conn, connection=CONNECTION, population="patients:p1")
    )
    assert job_id is not None
    _worker(engine, connected, clock).run_once()
    job = get_job(engine, job_id)
    assert job is not None and job.status == "ready" and job.last_error is not None
    assert "429" in job.last_error
    assert (job.run_at - clock()).total_seconds() == pytest.approx(600, abs=1)


def test_a_fatal_failure_dead_letters_the_job(
    engine: Engine, connected: Settings, clock: Clock
) -> None:
    run_write(engine, lambda conn: enqueue_pull(conn, connection="no-such-ehr"))
    _worker(engine, connected, clock).run_once()
    (job,) = list_jobs(engine, statuses=("dead",))
    assert job.last_error is not None and "no-such-ehr" in job.last_error


def test_register_handlers_twice_updates_the_settings(connected: Settings) -> None:
    registry = Registry()
    register_handlers(registry)
    register_handlers(registry, settings=connected)
    handler = registry.get(PULL_KIND)
    assert isinstance(handler, PullHandler) and handler.settings is connected


def test_importing_autoregister_registers_the_pull_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    import carecoord.jobs

    fresh = Registry()
    monkeypatch.setattr(carecoord.jobs, "default_registry", fresh)
    monkeypatch.delitem(sys.modules, "carecoord.sync.autoregister", raising=False)
    importlib.import_module("carecoord.sync.autoregister")
    assert isinstance(fresh.get(PULL_KIND), PullHandler)
