"""The server's in-process worker: started and stopped with the application's lifespan."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, cast

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.db import run_write
from carecoord.jobs import JobContext, Registry, enqueue
from carecoord.jobs.runtime import InProcessWorker, install
from carecoord.settings import Settings
from tests.jobs.conftest import job


def test_the_app_runs_a_worker_while_it_is_up(engine: Engine, settings: Settings) -> None:
    ran = threading.Event()

    def fn(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.set()

    registry = Registry()
    registry.register("k", fn)
    enabled = settings.model_copy(update={"run_worker_in_process": True})
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install(app, enabled, engine, registry, poll_interval=0.02)
    install(app, enabled, engine, registry)  # a second call changes nothing
    runtime: InProcessWorker = app.state.jobs
    assert not runtime.running
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert runtime.running
        job_id = run_write(engine, lambda conn: enqueue(conn, kind="k", payload={}))
        assert ran.wait(5)
    assert not runtime.running
    assert job(engine, job_id).status == "done"


def test_create_app_runs_the_worker_only_when_configured(
    engine: Engine, settings: Settings
) -> None:
    assert not create_app(settings, engine=engine).state.jobs.enabled
    enabled = settings.model_copy(update={"run_worker_in_process": True})
    assert create_app(enabled, engine=engine).state.jobs.enabled


def test_the_worker_can_be_left_to_separate_processes(engine: Engine) -> None:
    settings = cast(Settings, SimpleNamespace(run_worker_in_process=False))
    app = FastAPI()
    install(app, settings, engine, Registry(), poll_interval=0.02)
    with TestClient(app):
        assert not app.state.jobs.running
