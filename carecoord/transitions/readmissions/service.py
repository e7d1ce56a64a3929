"""Readmission detection inside a write transaction: on an admission, and over history (scan)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import select, update

from carecoord.fhir.errors import Gone, NotFound
from carecoord.fhir.store import Writer
from carecoord.fhir.values import format_instant, to_micros
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    CareRole,
    TaskCode,
    task_display,
    task_identifier,
)
from carecoord.transitions.readmissions.codematch import Coding, codings_of
from carecoord.transitions.readmissions.config import ReadmissionConfig
from carecoord.transitions.readmissions.stays import (
    EncounterFacts,
    ReadmissionFinding,
    Stay,
    chain_stays,
    find_readmissions,
    parse_encounter,
    ref_id,
)
from carecoord.transitions.readmissions.tables import readmissions

__all__ = [
    "REVIEW_ITEM",
    "Readmission",
    "detect_on_admission",
    "patient_findings",
    "record_finding",
]

#: Item key of the review Task's identifier (``task_identifier(readmission id, REVIEW_ITEM)``).
REVIEW_ITEM = "readmission-review"
_MAX = 100_000


@dataclass(frozen=True)
class Readmission:
    """A readmission found: both stays, days between, planned or not, and the review Task."""

    patient_id: str
    index_encounter_id: str
    readmission_encounter_id: str
    index_discharged: date
    readmitted: date
    days: int
    planned: bool
    planned_rule: str | None
    task_id: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "patient": f"Patient/{self.patient_id}",
            "index_encounter": f"Encounter/{self.index_encounter_id}",
            "readmission_encounter": f"Encounter/{self.readmission_encounter_id}",
            "index_discharged": self.index_discharged.isoformat(),
            "readmitted": self.readmitted.isoformat(),
            "days_between": self.days,
            "planned": self.planned,
            "planned_rule": self.planned_rule,
            "review_task": f"Task/{self.task_id}" if self.task_id else None,
        }


def _read_all(w: Writer, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    out = []
    for res_id in w.find(res_type, params, limit=_MAX):
        content = w.read(res_type, res_id).content
        if content is not None:
            out.append(orjson.loads(content))
    return out


def _condition_codes(w: Writer, encounters: list[dict[str, Any]]) -> dict[str, Coding]:
    """Codes of the Conditions named as encounter diagnoses (the principal condition)."""
    codes: dict[str, Coding] = {}
    for enc in encounters:
        for diagnosis in enc.get("diagnosis") or ():
            cid = ref_id(diagnosis.get("condition"), "Condition")
            if cid is None or cid in codes:
                continue
            try:
                content = w.read("Condition", cid).content
            except (NotFound, Gone):  # a dangling reference: no principal condition from it
                continue
            if content is not None:
                found = codings_of([orjson.loads(content).get("code")])
                if found:
                    codes[cid] = found[0]
    return codes


def patient_findings(
    w: Writer, patient_id: str, config: ReadmissionConfig
) -> tuple[list[Stay], list[ReadmissionFinding]]:
    """The patient's chained inpatient stays and every readmission among them."""
    zone = ZoneInfo(config.timezone)
    # Filtered here, not in the search: a class token matches most Encounters of the database,
    # and the patient's own are few.
    classes = set(config.encounters.inpatient_classes)
    encounters = [
        e
        for e in _read_all(w, "Encounter", [("patient", f"Patient/{patient_id}")])
        if (e.get("class") or {}).get("code") in classes
    ]
    codes = _condition_codes(w, encounters)
    facts = [parse_encounter(e, zone, codes.get) for e in encounters]
    stays = chain_stays(facts, config)
    return stays, find_readmissions(stays, config)


def _nurse_case_manager(w: Writer, patient_id: str) -> dict[str, Any] | None:
    """The patient's nurse case manager from an active CareTeam, if any."""
    for team in _read_all(w, "CareTeam", [("patient", f"Patient/{patient_id}")]):
        if team.get("status") in ("inactive", "entered-in-error", "suspended"):
            continue
        for participant in team.get("participant") or ():
            roles = codings_of(participant.get("role") or ())
            if (CARE_ROLE_SYSTEM, CareRole.NURSE_CASE_MANAGER.value) in roles:
                member = participant.get("member")
                if isinstance(member, Mapping) and member.get("reference"):
                    return {"reference": member["reference"]}
    return None


def _care_plan(w: Writer, stay: Stay) -> str | None:
    """The transition CarePlan of the index discharge (identifier = discharge encounter id)."""
    for encounter_id in reversed(stay.ids):
        found = w.find("CarePlan", [("identifier", f"{CAREPLAN_IDENTIFIER_SYSTEM}|{encounter_id}")])
        if found:
            return found[0]
    return None


