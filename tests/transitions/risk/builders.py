"""FHIR bodies for the risk, readmission and metrics tests (plain dicts, ids given)."""

from __future__ import annotations

from typing import Any

NUBC = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"


def encounter(
    eid: str,
    pid: str,
    start: str,
    end: str | None,
    *,
    cls: str = "IMP",
    disposition: str | None = None,
    priority: str | None = None,
    facility: str | None = "hosp-a",
    unit: str | None = None,
    reason: tuple[str, str] | None = None,
    service: tuple[str, str] | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status or ("finished" if end else "in-progress"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, **({"end": end} if end else {})},
    }
    if disposition:
        body["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": NUBC, "code": disposition}]}
        }
    if priority:
        body["priority"] = {"coding": [{"system": ACT_PRIORITY, "code": priority}]}
    if facility:
        body["serviceProvider"] = {"reference": f"Organization/{facility}"}
    if unit:
        body["location"] = [{"location": {"reference": f"Location/{unit}"}}]
    if reason:
        body["reasonCode"] = [{"coding": [{"system": reason[0], "code": reason[1]}]}]
    if service:
        body["serviceType"] = {"coding": [{"system": service[0], "code": service[1]}]}
    return body


def condition(
    cid: str, pid: str, system: str, code: str, onset: str = "2020-01-01"
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": system, "code": code}]},
        "onsetDateTime": onset,
    }


def lab(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def procedure(prid: str, pid: str, eid: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": prid,
        "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": "80146002"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "performedDateTime": when,
    }


def patient(pid: str, gp: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": "Test"}]}
    if gp:
        body["generalPractitioner"] = [{"reference": f"Practitioner/{gp}"}]
    return body
