"""Scoring a discharge inside a write transaction: load, score, write the RiskAssessments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carecoord.fhir.errors import BusinessRule
from carecoord.fhir.store import Writer
from carecoord.fhir.values import format_instant, to_micros
from carecoord.transitions.readmissions.codematch import CodeSet, Coding, codings_of
from carecoord.transitions.readmissions.stays import EncounterFacts, parse_encounter, ref_id
from carecoord.transitions.risk.config import RiskConfig
from carecoord.transitions.risk.facts import DischargeInputs, discharge_inputs
from carecoord.transitions.risk.resources import risk_assessment, risk_identifier
from carecoord.transitions.risk.scores import (
    Band,
    ScoreResult,
    combine_bands,
    score_hospital,
    score_lace,
)

__all__ = [
    "DischargeRisk",
    "PatientRecord",
    "assess_discharge",
    "load_patient_record",
    "score_inputs",
]

#: Upper bound of resources of one type read for one patient.
MAX_PER_PATIENT = 100_000


@dataclass(frozen=True)
class DischargeRisk:
    """Both scores of a discharge and the combined band (which chooses the follow-up plan)."""

    lace: ScoreResult
    hospital: ScoreResult
    band: Band


@dataclass(frozen=True)
class PatientRecord:
    """One patient's resources the rules read (plain dicts), loaded once."""

    patient_id: str
    encounters: dict[str, dict[str, Any]]
    conditions: list[dict[str, Any]]
    observations: list[dict[str, Any]]
    procedures: list[dict[str, Any]]

    def encounter_facts(self, zone: ZoneInfo) -> list[EncounterFacts]:
        codes: dict[str, Coding] = {}
        for cond in self.conditions:
            found = codings_of([cond.get("code")])
            if found:
                codes[str(cond.get("id"))] = found[0]
        return [parse_encounter(e, zone, codes.get) for e in self.encounters.values()]


def _load(w: Writer, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    out = []
    for res_id in w.find(res_type, params, limit=MAX_PER_PATIENT):
        content = w.read(res_type, res_id).content
        if content is not None:
            out.append(orjson.loads(content))
    return out


def load_patient_record(
    w: Writer, patient_id: str, config: RiskConfig, *, labs: bool = True
) -> PatientRecord:
    """Read the patient's Encounters, Conditions, lab Observations and Procedures through ``w``."""
    patient = [("patient", f"Patient/{patient_id}")]
    encounters = {str(e["id"]): e for e in _load(w, "Encounter", patient)}
    # Lab codes are matched in Python: a code token matches most Observations of the database.
    labs_of = CodeSet.of([*config.hospital.haemoglobin_codes, *config.hospital.sodium_codes])
    return PatientRecord(
        patient_id=patient_id,
        encounters=encounters,
        conditions=_load(w, "Condition", patient),
        observations=[
            o
            for o in (_load(w, "Observation", patient) if labs else [])
            if labs_of.any_match(codings_of([o.get("code")]))
        ],
        procedures=_load(w, "Procedure", patient),
    )


def score_inputs(inputs: DischargeInputs, config: RiskConfig) -> DischargeRisk:
    """Score LACE and HOSPITAL from their inputs and combine the bands."""
    lace = score_lace(inputs.lace, moderate=config.lace.bands.moderate, high=config.lace.bands.high)
    hospital = score_hospital(
        inputs.hospital,
        intermediate=config.hospital.bands.intermediate,
        high=config.hospital.bands.high,
    )
    band = combine_bands(
        lace.band,
        hospital.band,
        how=config.combine,
        intermediate_as=config.hospital_intermediate_as,
    )
    return DischargeRisk(lace, hospital, band)


def assess_record(
    record: PatientRecord, encounter_id: str, config: RiskConfig, *, now: datetime
) -> tuple[DischargeInputs, DischargeRisk]:
    """Score one discharge of an already loaded patient record (pure)."""
    facts = record.encounter_facts(ZoneInfo(config.timezone))
    inputs = discharge_inputs(
        encounter_id,
        facts,
        record.conditions,
        record.observations,
        record.procedures,
        config,
        now=now,
    )
    return inputs, score_inputs(inputs, config)


def write_assessments(
    w: Writer,
    record: PatientRecord,
    encounter_id: str,
    inputs: DischargeInputs,
    risk: DischargeRisk,
    now: datetime,
) -> None:
    """Create or update the two RiskAssessments of the discharge (identifier ``{enc}:{method}``)."""
    end = inputs.stay.end or now
    occurrence = format_instant(to_micros(end))
    for result in (risk.lace, risk.hospital):
        body = risk_assessment(
            result,
            patient_id=record.patient_id,
            encounter_id=encounter_id,
            occurrence=occurrence,
            basis=inputs.basis,
        )
        ident = risk_identifier(encounter_id, result.method)
        w.conditional_update(
            "RiskAssessment", [("identifier", f"{ident['system']}|{ident['value']}")], body
        )


def assess_discharge(
    w: Writer, *, encounter_id: str, now: datetime, config: RiskConfig
) -> DischargeRisk:
    """Score the discharge from ``encounter_id`` and write its LACE and HOSPITAL RiskAssessments.

    Idempotent: a replay writes nothing new; an updated Encounter recomputes both in place.
    """
    stored = w.read("Encounter", encounter_id)
    if stored.content is None:
        raise BusinessRule("The encounter to assess is deleted")
    encounter: Mapping[str, Any] = orjson.loads(stored.content)
    patient_id = ref_id(encounter.get("subject"), "Patient")
    if patient_id is None:
        raise BusinessRule("The encounter to assess has no patient")
    record = load_patient_record(w, patient_id, config)
    inputs, risk = assess_record(record, encounter_id, config, now=now)
    write_assessments(w, record, encounter_id, inputs, risk, now)
    return risk
