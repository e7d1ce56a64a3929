"""FHIR resource factories for tests: small valid R4 resources with overridable fields."""

from __future__ import annotations

from typing import Any


def patient(family: str = "Chalmers", given: str = "Peter", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:example:mrn", "value": f"{family}-{given}"}],
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        "birthDate": "1974-12-25",
    }
    body.update(extra)
    return body


def encounter(
    patient_id: str,
    *,
    cls: str = "IMP",
    status: str = "finished",
    start: str = "2025-07-01",
    end: str | None = "2025-07-02",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start, **({"end": end} if end else {})},
    }
    body.update(extra)
    return body


def observation(
    patient_id: str,
    *,
    loinc: str = "718-7",
    value: float = 11.5,
    unit: str = "g/dL",
    when: str = "2025-07-02T08:00:00Z",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def task(
    patient_id: str,
    *,
    code: str = "tcm-interactive-contact",
    status: str = "requested",
    owner: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "https://carecoord.example/CodeSystem/task", "code": code}]},
        "for": {"reference": f"Patient/{patient_id}"},
    }
    if owner:
        body["owner"] = {"reference": owner}
    return body
