"""Reads by id answered without route matching: the same answers as through the router."""

from __future__ import annotations

from fastapi.testclient import TestClient

PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor"}], "gender": "female"}
_SAME = ("etag", "last-modified", "content-type", "x-content-type-options")


def _create(client: TestClient) -> str:
    r = client.post("/fhir/Patient", json=PATIENT)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_plain_read_answers_as_the_routed_read(client: TestClient) -> None:
    pid = _create(client)
    fast = client.get(f"/fhir/Patient/{pid}")
    routed = client.get(f"/fhir/Patient/{pid}?_format=json")  # a query string takes the router
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    for name in _SAME:
        assert fast.headers.get(name) == routed.headers.get(name), name
    assert (
        fast.headers["x-request-id"]
        and fast.headers["x-request-id"] != routed.headers["x-request-id"]
    )


def test_a_plain_vread_and_if_none_match(client: TestClient) -> None:
    pid = _create(client)
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["meta"]["versionId"] == "1"
    assert client.get(f"/fhir/Patient/{pid}/_history/7").status_code == 404
    etag = client.get(f"/fhir/Patient/{pid}").headers["etag"]
    unchanged = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304


def test_errors_are_the_same_operation_outcomes(
    client: TestClient, anonymous_client: TestClient
) -> None:
    missing = client.get("/fhir/Patient/no-such-id")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    unknown = client.get("/fhir/Spaceship/abc")
    assert unknown.status_code == 404
    assert unknown.json()["issue"][0]["code"] == "not-supported"
    pid = _create(client)
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410 and gone.headers["etag"] == 'W/"2"'
    refused = anonymous_client.get(f"/fhir/Patient/{pid}")
    assert refused.status_code == 401
    assert "www-authenticate" in refused.headers
    xml = client.get(f"/fhir/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 406


def test_every_plain_read_is_audited(client: TestClient) -> None:
    pid = _create(client)
    for _ in range(3):
        assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    found = client.get(
        "/fhir/AuditEvent", params={"patient": f"Patient/{pid}", "subtype": "read"}
    ).json()
    assert len(found.get("entry", [])) == 3  # each read is found at once, none twice
