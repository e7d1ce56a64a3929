"""Transaction and batch Bundles: atomic, urn:uuid rewriting, conditional entries."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fhir.factories import encounter, patient

PAT_URN = "urn:uuid:6f1c3a52-1d4e-4a38-9e3c-1d2f4a5b6c7d"


def _transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(resource: dict, full_url: str | None = None, **request: str) -> dict:
    entry: dict = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_rewrites_urn_uuid_references(client: TestClient) -> None:
    bundle = _transaction(
        _post(encounter("placeholder") | {"subject": {"reference": PAT_URN}}),
        _post(patient(), PAT_URN),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    enc_location = result["entry"][0]["response"]["location"]
    pat_location = result["entry"][1]["response"]["location"]
    enc = client.get(f"/fhir/{enc_location.rsplit('/_history', 1)[0]}").json()
    assert enc["subject"]["reference"] == pat_location.rsplit("/_history", 1)[0]


def test_transaction_with_one_bad_entry_changes_nothing(client: TestClient) -> None:
    bad = encounter("x")
    bad["status"] = {"not": "a code"}
    bundle = _transaction(_post(patient(), PAT_URN), _post(bad))
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0

    # A failure found while writing (If-Match on a missing resource) rolls back earlier entries too.
    late = _transaction(
        _post(patient(family="Written")),
        {
            "resource": {**patient(), "id": "ghost"},
            "request": {"method": "PUT", "url": "Patient/ghost", "ifMatch": 'W/"3"'},
        },
    )
    response = client.post("/fhir", json=late)
    assert response.status_code == 412
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_transaction_conditional_create_and_conditional_reference(client: TestClient) -> None:
    existing = client.post(
        "/fhir/Patient", json=patient(), headers={"content-type": "application/fhir+json"}
    ).json()
    bundle = _transaction(
        _post(patient(), PAT_URN, ifNoneExist="identifier=urn:example:mrn|Chalmers-Peter"),
        _post(encounter("x") | {"subject": {"reference": PAT_URN}}),
        _post(
            encounter("x", cls="AMB")
            | {"subject": {"reference": "Patient?identifier=urn:example:mrn|Chalmers-Peter"}}
        ),
    )
    result = client.post("/fhir", json=bundle).json()
    assert result["entry"][0]["response"]["status"] == "200 OK"
    found = client.get(f"/fhir/Encounter?patient={existing['id']}").json()
    assert len(found["entry"]) == 2
    assert client.get("/fhir/Patient?_summary=count").json()["total"] == 1


def test_transaction_order_put_delete_get(client: TestClient) -> None:
    created = client.post(
        "/fhir/Patient", json=patient(), headers={"content-type": "application/fhir+json"}
    ).json()
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
        {
            "resource": {**patient(family="Put"), "id": "p-put"},
            "request": {"method": "PUT", "url": "Patient/p-put"},
        },
        {"request": {"method": "DELETE", "url": f"Patient/{created['id']}"}},
    )
    response = client.post("/fhir", json=bundle)
    # DELETE runs before GET (FHIR processing order): reading the deleted patient fails it all.
    assert response.status_code == 410
    assert client.get("/fhir/Patient/p-put").status_code == 404


def test_batch_entries_succeed_or_fail_on_their_own(client: TestClient) -> None:
    bad = patient()
    bad["birthDate"] = "not-a-date"
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            _post(patient(family="Good")),
            _post(bad),
            {"request": {"method": "GET", "url": "Patient?family=good"}},
        ],
    }
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400"
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert len(entries[2]["resource"]["entry"]) == 1


def test_bundle_type_and_shape_errors(client: TestClient) -> None:
    assert (
        client.post("/fhir", json={"resourceType": "Bundle", "type": "document"}).status_code == 400
    )
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400
    unresolved = _transaction(
        _post(
            encounter("x")
            | {"subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}}
        )
    )
    response = client.post("/fhir", json=unresolved)
    assert response.status_code == 400
    assert "resolves to no entry" in response.json()["issue"][0]["diagnostics"]