def _review_task(
    finding: ReadmissionFinding,
    patient_id: str,
    owner: Mapping[str, Any] | None,
    care_plan: str | None,
    now: datetime,
) -> dict[str, Any]:
    index_id = finding.index.discharge.id
    readmission_id = finding.readmission.admission.id
    code = TaskCode.READMISSION_REVIEW
    body: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [task_identifier(readmission_id, REVIEW_ITEM)],
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {
            "coding": [
                {"system": TASK_CODE_SYSTEM, "code": code.value, "display": task_display(code)}
            ]
        },
        "description": (
            f"Readmitted {finding.days} day(s) after discharge: review what went wrong with the "
            "last transition of care."
        ),
        "focus": {"reference": f"Encounter/{index_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{readmission_id}"},
        "authoredOn": format_instant(to_micros(now)),
        "performerType": [
            {
                "coding": [
                    {
                        "system": CARE_ROLE_SYSTEM,
                        "code": CareRole.NURSE_CASE_MANAGER.value,
                        "display": "Nurse case manager",
                    }
                ]
            }
        ],
        "input": [
            {
                "type": {"text": "index encounter"},
                "valueReference": {"reference": f"Encounter/{index_id}"},
            },
            {
                "type": {"text": "readmission encounter"},
                "valueReference": {"reference": f"Encounter/{readmission_id}"},
            },
            {"type": {"text": "days between"}, "valueInteger": finding.days},
        ],
    }
    if care_plan is not None:
        body["basedOn"] = [{"reference": f"CarePlan/{care_plan}"}]
    if owner is not None:
        body["owner"] = dict(owner)
    return body


def record_finding(
    w: Writer,
    finding: ReadmissionFinding,
    *,
    now: datetime,
    config: ReadmissionConfig,
    review_task: bool = True,
) -> Readmission:
    """Record a readmission (idempotent) and, when unplanned, its review Task."""
    readmission_id = finding.readmission.admission.id
    index_id = finding.index.discharge.id
    patient_id = finding.readmission.admission.patient or ""
    task_id: str | None = None
    if review_task and not finding.planned:
        ident = task_identifier(readmission_id, REVIEW_ITEM)
        owner = _nurse_case_manager(w, patient_id)
        result = w.create(
            "Task",
            _review_task(
                finding,
                patient_id,
                owner,
                _care_plan(w, finding.index),
                now,
            ),
            if_none_exist=[("identifier", f"{ident['system']}|{ident['value']}")],
        )
        task_id = result.resource.res_id
    discharged = finding.index.discharged_on
    assert discharged is not None
    row = {
        "index_encounter": index_id,
        "patient": patient_id,
        "index_discharged": discharged,
        "readmitted": finding.readmission.admitted_on,
        "days": finding.days,
        "planned": finding.planned,
        "planned_rule": finding.readmission.planned,
        "facility": finding.index.facility(config.transfers.attribution),
    }
    w.lock(f"readmission:{readmission_id}")
    existing = w.conn.execute(
        select(readmissions.c.task).where(readmissions.c.readmission_encounter == readmission_id)
    ).first()
    if existing is None:
        w.conn.execute(
            readmissions.insert().values(
                readmission_encounter=readmission_id,
                task=task_id,
                detected_at=to_micros(now),
                **row,
            )
        )
    else:
        task_id = task_id or existing.task
        w.conn.execute(
            update(readmissions)
            .where(readmissions.c.readmission_encounter == readmission_id)
            .values(task=task_id, **row)
        )
    return Readmission(
        patient_id=patient_id,
        index_encounter_id=index_id,
        readmission_encounter_id=readmission_id,
        index_discharged=discharged,
        readmitted=finding.readmission.admitted_on,
        days=finding.days,
        planned=finding.planned,
        planned_rule=finding.readmission.planned,
        task_id=task_id,
    )


def detect_on_admission(
    w: Writer, *, encounter_id: str, now: datetime, config: ReadmissionConfig
) -> Readmission | None:
    """If the admission ``encounter_id`` is a 30-day readmission, record it and ask for a review.

    Looks back ``window_days`` from the admission for an index discharge (rules.md §5). A transfer
    or same-day continuation of an earlier stay is not an admission; a planned readmission is
    recorded (listed as planned) without a review Task. Idempotent.
    """
    content = w.read("Encounter", encounter_id).content
    if content is None:
        return None
    encounter = orjson.loads(content)
    facts: EncounterFacts = parse_encounter(encounter, ZoneInfo(config.timezone))
    if facts.patient is None or facts.cls not in config.encounters.inpatient_classes:
        return None
    _, findings = patient_findings(w, facts.patient, config)
    for finding in findings:
        if finding.readmission.admission.id == encounter_id:
            return record_finding(w, finding, now=now, config=config)
    return None
