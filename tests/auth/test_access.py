"""Broken-object-level-authorization tests: scopes, patient compartment and tenants on /fhir."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.requests import Request

from carecoord.app import create_app
from carecoord.settings import Settings
from tests.auth.helpers import bearer, issue_token

FHIR = {"content-type": "application/fhir+json"}


@dataclass(frozen=True)
class FakeSession:
    connection: str
    scope: str
    patient: str | None
    fhir_user: str | None


def _patient(pid: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:mrn", "value": f"mrn-{pid}"}],
        "name": [{"family": family, "given": ["Pat"]}],
    }


def _obs(oid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "identifier": [{"system": "urn:obs", "value": oid}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def _cond(cid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"text": "heart failure"},
    }


def _task(tid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": tid,
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{pid}"},
    }


@pytest.fixture
def app_and_admin(settings: Settings, engine: Engine) -> Iterator[tuple[Any, TestClient]]:
    """The app, and a client with an unrestricted system token that loads two patients."""
    app = create_app(settings, engine=engine)
    admin = bearer(issue_token(engine, settings, "system/*.cruds", client_id="admin"))
    with TestClient(app, base_url="http://testserver", headers=admin) as c:
        for pid, family in (("pa", "Alvarez"), ("pb", "Brennan")):
            assert c.put(f"/fhir/Patient/{pid}", json=_patient(pid, family)).status_code == 201
            for make, prefix in ((_obs, "obs"), (_cond, "cond"), (_task, "task")):
                body = make(f"{prefix}-{pid}", pid)
                res_type = body["resourceType"]
                r = c.put(f"/fhir/{res_type}/{prefix}-{pid}", json=body)
                assert r.status_code == 201, r.text
        yield app, c


def _session_client(app: Any, scope: str, patient: str | None = "pa") -> TestClient:
    session = FakeSession("test-ehr", scope, patient, "Practitioner/nurse-1")

    async def source(request: Request) -> FakeSession | None:
        return session if request.headers.get("x-test-session") else None

    app.state.session_source = source
    return TestClient(app, base_url="http://testserver", headers={"x-test-session": "1"})


@pytest.fixture
def patient_a(app_and_admin: tuple[Any, TestClient]) -> TestClient:
    app, _ = app_and_admin
    return _session_client(app, "launch openid fhirUser patient/*.cruds")


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}


# -- authentication ------------------------------------------------------------------------------


def test_no_credentials_is_401_with_a_challenge(anonymous_client: TestClient) -> None:
    r = anonymous_client.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"


def test_forged_or_garbled_tokens_are_401(anonymous_client: TestClient) -> None:
    for value in ("Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer "):
        r = anonymous_client.get("/fhir/Patient", headers={"Authorization": value})
        assert r.status_code == 401, value
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b'{"sub":"x","scope":"system/*.cruds","exp":9999999999}')
    unsigned = f"{header}.{body.rstrip(b'=').decode()}."
    r = anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {unsigned}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_metadata_and_discovery_need_no_token(anonymous_client: TestClient) -> None:
    assert anonymous_client.get("/fhir/metadata").status_code == 200
    conf = anonymous_client.get("/fhir/.well-known/smart-configuration").json()
    assert conf["token_endpoint"] == "http://testserver/auth/token"
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    assert anonymous_client.get("/.well-known/smart-configuration").status_code == 200


# -- scopes ------------------------------------------------------------------------------------


def test_observation_read_scope_cannot_write_or_touch_conditions(
    app_and_admin: tuple[Any, TestClient], engine: Engine, settings: Settings
) -> None:
    app, _ = app_and_admin
    token = issue_token(engine, settings, "system/Observation.rs", client_id="obs-reader")
    with TestClient(app, base_url="http://testserver", headers=bearer(token)) as c:
        assert c.get("/fhir/Observation/obs-pa").status_code == 200
        assert len(c.get("/fhir/Observation?code=8867-4").json()["entry"]) == 2
        assert c.get("/fhir/Condition/cond-pa").status_code == 403
        assert c.get("/fhir/Condition").status_code == 403
        assert c.post("/fhir/Observation", json=_obs("new", "pa"), headers=FHIR).status_code == 403
        assert c.put("/fhir/Observation/obs-pa", json=_obs("obs-pa", "pa")).status_code == 403
        assert c.delete("/fhir/Observation/obs-pa").status_code == 403
        assert c.get("/fhir/Observation?_include=Observation:subject").json()["entry"]
        included = c.get("/fhir/Observation?_include=Observation:subject").json()
        assert {e["search"]["mode"] for e in included["entry"]} == {"match"}  # no Patient scope


def test_scope_query_restrictions_limit_rows(
    app_and_admin: tuple[Any, TestClient], engine: Engine, settings: Settings
) -> None:
    app, _ = app_and_admin
    token = issue_token(
        engine, settings, "system/Observation.rs?subject=Patient/pb", client_id="narrow"
    )
    with TestClient(app, base_url="http://testserver", headers=bearer(token)) as c:
        assert _ids(c.get("/fhir/Observation").json()) == {"Observation/obs-pb"}
        assert c.get("/fhir/Observation/obs-pa").status_code == 404


def test_tokens_with_other_grants_never_share_a_policy(
    app_and_admin: tuple[Any, TestClient], engine: Engine, settings: Settings
) -> None:
    """Each grant's policy is built once per application and kept; requests with another
    token's grant, interleaved on the same application, keep their own limits."""
    app, admin = app_and_admin
    narrow = bearer(issue_token(engine, settings, "system/Observation.rs", client_id="obs-only"))
    app.state.token_policies.clear()
    for _ in range(3):
        assert admin.get("/fhir/Condition/cond-pa").status_code == 200
        assert admin.get("/fhir/Condition/cond-pa", headers=narrow).status_code == 403
        assert admin.get("/fhir/Observation/obs-pa", headers=narrow).status_code == 200
    kept = app.state.token_policies
    assert sorted(client for _, client, _ in kept) == ["admin", "obs-only"]
    assert {policy.agent.who for policy in kept.values()} == {"admin", "obs-only"}


