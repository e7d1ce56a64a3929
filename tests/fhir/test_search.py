"""Search as case-management screens and integration engines use it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from carecoord.fhir.store import FhirStore
from tests.fhir.factories import encounter, observation, patient, task


def _ids(client: TestClient, url: str, mode: str = "match") -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return [
        e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == mode
    ]


@pytest.fixture
def world(store: FhirStore) -> dict[str, str]:
    peter = store.create("Patient", patient()).resource.res_id
    maria = store.create(
        "Patient",
        patient(
            family="García",
            given="María",
            gender="female",
            birthDate="1990-03-01",
            identifier=[{"system": "urn:example:mrn", "value": "M-1"}],
        ),
    ).resource.res_id
    e1 = store.create(
        "Encounter", encounter(peter, start="2025-07-01", end="2025-07-02")
    ).resource.res_id
    e2 = store.create(
        "Encounter",
        encounter(peter, cls="AMB", start="2025-08-10T09:00:00Z", end="2025-08-10T10:00:00Z"),
    ).resource.res_id
    e3 = store.create(
        "Encounter", encounter(maria, cls="IMP", status="in-progress", start="2025-09-01", end=None)
    ).resource.res_id
    o1 = store.create("Observation", observation(peter, value=11.5)).resource.res_id
    o2 = store.create(
        "Observation", observation(maria, loinc="2951-2", value=133, unit="mmol/L")
    ).resource.res_id
    t1 = store.create("Task", task(peter, owner="Practitioner/nurse-1")).resource.res_id
    t2 = store.create(
        "Task", task(maria, code="medication-reconciliation", status="completed")
    ).resource.res_id
    return {
        "peter": peter,
        "maria": maria,
        "e1": e1,
        "e2": e2,
        "e3": e3,
        "o1": o1,
        "o2": o2,
        "t1": t1,
        "t2": t2,
    }


def test_string_search_is_prefix_case_and_accent_insensitive(
    client: TestClient, world: dict[str, str]
) -> None:
    assert _ids(client, "/fhir/Patient?family=garc") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?name=MARIA") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?family:exact=García") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?family:exact=garcía") == []
    assert _ids(client, "/fhir/Patient?family:contains=alm") == [world["peter"]]
    assert sorted(_ids(client, "/fhir/Patient?family=chal,garc")) == sorted(
        [world["peter"], world["maria"]]
    )


def test_token_search(client: TestClient, world: dict[str, str]) -> None:
    assert _ids(client, "/fhir/Patient?identifier=urn:example:mrn|M-1") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?identifier=M-1") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?identifier=urn:other|M-1") == []
    assert _ids(client, "/fhir/Patient?gender=female") == [world["maria"]]
    assert _ids(client, "/fhir/Patient?gender:not=female") == [world["peter"]]
    assert _ids(client, "/fhir/Task?code=medication-reconciliation") == [world["t2"]]
    assert _ids(client, "/fhir/Task?status=requested&owner=Practitioner/nurse-1") == [world["t1"]]


def test_encounter_search_by_patient_class_status_date(
    client: TestClient, world: dict[str, str]
) -> None:
    peter = world["peter"]
    assert sorted(_ids(client, f"/fhir/Encounter?patient={peter}")) == sorted(
        [world["e1"], world["e2"]]
    )
    assert _ids(client, f"/fhir/Encounter?patient=Patient/{peter}&class=IMP") == [world["e1"]]
    assert _ids(client, "/fhir/Encounter?status=in-progress") == [world["e3"]]
    assert _ids(client, "/fhir/Encounter?date=2025-08-10") == [world["e2"]]
    assert sorted(_ids(client, "/fhir/Encounter?date=ge2025-08-01")) == sorted(
        [world["e2"], world["e3"]]
    )
    assert _ids(client, "/fhir/Encounter?date=lt2025-07-02&patient=" + peter) == [world["e1"]]
    assert _ids(
        client, "/fhir/Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"
    ) == [world["e2"]]


def test_quantity_and_missing(client: TestClient, world: dict[str, str]) -> None:
    assert _ids(client, "/fhir/Observation?value-quantity=lt12") == [world["o1"]]
    assert _ids(
        client, "/fhir/Observation?value-quantity=133|http://unitsofmeasure.org|mmol/L"
    ) == [world["o2"]]
    assert _ids(client, "/fhir/Observation?value-quantity=11.5") == [world["o1"]]
    assert _ids(client, "/fhir/Task?owner:missing=true") == [world["t2"]]
    assert _ids(client, "/fhir/Task?owner:missing=false") == [world["t1"]]


def test_chained_search(client: TestClient, world: dict[str, str]) -> None:
    assert _ids(client, "/fhir/Encounter?subject:Patient.identifier=urn:example:mrn|M-1") == [
        world["e3"]
    ]
    assert _ids(client, "/fhir/Encounter?patient.identifier=M-1") == [world["e3"]]
    assert sorted(_ids(client, "/fhir/Encounter?patient.name=peter")) == sorted(
        [world["e1"], world["e2"]]
    )
    assert _ids(client, "/fhir/Task?patient.family=garcia") == [world["t2"]]
    bad = client.get("/fhir/Encounter?patient.organization.name=x")
    assert bad.status_code == 400


def test_include_and_revinclude(client: TestClient, world: dict[str, str]) -> None:
    url = f"/fhir/Encounter?_id={world['e3']}&_include=Encounter:subject"
    assert _ids(client, url) == [world["e3"]]
    assert _ids(client, url, mode="include") == [world["maria"]]
    rev = (
        f"/fhir/Patient?_id={world['peter']}&_revinclude=Encounter:patient&_revinclude=Task:patient"
    )
    assert sorted(_ids(client, rev, mode="include")) == sorted(
        [world["e1"], world["e2"], world["t1"]]
    )


def test_id_last_updated_summary_count_and_elements(
    client: TestClient, world: dict[str, str]
) -> None:
    assert _ids(client, f"/fhir/Patient?_id={world['peter']},{world['maria']}") != []
    assert client.get("/fhir/Encounter?_summary=count").json()["total"] == 3
    assert "entry" not in client.get("/fhir/Encounter?_summary=count").json()
    assert len(_ids(client, "/fhir/Patient?_lastUpdated=gt2000-01-01")) == 2
    assert _ids(client, "/fhir/Patient?_lastUpdated=lt2000-01-01") == []
    bundle = client.get(f"/fhir/Patient?_id={world['peter']}&_elements=gender").json()
    resource = bundle["entry"][0]["resource"]
    assert resource["gender"] == "male" and "name" not in resource
    assert {"code": "SUBSETTED"}.items() <= resource["meta"]["tag"][0].items()


def test_paging_is_stable_while_data_changes(client: TestClient, store: FhirStore) -> None:
    ids = [
        store.create("Patient", patient(family=f"Fam{i:02d}")).resource.res_id for i in range(25)
    ]
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_count=10&_sort=family"
    pages = 0
    while url:
        bundle = client.get(url).json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else None
        if pages == 0:
            # A write between pages must not shift the later pages.
            store.create("Patient", patient(family="Aaa-new"))
            store.delete("Patient", ids[0])
        pages += 1
    assert pages == 3
    assert seen == ids  # sorted by family Fam00..Fam24: no overlap, no gap


def test_sort_descending_by_date(client: TestClient, world: dict[str, str]) -> None:
    assert _ids(client, f"/fhir/Encounter?patient={world['peter']}&_sort=-date") == [
        world["e2"],
        world["e1"],
    ]
    assert _ids(client, f"/fhir/Encounter?patient={world['peter']}&_sort=date") == [
        world["e1"],
        world["e2"],
    ]


def test_post_search_equals_get(client: TestClient, world: dict[str, str]) -> None:
    response = client.post(
        "/fhir/Encounter/_search",
        content=f"patient={world['peter']}&class=IMP",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [world["e1"]]


def test_lenient_handling_ignores_unknown_parameters(
    client: TestClient, world: dict[str, str]
) -> None:
    strict = client.get("/fhir/Patient?gender=female&foo=bar")
    assert strict.status_code == 400
    lenient = client.get(
        "/fhir/Patient?gender=female&foo=bar", headers={"prefer": "handling=lenient"}
    )
    assert [e["resource"]["id"] for e in lenient.json()["entry"]] == [world["maria"]]


def test_bad_parameter_values_are_400(client: TestClient) -> None:
    for url in (
        "/fhir/Encounter?date=yesterday",
        "/fhir/Patient?_count=ten",
        "/fhir/Observation?value-quantity=abc",
        "/fhir/Patient?_cursor=%%%",
        "/fhir/Patient?_sort=shoe",
    ):
        response = client.get(url)
        assert response.status_code == 400, url
        assert response.json()["resourceType"] == "OperationOutcome"
