"""A small EHR chart for pull tests: two patients in the population, one outside it, and the
practitioners, roles, locations and organizations their resources refer to."""

from __future__ import annotations

from typing import Any

from tests.sync.fake_fhir import FakeFhir

LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}
VITALS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}
AMB = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f"Fam-{pid}"}], **extra}


def encounter(eid: str, pid: str, status: str = "in-progress", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": AMB,
        "subject": ref(f"Patient/{pid}"),
        **extra,
    }


def observation(oid: str, pid: str, category: dict[str, Any] = LAB) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [category],
        "code": {"text": "glucose"},
        "subject": ref(f"Patient/{pid}"),
    }


def chart() -> list[dict[str, Any]]:
    """Every resource of the test EHR."""
    return [
        patient(
            "p1",
            generalPractitioner=[ref("Practitioner/dr1")],
            managingOrganization=ref("Organization/org1"),
        ),
        patient("p2"),
        patient("p3"),  # not in the population
        encounter(
            "e1",
            "p1",
            participant=[{"individual": ref("PractitionerRole/role1")}],
            location=[{"location": ref("Location/loc1")}],
            serviceProvider=ref("https://ehr.example.org/fhir/Organization/org1"),
        ),
        encounter("e2", "p2"),
        encounter("e3", "p3"),
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": ref("Patient/p1"),
            "encounter": ref("Encounter/e1/_history/1"),
            "code": {"text": "heart failure"},
        },
        observation("o1", "p1"),
        observation("o2", "p1", VITALS),  # not a lab: not pulled
        {
            "resourceType": "Procedure",
            "id": "pr1",
            "status": "completed",
            "subject": ref("Patient/p1"),
            "performer": [{"actor": ref("Practitioner/dr2")}],
        },
        {
            "resourceType": "Coverage",
            "id": "cov1",
            "status": "active",
            "beneficiary": ref("Patient/p1"),
            "payor": [ref("Organization/org2")],
        },
        {
            "resourceType": "Appointment",
            "id": "ap1",
            "status": "booked",
            "participant": [{"actor": ref("Patient/p2"), "status": "accepted"}],
        },
        {"resourceType": "RelatedPerson", "id": "rp1", "patient": ref("Patient/p1")},
        {
            "resourceType": "PractitionerRole",
            "id": "role1",
            "practitioner": ref("Practitioner/dr2"),
            "organization": ref("Organization/org1"),
            "location": [ref("Location/loc1")],
        },
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Welby"}]},
        {"resourceType": "Practitioner", "id": "dr2", "name": [{"family": "Kildare"}]},
        {"resourceType": "Practitioner", "id": "dr9", "name": [{"family": "Unrelated"}]},
        {
            "resourceType": "Location",
            "id": "loc1",
            "managingOrganization": ref("Organization/org1"),
        },
        {"resourceType": "Organization", "id": "org1", "name": "General Hospital"},
        {"resourceType": "Organization", "id": "org2", "name": "Payer Inc"},
    ]


#: (type, id) of what a pull of patients p1 and p2 stores.
EXPECTED = {
    ("Patient", "p1"),
    ("Patient", "p2"),
    ("Encounter", "e1"),
    ("Encounter", "e2"),
    ("Condition", "c1"),
    ("Observation", "o1"),
    ("Procedure", "pr1"),
    ("Coverage", "cov1"),
    ("Appointment", "ap1"),
    ("RelatedPerson", "rp1"),
    ("PractitionerRole", "role1"),
    ("Practitioner", "dr1"),
    ("Practitioner", "dr2"),
    ("Location", "loc1"),
    ("Organization", "org1"),
    ("Organization", "org2"),
}


def seed(fake: FakeFhir) -> None:
    for resource in chart():
        fake.put(resource)