# -- patient compartment (launch session with patient A) -----------------------------------------


def test_patient_session_reads_own_records_and_not_the_other_patients(
    patient_a: TestClient,
) -> None:
    for path in ("Patient/pa", "Observation/obs-pa", "Condition/cond-pa", "Task/task-pa"):
        assert patient_a.get(f"/fhir/{path}").status_code == 200, path
    for path in ("Patient/pb", "Observation/obs-pb", "Condition/cond-pb", "Task/task-pb"):
        r = patient_a.get(f"/fhir/{path}")
        assert r.status_code == 404, path  # existence does not leak
    assert patient_a.get("/fhir/Observation/obs-pb/_history/1").status_code == 404
    assert patient_a.get("/fhir/Observation/obs-pb/_history").status_code == 404


def test_patient_session_search_include_revinclude_chain_history(patient_a: TestClient) -> None:
    assert _ids(patient_a.get("/fhir/Observation").json()) == {"Observation/obs-pa"}
    assert _ids(patient_a.get("/fhir/Patient").json()) == {"Patient/pa"}
    assert _ids(patient_a.get("/fhir/Task?status=requested").json()) == {"Task/task-pa"}
    inc = patient_a.get("/fhir/Observation?_include=Observation:subject").json()
    assert _ids(inc) == {"Observation/obs-pa", "Patient/pa"}
    rev = patient_a.get("/fhir/Patient?_revinclude=Observation:subject&_id=pa,pb").json()
    assert _ids(rev) == {"Patient/pa", "Observation/obs-pa"}
    chained = patient_a.get("/fhir/Observation?subject:Patient.family=Brennan").json()
    assert chained.get("entry", []) == []
    by_ref = patient_a.get("/fhir/Condition?subject=Patient/pb").json()
    assert by_ref.get("entry", []) == []
    history = patient_a.get("/fhir/Observation/_history").json()
    assert {e["resource"]["id"] for e in history["entry"]} == {"obs-pa"}
    assert patient_a.get("/fhir/_history").status_code == 403


