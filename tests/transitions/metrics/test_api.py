"""Metrics, readmission-risk and readmission APIs over HTTP: answers, CSV, access and audit."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.requests import Request

from carecoord.app import create_app
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from carecoord.transitions.readmissions import detect_on_admission
from carecoord.transitions.risk import assess_discharge, load_risk_config
from tests.transitions.metrics.dataset import program

CONFIG = Path(__file__).resolve().parents[3] / "config"
RANGE = {"since": "2025-07-01", "until": "2025-11-30"}


@dataclass(frozen=True)
class FakeSession:
    connection: str
    scope: str
    patient: str | None
    fhir_user: str | None


@pytest.fixture
def loaded(store: FhirStore) -> FhirStore:
    bodies = program()

    def work(w: Any) -> None:
        for body in bodies:
            w.update(body["resourceType"], body["id"], body)

    store.write(work)
    config = load_risk_config(CONFIG)
    now = datetime(2025, 12, 1, tzinfo=UTC)
    store.write(lambda w: assess_discharge(w, encounter_id="r1", now=now, config=config))
    store.write(lambda w: assess_discharge(w, encounter_id="d4", now=now, config=config))
    for eid in ("r1", "r3"):
        store.write(
            lambda w, e=eid: detect_on_admission(
                w, encounter_id=e, now=now, config=config.readmissions
            )
        )
    return store


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Any:
    return create_app(settings, engine=engine)


def _patient_client(app: Any, patient: str) -> TestClient:
    """A SMART launch session in ``patient``'s context with ``patient/*.rs``."""

    async def source(request: Request) -> FakeSession | None:
        launched = request.headers.get("x-test-patient")
        scope = "launch openid fhirUser patient/*.rs"
        return FakeSession("test-ehr", scope, launched, None) if launched else None

    app.state.session_source = source
    return TestClient(app, base_url="http://testserver", headers={"x-test-patient": patient})


@pytest.fixture
def admin(app: Any, auth_header: dict[str, str], loaded: FhirStore) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", headers=auth_header) as c:
        yield c


def _audits(store: FhirStore, query: str) -> int:
    """AuditEvents whose entity query is ``query`` (stored base64-encoded)."""
    encoded = base64.b64encode(query.encode())
    page = store.search(store.parse("AuditEvent", [("_count", "200")]))
    return sum(1 for _, _, c in page.matches if encoded in c)


def test_metrics_json_by_facility(app: Any, admin: TestClient) -> None:
    r = admin.get("/api/metrics/transitions", params={**RANGE, "by": "facility"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"]["discharges"] == 5
    assert body["total"]["readmissions_30d"] == 1
    assert body["total"]["contact_2bd"] == 2
    assert [(g["facility"], g["discharges"]) for g in body["groups"]] == [
        ("Organization/hosp-a", 4),
        ("Organization/hosp-b", 1),
    ]
    # Stored RiskAssessments choose the band (r1 and d4 were scored from their FHIR data).
    bands = admin.get("/api/metrics/transitions", params={**RANGE, "by": "risk_band"}).json()
    assert sum(g["discharges"] for g in bands["groups"] if g["risk_band"] != "unscored") == 4
    assert _audits(app.state.store, "metrics/transitions") >= 1


def test_metrics_csv(admin: TestClient) -> None:
    r = admin.get("/api/metrics/transitions.csv", params={**RANGE, "by": ["period", "pcp"]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows[-1]["period"] == "(all)" and rows[-1]["discharges"] == "5"
    july_a = next(x for x in rows if x["period"] == "2025-07" and x["pcp"] == "Practitioner/dr-a")
    assert july_a["discharges"] == "3" and july_a["readmissions_30d"] == "1"
    same = admin.get("/api/metrics/transitions", params={**RANGE, "format": "csv"})
    assert same.text.splitlines()[-1].endswith(rows[-1]["task_completion_rate"])


def test_metrics_reject_unknown_dimension(admin: TestClient) -> None:
    r = admin.get("/api/metrics/transitions", params={"by": "ward"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_readmission_risk_of_the_latest_discharge(admin: TestClient) -> None:
    r = admin.get("/api/patients/p1/readmission-risk")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["encounter"] == "Encounter/r1"  # later than d1's (seeded) assessments
    assert set(body["lace"]) == {"score", "band", "components", "missing"}
    assert set(body["lace"]["components"]) == {"L", "A", "C", "E"}
    assert set(body["hospital"]["components"]) == {"H", "O", "S", "P", "I", "A", "L"}
    assert "haemoglobin at discharge" in body["hospital"]["missing"]
    assert body["lace"]["components"]["L"] == {
        "label": "length of stay (days)",
        "value": 5,  # July 20 to July 25
        "points": 4,
    }
    assert admin.get("/api/patients/p3/readmission-risk").status_code == 404


def test_readmissions_list(admin: TestClient) -> None:
    r = admin.get("/api/readmissions", params={"since": "2025-07-01", "until": "2025-07-31"})
    assert r.status_code == 200
    rows = r.json()["readmissions"]
    assert [
        (
            x["patient"],
            x["index_encounter"],
            x["readmission_encounter"],
            x["days_between"],
            x["planned"],
        )
        for x in rows
    ] == [("Patient/p1", "Encounter/d1", "Encounter/r1", 18, False)]
    assert rows[0]["review_task"].startswith("Task/")
    empty = admin.get("/api/readmissions", params={"since": "2025-08-01"}).json()
    assert empty["count"] == 0
    bad = admin.get("/api/readmissions", params={"since": "2025-08-01", "until": "2025-07-01"})
    assert bad.status_code == 400


def test_a_patient_scoped_session_sees_only_its_patient(app: Any, admin: TestClient) -> None:
    own = _patient_client(app, "p1")
    other = _patient_client(app, "p2")
    assert own.get("/api/patients/p1/readmission-risk").status_code == 200
    assert other.get("/api/patients/p1/readmission-risk").status_code == 404
    assert len(own.get("/api/readmissions").json()["readmissions"]) == 1
    assert other.get("/api/readmissions").json()["readmissions"] == []
    mine = own.get("/api/metrics/transitions", params=RANGE).json()
    assert mine["total"]["discharges"] == 2  # d1 and r1 only
    theirs = other.get("/api/metrics/transitions", params=RANGE).json()
    assert theirs["total"]["discharges"] == 1
    store = app.state.store  # the app's store: its AuditEvent searches see the audit journal
    assert _audits(store, "readmission-risk") >= 1
    page = store.search(store.parse("AuditEvent", [("outcome", "4"), ("_count", "50")]))
    assert any(b"Patient/p1" in c for _, _, c in page.matches)  # the refused read is audited


def test_unauthenticated_requests_are_refused(anonymous_client: TestClient) -> None:
    for path in (
        "/api/metrics/transitions",
        "/api/readmissions",
        "/api/patients/p1/readmission-risk",
    ):
        assert anonymous_client.get(path).status_code == 401
