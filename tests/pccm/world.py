"""FHIR resources of a small PCCM world (PCPs, members, coverage, visits, family) for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from carecoord.fhir.store import FhirStore
from carecoord.pccm.directory import NEWPATIENTS_URL
from carecoord.pccm.geo import GEOLOCATION_URL
from tests.pccm.helpers import east

NUCC = "http://nucc.org/provider-taxonomy"
FAMILY_MEDICINE = "207Q00000X"
PEDIATRICS = "208000000X"
NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def role(
    rid: str,
    *,
    miles: float = 5.0,
    specialty: str = FAMILY_MEDICINE,
    accepting: str | None = "newpt",
    org: str = "org-1",
    languages: tuple[str, ...] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """Practitioner, Location and PractitionerRole of one PCP (ids derived from ``rid``)."""
    lat, lon = east(miles)
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": rid,
        "active": True,
        "practitioner": {"reference": f"Practitioner/dr-{rid}"},
        "organization": {"reference": f"Organization/{org}"},
        "location": [{"reference": f"Location/loc-{rid}"}],
        "specialty": [{"coding": [{"system": NUCC, "code": specialty}]}],
    }
    if accepting:
        body["extension"] = [
            {
                "url": NEWPATIENTS_URL,
                "extension": [
                    {
                        "url": "acceptingPatients",
                        "valueCodeableConcept": {"coding": [{"code": accepting}]},
                    }
                ],
            }
        ]
    practitioner = {
        "resourceType": "Practitioner",
        "id": f"dr-{rid}",
        "name": [{"family": rid.title(), "prefix": ["Dr"]}],
        "communication": [
            {"coding": [{"system": "urn:ietf:bcp:47", "code": code}]} for code in languages
        ],
    }
    location = {
        "resourceType": "Location",
        "id": f"loc-{rid}",
        "name": f"Clinic {rid}",
        "position": {"latitude": lat, "longitude": lon},
    }
    return [("Practitioner", practitioner), ("Location", location), ("PractitionerRole", body)]


def patient(
    pid: str,
    *,
    birth: str = "1985-03-02",
    gender: str = "female",
    miles: float | None = 0.0,
    line: str = "1 Main St",
    language: str | None = None,
    links: tuple[str, ...] = (),
) -> dict[str, Any]:
    address: dict[str, Any] = {
        "use": "home",
        "line": [line],
        "city": "Raleigh",
        "postalCode": "27601",
    }
    if miles is not None:
        lat, lon = east(miles)
        address["extension"] = [
            {
                "url": GEOLOCATION_URL,
                "extension": [
                    {"url": "latitude", "valueDecimal": lat},
                    {"url": "longitude", "valueDecimal": lon},
                ],
            }
        ]
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Member", "given": [pid]}],
        "gender": gender,
        "birthDate": birth,
        "address": [address],
    }
    if language:
        body["communication"] = [
            {
                "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                "preferred": True,
            }
        ]
    if links:
        body["link"] = [{"other": {"reference": ref}, "type": "seealso"} for ref in links]
    return body


def coverage(
    pid: str,
    *,
    plan: str = "MEDICAID-PCCM",
    subscriber: str | None = None,
    start: str = "2025-01-01",
    end: str | None = None,
) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Coverage",
        "id": f"cov-{pid}",
        "status": "active",
        "beneficiary": {"reference": f"Patient/{pid}"},
        "subscriber": {"reference": subscriber or f"Patient/{pid}"},
        "payor": [{"reference": "Organization/state-medicaid"}],
        "period": period,
        "class": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "plan",
                        }
                    ]
                },
                "value": plan,
            }
        ],
    }


def visit(pid: str, pcp: str, day: str, n: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"enc-{pid}-{pcp}-{day}-{n}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [{"individual": {"reference": f"Practitioner/dr-{pcp}"}}],
        "period": {"start": day, "end": day},
    }


def put(store: FhirStore, *resources: tuple[str, dict[str, Any]] | dict[str, Any]) -> None:
    def work(w: Any) -> None:
        for item in resources:
            res_type, body = item if isinstance(item, tuple) else (item["resourceType"], item)
            w.update(res_type, body["id"], body)

    store.write(work)


def put_all(store: FhirStore, items: list[Any]) -> None:
    put(store, *items)
