"""PCCM API: assignment with reasons and history, access by patient compartment, audit, choice."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.requests import Request

from carecoord.fhir.store import FhirStore
from carecoord.jobs import JobContext, get_job
from carecoord.pccm import handlers
from carecoord.pccm.routes import install
from carecoord.settings import ConfigError, Settings
from tests.pccm import world


@dataclass(frozen=True)
class FakeSession:
    connection: str
    scope: str
    patient: str | None
    fhir_user: str | None


@pytest.fixture
def loaded(client: TestClient) -> TestClient:
    store: FhirStore = client.app.state.store  # type: ignore[attr-defined]
    world.put_all(
        store,
        [
            *world.role("hist", miles=2),
            *world.role("near", miles=1),
            *world.role("closed", miles=3, accepting="nopt"),
            world.patient("m1"),
            world.coverage("m1"),
            world.visit("m1", "hist", "2026-03-01"),
            world.patient("m2", line="7 Birch"),
            world.coverage("m2"),
        ],
    )
    client.app.state.pccm.assign_all("default")  # type: ignore[attr-defined]
    return client


def _as_patient(client: TestClient, patient: str, scope: str = "patient/*.cruds") -> TestClient:
    session = FakeSession("test-ehr", f"launch openid fhirUser {scope}", patient, "Patient/x")

    async def source(request: Request) -> FakeSession | None:
        return session if request.headers.get("x-test-session") else None

    client.app.state.session_source = source  # type: ignore[attr-defined]
    return TestClient(client.app, base_url="http://testserver", headers={"x-test-session": "1"})


def test_current_assignment_with_reasons_and_audit(loaded: TestClient) -> None:
    r = loaded.get("/api/pccm/assignments/m1")
    assert r.status_code == 200, r.text
    [current] = r.json()["assignments"]
    assert (current["program"], current["pcp"], current["rule"]) == (
        "default",
        "PractitionerRole/hist",
        "own-history",
    )
    assert current["decision"]["rules"][0]["reason"] == "no previous assignment"
    other = loaded.get("/api/pccm/assignments/m2").json()["assignments"][0]
    assert (other["pcp"], other["rule"]) == ("PractitionerRole/near", "distance")
    events = loaded.get("/fhir/AuditEvent", params={"patient": "Patient/m1"}).json()["entry"]
    queries = [
        base64.b64decode(ent["query"]).decode()
        for e in events
        for ent in e["resource"].get("entity", ())
        if "query" in ent
    ]
    assert "pccm-assignments" in queries
    assert loaded.get("/api/pccm/assignments/nobody").status_code == 404


def test_patient_scoped_session_sees_only_its_own_patient(loaded: TestClient) -> None:
    own = _as_patient(loaded, "m1", "patient/*.rs")
    assert own.get("/api/pccm/assignments/m1").status_code == 200
    assert own.get("/api/pccm/assignments/m1/history").status_code == 200
    assert own.get("/api/pccm/assignments/m2").status_code == 404
    assert own.get("/api/pccm/assignments/m2/history").status_code == 404
    # read-only scopes cannot record a choice
    r = own.post("/api/pccm/assignments/m1/choice", json={"program": "default", "pcp": "near"})
    assert r.status_code == 403
    assert loaded.get("/api/pccm/assignments/m1").json()["assignments"][0]["pcp"] == (
        "PractitionerRole/hist"
    )


def test_member_choice_through_the_api(loaded: TestClient) -> None:
    member = _as_patient(loaded, "m1")
    r = member.post("/api/pccm/assignments/m1/choice", json={"program": "default", "pcp": "closed"})
    assert r.status_code == 422
    assert "not accepting new patients" in r.json()["issue"][0]["diagnostics"]
    r = member.post("/api/pccm/assignments/m2/choice", json={"program": "default", "pcp": "near"})
    assert r.status_code == 404
    r = member.post("/api/pccm/assignments/m1/choice", json={"program": "nope", "pcp": "near"})
    assert r.status_code == 404
    r = member.post("/api/pccm/assignments/m1/choice", json={"program": "default", "pcp": "near"})
    assert r.status_code == 201, r.text
    assert r.json()["decision"]["rule"] == "member-choice"
    history = loaded.get("/api/pccm/assignments/m1/history").json()["assignments"]
    assert [(h["pcp"], h["status"]) for h in history] == [
        ("PractitionerRole/near", "active"),
        ("PractitionerRole/hist", "ended"),
    ]
    tasks = loaded.get("/fhir/Task", params={"patient": "Patient/m1"}).json()["entry"]
    status = {t["resource"]["owner"]["reference"]: t["resource"]["status"] for t in tasks}
    assert status == {"PractitionerRole/hist": "cancelled", "PractitionerRole/near": "requested"}
    patient = loaded.get("/fhir/Patient/m1").json()
    assert patient["generalPractitioner"][0]["reference"] == "PractitionerRole/near"


def test_pcp_leaving_is_queued_and_the_job_reassigns_the_panel(
    loaded: TestClient, engine: Engine, settings: Settings
) -> None:
    member = _as_patient(loaded, "m1")
    assert member.post("/api/pccm/programs/default/pcps/hist/leave", json={}).status_code == 403
    r = loaded.post("/api/pccm/programs/default/pcps/hist/leave", json={"reason": "retired"})
    assert r.status_code == 202, r.text
    job = get_job(engine, r.json()["job"])
    assert job is not None and job.kind == handlers.PCP_LEFT_JOB
    ctx = JobContext(
        job_id=job.id, kind=job.kind, attempt=1, max_attempts=5, key=None, connection=None,
        created_at=datetime.now(UTC), worker_id="test", engine=engine,
        clock=lambda: datetime.now(UTC), _extend=lambda s: True, _stopping=lambda: False,
    )  # fmt: skip
    handlers.register_handlers(handlers_registry(), settings=settings)
    handlers._handler({"program": "default", "pcp": "hist", "reason": "retired"}, ctx)
    current = loaded.get("/api/pccm/assignments/m1").json()["assignments"][0]
    assert current["pcp"] == "PractitionerRole/near" and current["kind"] == "reassignment"
    assert current["decision"]["rules"][0]["reason"] == "previous PCP no longer in the program"


def handlers_registry() -> Any:
    from carecoord.jobs import Registry

    return Registry()


def test_an_invalid_program_stops_start_up(
    tmp_path: Path, settings: Settings, engine: Engine
) -> None:
    folder = tmp_path / "pccm"
    folder.mkdir()
    (folder / "state.yaml").write_text("membership: {class_values: [X]}\nrules: [coin-toss]\n")
    app = FastAPI()
    app.state.store = FhirStore(engine)
    with pytest.raises(ConfigError) as err:
        install(app, settings.model_copy(update={"config_dir": tmp_path}), engine)
    assert "state.yaml: rules[0]: Input should be" in str(err.value)
    assert "specialties: Field required" in str(err.value)


def test_programs_are_listed(client: TestClient) -> None:
    names = {p["name"]: p["rules"] for p in client.get("/api/pccm/programs").json()}
    assert names["default"][:2] == ["existing-assignment", "own-history"]
    assert names["language-first"][1] == "language"