def test_patient_session_cannot_write_into_another_patients_record(
    patient_a: TestClient, app_and_admin: tuple[Any, TestClient]
) -> None:
    _, admin = app_and_admin
    r = patient_a.post("/fhir/Observation", json=_obs("x", "pb"), headers=FHIR)
    assert r.status_code == 403
    assert patient_a.put("/fhir/Observation/obs-pb", json=_obs("obs-pb", "pa")).status_code == 403
    assert patient_a.delete("/fhir/Condition/cond-pb").status_code == 403
    moved = _obs("obs-pa", "pb")  # moving own record to another patient
    assert patient_a.put("/fhir/Observation/obs-pa", json=moved).status_code == 403
    assert admin.get("/fhir/Observation/obs-pa").json()["subject"]["reference"] == "Patient/pa"
    own = patient_a.post("/fhir/Observation", json=_obs("y", "pa"), headers=FHIR)
    assert own.status_code == 201
    assert len(admin.get("/fhir/Observation?subject=Patient/pb").json()["entry"]) == 1


def test_patient_session_conditional_create_does_not_see_other_patient(
    patient_a: TestClient, app_and_admin: tuple[Any, TestClient]
) -> None:
    _, admin = app_and_admin
    # B's observation matches the condition, but A cannot see it: A's create must not return it.
    r = patient_a.post(
        "/fhir/Observation",
        json=_obs("z", "pa"),
        headers={**FHIR, "If-None-Exist": "identifier=urn:obs|obs-pb"},
    )
    assert r.status_code == 201
    assert r.json()["subject"]["reference"] == "Patient/pa"
    r = patient_a.post(
        "/fhir/Observation",
        json=_obs("z2", "pb"),
        headers={**FHIR, "If-None-Exist": "identifier=urn:obs|nothing"},
    )
    assert r.status_code == 403
    assert len(admin.get("/fhir/Observation?subject=Patient/pb").json()["entry"]) == 1


def test_patient_session_transaction_and_batch_are_confined(
    patient_a: TestClient, app_and_admin: tuple[Any, TestClient]
) -> None:
    _, admin = app_and_admin
    before = admin.get("/fhir/Observation?_summary=count").json()["total"]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _obs("t1", "pa"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": _obs("t2", "pb"), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    assert patient_a.post("/fhir", json=transaction).status_code == 403
    assert admin.get("/fhir/Observation?_summary=count").json()["total"] == before
    read_other = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": "Observation/obs-pb"}}],
    }
    assert patient_a.post("/fhir", json=read_other).status_code == 404
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/obs-pb"}},
            {"request": {"method": "GET", "url": "Observation/obs-pa"}},
            {"request": {"method": "GET", "url": "Observation?code=8867-4"}},
            {"request": {"method": "DELETE", "url": "Task/task-pb"}},
        ],
    }
    out = patient_a.post("/fhir", json=batch).json()["entry"]
    assert out[0]["response"]["status"].startswith("404")
    assert out[1]["response"]["status"].startswith("200")
    assert _ids(out[2]["resource"]) == {"Observation/obs-pa"}
    assert out[3]["response"]["status"].startswith("403")
    assert admin.get("/fhir/Task/task-pb").status_code == 200


def test_patient_observation_scope_cannot_read_or_write_conditions(
    app_and_admin: tuple[Any, TestClient],
) -> None:
    app, _ = app_and_admin
    c = _session_client(app, "launch patient/Observation.rs")
    assert c.get("/fhir/Observation/obs-pa").status_code == 200
    assert c.get("/fhir/Condition/cond-pa").status_code == 403
    assert c.get("/fhir/Condition").status_code == 403
    assert c.post("/fhir/Condition", json=_cond("c9", "pa"), headers=FHIR).status_code == 403
    assert c.post("/fhir/Observation", json=_obs("o9", "pa"), headers=FHIR).status_code == 403


def test_patient_scopes_without_a_launch_patient_reach_nothing(
    app_and_admin: tuple[Any, TestClient],
) -> None:
    app, _ = app_and_admin
    c = _session_client(app, "patient/*.rs", patient=None)
    assert c.get("/fhir/Observation/obs-pa").status_code == 403
    assert c.get("/fhir/Patient").status_code == 403


# -- tenants -----------------------------------------------------------------------------------


