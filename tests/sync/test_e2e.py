"""End to end over real sockets: a second CareCoord, with its own SQLite database, plays the EHR
on 127.0.0.1 (its FHIR API, its ``/auth/token`` and SMART discovery); this CareCoord registers as
its backend-services client and pulls Patients and Encounters (and what they refer to)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.auth.clients import add_client
from carecoord.db import make_engine, read_connection
from carecoord.fhir.store import FhirStore
from carecoord.jobs import Registry, Worker, list_jobs
from carecoord.migrate import upgrade
from carecoord.settings import Settings
from carecoord.smart.keys import KeyStore
from carecoord.sync.config import parse_population
from carecoord.sync.identity import local_id, source_reference
from carecoord.sync.pull import PullReport
from carecoord.sync.push import identifier_system, register_push_handlers
from carecoord.sync.runtime import SyncRuntime
from tests.sync.conftest import copy_app_config, run, write_connection, write_sync_config

CONNECTION = "other-carecoord"
CLIENT_ID = "carecoord-sync"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RemoteEhr:
    url: str
    fhir_base: str
    store: FhirStore


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _chart(store: FhirStore) -> None:
    store.update("Organization", "hosp", {"resourceType": "Organization", "name": "St. Elsewhere"})
    store.update(
        "Practitioner", "doc", {"resourceType": "Practitioner", "name": [{"family": "Ehrlich"}]}
    )
    ward = {"resourceType": "Location", "name": "Ward 4"}
    store.update("Location", "ward-4", {**ward, "managingOrganization": ref("Organization/hosp")})
    for n in range(1, 8):
        store.update(
            "Patient",
            f"pat-{n}",
            {
                "resourceType": "Patient",
                "name": [{"family": f"Zyxwvut{n}", "given": ["Quen"]}],
                "generalPractitioner": [ref("Practitioner/doc")],
            },
        )
        for k in range(2):
            store.update(
                "Encounter",
                f"enc-{n}-{k}",
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "IMP"},
                    "subject": {"reference": f"Patient/pat-{n}"},
                    "participant": [{"individual": {"reference": "Practitioner/doc"}}],
                    "location": [{"location": {"reference": "Location/ward-4"}}],
                    "serviceProvider": {"reference": "Organization/hosp"},
                },
            )


@pytest.fixture
def remote_ehr(tmp_path: Path, settings: Settings) -> Iterator[RemoteEhr]:
    """The other CareCoord under uvicorn, with our service registered as its system client."""
    folder = tmp_path / "remote"
    copy_app_config(folder / "config")
    remote_settings = Settings(
        database_url=f"sqlite:///{folder / 'ehr.db'}",
        data_dir=folder,
        config_dir=folder / "config",
        secret_key="remote-ehr-secret-key-0123456789abcdef-0123",
        run_worker_in_process=False,
        audit_store_process=False,
    )
    engine = make_engine(remote_settings.effective_database_url)
    upgrade(engine)
    ours = KeyStore(settings.effective_keys_dir).jwks()
    add_client(
        engine, client_id=CLIENT_ID, name="CareCoord sync", scope="system/*.cruds", jwks=ours
    )
    store = FhirStore(engine)
    _chart(store)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(remote_settings, engine=engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="remote-ehr", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the remote EHR did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        yield RemoteEhr(url, f"{url}/fhir", store)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def _pull(settings: Settings, engine: Engine, population: str) -> PullReport:
    async def go() -> PullReport:
        runtime = SyncRuntime(settings, engine)
        try:
            (report,) = await runtime.pull(CONNECTION, parse_population(population))
            return report
        finally:
            await runtime.aclose()

    return run(go())


def _local(engine: Engine, res_type: str, source_id: str) -> dict[str, Any]:
    stored = FhirStore(engine).read(res_type, local_id(CONNECTION, res_type, source_id))
    assert stored.content is not None
    body: dict[str, Any] = orjson.loads(stored.content)
    return body


def test_pull_from_another_carecoord_over_http(
    remote_ehr: RemoteEhr, settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="carecoord")
    write_connection(settings, CONNECTION, iss=remote_ehr.fhir_base, client_id=CLIENT_ID)
    write_sync_config(
        settings,
        "[connections.other-carecoord]\n"
        'types = ["Patient", "Encounter", "Practitioner", "Location", "Organization"]\n'
        "page_size = 4\nids_per_search = 3\n",
    )
    patients = "patients:" + ",".join(f"pat-{n}" for n in range(1, 7))  # pat-7 is not ours
    report = _pull(settings, engine, patients)
    assert report.by_type["Patient"].written == 6
    assert report.by_type["Encounter"].written == 12
    assert report.counts.written == 6 + 12 + 3 and report.counts.rejected == 0
    # Each pulled Encounter is an event for automation, queued once per version.
    assert len(list_jobs(engine, kind="automation.encounter")) == 12

    enc = _local(engine, "Encounter", "enc-3-1")
    assert enc["subject"]["reference"] == f"Patient/{local_id(CONNECTION, 'Patient', 'pat-3')}"
    assert enc["location"][0]["location"]["reference"] == (
        f"Location/{local_id(CONNECTION, 'Location', 'ward-4')}"
    )
    assert enc["meta"]["source"] == f"{remote_ehr.fhir_base}/Encounter/enc-3-1"
    ward = _local(engine, "Location", "ward-4")
    assert ward["managingOrganization"]["reference"].endswith(
        local_id(CONNECTION, "Organization", "hosp")
    )
    with pytest.raises(Exception, match="not found"):
        _local(engine, "Patient", "pat-7")

    # a change at the EHR, then an incremental pull: only the change comes, and updates in place
    changed = orjson.loads(remote_ehr.store.read("Encounter", "enc-2-0").content or b"{}")
    changed["status"] = "entered-in-error"
    remote_ehr.store.update("Encounter", "enc-2-0", changed)
    again = _pull(settings, engine, patients)
    assert again.counts.written == 1 and again.by_type["Encounter"].written == 1
    assert _local(engine, "Encounter", "enc-2-0")["status"] == "entered-in-error"
    assert _local(engine, "Encounter", "enc-2-0")["meta"]["versionId"] == "2"
    assert len(list_jobs(engine, kind="automation.encounter")) == 13  # the cancel, once

    # what a push needs: the EHR's id of a local resource
    with read_connection(engine) as conn:
        local_patient = f"Patient/{local_id(CONNECTION, 'Patient', 'pat-3')}"
        assert source_reference(conn, CONNECTION, local_patient) == "Patient/pat-3"

    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("carecoord.sync"))
    assert "Zyxwvut" not in text and "pat-3" not in text and "?" not in text


def test_a_task_written_here_is_pushed_back_to_the_other_carecoord(
    remote_ehr: RemoteEhr, settings: Settings, engine: Engine
) -> None:
    write_connection(
        settings,
        CONNECTION,
        iss=remote_ehr.fhir_base,
        client_id=CLIENT_ID,
        backend_scope="system/*.cruds",
        read_only=False,
    )
    write_sync_config(settings, '[connections.other-carecoord]\ntypes = ["Patient"]\n')
    _pull(settings, engine, "patients:pat-3")
    app = create_app(settings, engine=engine)  # its write hook queues pushes
    store: FhirStore = app.state.store
    patient = f"Patient/{local_id(CONNECTION, 'Patient', 'pat-3')}"
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "description": "Call within 2 business days of discharge",
        "for": {"reference": patient},
    }
    local = store.create("Task", task).resource.res_id
    registry = Registry()
    register_push_handlers(registry, settings=settings)
    worker = Worker(engine, registry, worker_id="e2e")
    assert worker.run_once() == 1

    found = remote_ehr.store.search(
        remote_ehr.store.parse("Task", [("identifier", f"{identifier_system('Task')}|{local}")])
    )
    assert len(found.matches) == 1
    pushed = orjson.loads(found.matches[0][2])
    assert pushed["for"]["reference"] == "Patient/pat-3"  # the EHR's own id, not ours
    assert pushed["meta"]["versionId"] == "1"

    # A local change goes out as an update with If-Match; the EHR keeps one Task, version 2.
    changed = orjson.loads(store.read("Task", local).content or b"{}")
    changed["status"] = "accepted"
    store.update("Task", local, changed)
    assert worker.run_once() == 1
    again = remote_ehr.store.read("Task", pushed["id"])
    assert again.version_id == 2
    assert orjson.loads(again.content or b"{}")["status"] == "accepted"
    assert worker.run_once() == 0  # nothing left; a replay would change nothing
