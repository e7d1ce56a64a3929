"""The REST API as an integration engine uses it: CRUD, versions, conditional writes, errors."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fhir.factories import encounter, patient

FHIR = {"content-type": "application/fhir+json"}


def _create(client: TestClient, body: dict, **headers: str) -> dict:
    response = client.post(f"/fhir/{body['resourceType']}", json=body, headers={**FHIR, **headers})
    assert response.status_code == 201, response.text
    return response.json()


def test_create_assigns_id_version_and_location(client: TestClient) -> None:
    body = patient()
    body["id"] = "client-chosen"
    response = client.post("/fhir/Patient", json=body, headers=FHIR)
    assert response.status_code == 201
    created = response.json()
    assert created["id"] != "client-chosen"  # the server assigns ids on create
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert (
        response.headers["location"] == f"http://testserver/fhir/Patient/{created['id']}/_history/1"
    )
    assert response.headers["content-type"].startswith("application/fhir+json")


def test_read_returns_stored_resource_and_supports_if_none_match(client: TestClient) -> None:
    created = _create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["last-modified"].endswith("GMT")
    again = client.get(f"/fhir/Patient/{created['id']}", headers={"if-none-match": 'W/"1"'})
    assert again.status_code == 304


def test_update_versions_and_history(client: TestClient) -> None:
    created = _create(client, patient())
    pid = created["id"]
    for family in ("Smith", "Smyth"):
        body = patient(family=family)
        body["id"] = pid
        response = client.put(f"/fhir/Patient/{pid}", json=body, headers=FHIR)
        assert response.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "3"
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["name"][0]["family"] == "Chalmers"
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert history["entry"][-1]["request"]["method"] == "POST"
    type_history = client.get("/fhir/Patient/_history").json()
    assert len(type_history["entry"]) == 3
    system_history = client.get("/fhir/_history?_count=2").json()
    assert len(system_history["entry"]) == 2
    assert any(link["relation"] == "next" for link in system_history["link"])


def test_update_without_change_keeps_version(client: TestClient) -> None:
    created = _create(client, patient())
    body = {k: v for k, v in created.items() if k != "meta"}
    response = client.put(f"/fhir/Patient/{created['id']}", json=body, headers=FHIR)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'


def test_update_as_create_with_client_id(client: TestClient) -> None:
    body = patient()
    body["id"] = "pat-42"
    response = client.put("/fhir/Patient/pat-42", json=body, headers=FHIR)
    assert response.status_code == 201
    assert response.headers["location"].endswith("/fhir/Patient/pat-42/_history/1")


def test_if_match_mismatch_is_412(client: TestClient) -> None:
    created = _create(client, patient())
    body = {**patient(family="New"), "id": created["id"]}
    ok = client.put(
        f"/fhir/Patient/{created['id']}", json=body, headers={**FHIR, "if-match": 'W/"1"'}
    )
    assert ok.status_code == 200
    stale = client.put(
        f"/fhir/Patient/{created['id']}",
        json={**body, "gender": "female"},
        headers={**FHIR, "if-match": 'W/"1"'},
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"


def test_delete_then_read_is_410_and_history_keeps_versions(client: TestClient) -> None:
    created = _create(client, patient())
    pid = created["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204  # idempotent
    assert client.get(f"/fhir/Patient?_id={pid}").json().get("entry") is None
    assert client.delete("/fhir/Patient/never-existed").status_code == 404


def test_conditional_create(client: TestClient) -> None:
    header = {"if-none-exist": "identifier=urn:example:mrn|Chalmers-Peter"}
    first = client.post("/fhir/Patient", json=patient(), headers={**FHIR, **header})
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=patient(), headers={**FHIR, **header})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    _create(
        client, patient(given="Paul", identifier=[{"system": "urn:example:mrn", "value": "dup"}])
    )
    _create(
        client, patient(given="Mary", identifier=[{"system": "urn:example:mrn", "value": "dup"}])
    )
    several = client.post(
        "/fhir/Patient",
        json=patient(),
        headers={**FHIR, "if-none-exist": "identifier=urn:example:mrn|dup"},
    )
    assert several.status_code == 412


def test_conditional_update(client: TestClient) -> None:
    created = client.put(
        "/fhir/Patient?identifier=urn:example:mrn|X1",
        json=patient(identifier=[{"system": "urn:example:mrn", "value": "X1"}]),
        headers=FHIR,
    )
    assert created.status_code == 201
    updated = client.put(
        "/fhir/Patient?identifier=urn:example:mrn|X1",
        json=patient(family="Changed", identifier=[{"system": "urn:example:mrn", "value": "X1"}]),
        headers=FHIR,
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


def test_errors_are_operation_outcomes_with_right_status(client: TestClient) -> None:
    cases = [
        (
            client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR),
            400,
            "Malformed JSON",
        ),
        (
            client.post(
                "/fhir/Patient",
                json={"resourceType": "Patient", "birthDate": "1974-13-45"},
                headers=FHIR,
            ),
            400,
            "Patient.birthDate",
        ),
        (
            client.post(
                "/fhir/Patient", json={"resourceType": "Patient", "colour": "blue"}, headers=FHIR
            ),
            400,
            "Patient.colour",
        ),
        (
            client.post(
                "/fhir/Patient",
                json={"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"}},
                headers=FHIR,
            ),
            400,
            "does not match",
        ),
        (client.get("/fhir/Spaceship/1"), 404, "Unknown resource type"),
        (client.get("/fhir/Patient/nope"), 404, "not found"),
        (client.get("/fhir/Patient?shoe-size=12"), 400, "Unknown search parameter"),
        (
            client.put("/fhir/Patient/a", json={**patient(), "id": "b"}, headers=FHIR),
            400,
            "does not match the URL",
        ),
        (client.put("/fhir/Patient/a", json=patient(), headers=FHIR), 400, "must carry id"),
        (
            client.post(
                "/fhir/Patient",
                content=b"<Patient/>",
                headers={"content-type": "application/fhir+xml"},
            ),
            415,
            "not supported",
        ),
        (client.get("/fhir/Patient?_format=xml"), 406, "FHIR JSON"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, (response.request.url, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert text in outcome["issue"][0]["diagnostics"], outcome


def test_invalid_resource_names_each_bad_element(client: TestClient) -> None:
    body = encounter("p1")
    body["class"] = [body["class"]]
    body["period"] = {"start": "yesterday"}
    response = client.post("/fhir/Encounter", json=body, headers=FHIR)
    assert response.status_code == 400
    expressions = {e for issue in response.json()["issue"] for e in issue.get("expression", [])}
    assert {"Encounter.class", "Encounter.period.start"} <= expressions


def test_body_over_limit_is_413(client: TestClient) -> None:
    big = patient(
        text={
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 70_000 + "</div>",
        }
    )
    response = client.post("/fhir/Patient", json=big, headers=FHIR)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_pathological_nesting_is_rejected(client: TestClient) -> None:
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = client.post("/fhir/Patient", content=deep, headers=FHIR)
    assert response.status_code == 400
    nested: dict = {"url": "http://x", "valueString": "v"}
    for _ in range(100):
        nested = {"url": "http://x", "extension": [nested]}
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "extension": [nested]}, headers=FHIR
    )
    assert response.status_code == 400
    assert "deeper" in response.json()["issue"][0]["diagnostics"]


def test_capability_statement_tells_the_truth(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    for res_type in ("Patient", "Encounter", "Task", "CareTeam", "AuditEvent", "Group"):
        assert res_type in by_type
    encounter_params = {p["name"] for p in by_type["Encounter"]["searchParam"]}
    assert {"patient", "class", "status", "date", "_id", "_lastUpdated"} <= encounter_params
    task_params = {p["name"] for p in by_type["Task"]["searchParam"]}
    assert {"patient", "owner", "status", "code", "focus"} <= task_params
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    assert by_type["Patient"]["conditionalCreate"] is True
    # Every advertised parameter really is accepted by search.
    for name in sorted(encounter_params):
        if name in ("_id", "_lastUpdated"):
            continue
        kind = next(p["type"] for p in by_type["Encounter"]["searchParam"] if p["name"] == name)
        value = {
            "date": "ge2020-01-01",
            "reference": "Patient/x",
            "quantity": "1",
            "number": "1",
        }.get(kind, "x")
        assert client.get(f"/fhir/Encounter?{name}={value}").status_code == 200, name


def test_unknown_fhir_route_is_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/1/_history/1/extra")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_contained_resource_of_unknown_type_is_a_400(client: TestClient) -> None:
    body = {"resourceType": "Patient", "contained": [{"resourceType": "Foo", "id": "x"}]}
    r = client.post("/fhir/Patient", json=body, headers=FHIR)
    assert r.status_code == 400
    assert "unknown resourceType" in r.json()["issue"][0]["diagnostics"]