def test_clients_of_one_organisation_cannot_see_anothers_data(
    settings: Settings, engine: Engine
) -> None:
    app = create_app(settings, engine=engine)
    org1 = bearer(issue_token(engine, settings, "system/*.cruds", client_id="o1", tenant="org1"))
    org2 = bearer(issue_token(engine, settings, "system/*.cruds", client_id="o2", tenant="org2"))
    with TestClient(app, base_url="http://testserver") as c:
        made = c.post("/fhir/Patient", json=_patient("x", "Ng"), headers={**FHIR, **org1})
        assert made.status_code == 201
        pid = made.json()["id"]
        tags = made.json()["meta"]["tag"]
        assert {"system": "https://carecoord.org/fhir/CodeSystem/tenant", "code": "org1"} in tags
        assert c.get(f"/fhir/Patient/{pid}", headers=org1).status_code == 200
        assert c.get(f"/fhir/Patient/{pid}", headers=org2).status_code == 404
        assert c.get("/fhir/Patient", headers=org2).json().get("entry", []) == []
        hijack = {**_patient(pid, "Ng"), "id": pid}
        assert c.put(f"/fhir/Patient/{pid}", json=hijack, headers=org2).status_code == 403


# -- audit -------------------------------------------------------------------------------------


def _audit_events(admin: TestClient, patient: str) -> list[dict[str, Any]]:
    bundle = admin.get(f"/fhir/AuditEvent?patient=Patient/{patient}&_count=200").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_reads_searches_and_writes_of_patient_data_are_audited(
    patient_a: TestClient, app_and_admin: tuple[Any, TestClient]
) -> None:
    _, admin = app_and_admin
    writes = _audit_events(admin, "pa")
    assert {e["action"] for e in writes} == {"C"}  # the admin's loading, in the same transactions
    r = patient_a.get("/fhir/Observation/obs-pa", headers={"x-request-id": "req-123"})
    assert r.status_code == 200
    events = [e for e in _audit_events(admin, "pa") if e["action"] == "R"]
    assert len(events) == 1
    event = events[0]
    assert event["outcome"] == "0"
    assert event["agent"][0]["who"] == {"reference": "Practitioner/nurse-1"}
    whats = [ent.get("what", {}) for ent in event["entity"]]
    assert {"reference": "Patient/pa"} in whats
    assert {"reference": "Observation/obs-pa"} in whats
    assert {"identifier": {"value": "req-123"}} in whats
    assert patient_a.get("/fhir/Condition?subject=Patient/pa").status_code == 200
    searches = [e for e in _audit_events(admin, "pa") if e["subtype"][0]["code"] == "search-type"]
    assert len(searches) == 1 and any("query" in ent for ent in searches[0]["entity"])
    patient_a.get("/fhir/Observation/obs-pb")  # refused: recorded as a failed access
    denied = admin.get("/fhir/AuditEvent?entity=Observation/obs-pb").json()["entry"]
    reads = [e["resource"] for e in denied if e["resource"]["action"] == "R"]
    assert [e["outcome"] for e in reads] == ["4"]
    assert reads[0]["agent"][0]["who"] == {"reference": "Practitioner/nurse-1"}


def test_audit_events_cannot_be_changed_or_deleted(app_and_admin: tuple[Any, TestClient]) -> None:
    _, admin = app_and_admin
    event = _audit_events(admin, "pa")[0]
    event_id = event["id"]
    assert admin.put(f"/fhir/AuditEvent/{event_id}", json=event).status_code == 405
    assert admin.delete(f"/fhir/AuditEvent/{event_id}").status_code == 405
    assert admin.get(f"/fhir/AuditEvent/{event_id}").json()["meta"]["versionId"] == "1"


def test_no_token_or_patient_name_in_logs(
    app_and_admin: tuple[Any, TestClient],
    engine: Engine,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = app_and_admin
    caplog.set_level(logging.DEBUG)
    token = issue_token(engine, settings, "system/*.rs", client_id="log-check")
    with TestClient(app, base_url="http://testserver", headers=bearer(token)) as c:
        c.get("/fhir/Patient?family=Alvarez")
        c.get("/fhir/Patient/pa")
        c.get("/fhir/Patient/pa", headers={"Authorization": "Bearer wrong-token-value"})
    # The test client's own httpx log is not the service's (``carecoord serve`` silences httpx).
    text = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert token not in text and "wrong-token-value" not in text
    assert "Alvarez" not in text


def test_a_read_fails_when_its_audit_cannot_be_written(
    patient_a: TestClient, app_and_admin: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from carecoord.audit import journal as journal_module

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    r = patient_a.get("/fhir/Observation/obs-pa")
    assert r.status_code == 503
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "obs-pa" not in r.text  # the record is not served without its audit trail
