"""LACE and HOSPITAL inputs from FHIR resources (plain dicts): stay, history, labs, conditions."""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.readmissions.codematch import CodeSet, Coding, codings_of
from carecoord.transitions.readmissions.stays import (
    EncounterFacts,
    Stay,
    chain_stays,
    parse_instant,
    ref_id,
)
from carecoord.transitions.risk.charlson import charlson_score
from carecoord.transitions.risk.config import RiskConfig
from carecoord.transitions.risk.scores import HospitalInputs, LaceInputs

__all__ = ["DischargeInputs", "discharge_inputs", "months_before"]

_NOT_DONE = frozenset({"not-done", "entered-in-error", "preparation"})
_NOT_VALID = frozenset({"refuted", "entered-in-error"})
_LAB_BAD = frozenset({"cancelled", "entered-in-error", "registered"})


def months_before(moment: datetime, months: int) -> datetime:
    """``moment`` minus whole calendar months (the day clamped to the target month's end)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class DischargeInputs:
    """The inputs of both scores and what they were drawn from."""

    stay: Stay
    lace: LaceInputs
    hospital: HospitalInputs
    charlson_categories: tuple[str, ...]
    basis: tuple[str, ...]  # "Type/id" of the resources used


def _acuity(
    admission: EncounterFacts, lead_in: EncounterFacts | None, config: RiskConfig
) -> bool | None:
    settings = config.encounters
    if admission.priority in settings.acute_priorities:
        return True
    if admission.admit_source in settings.acute_admit_sources or lead_in is not None:
        return True
    if admission.priority in settings.elective_priorities or admission.admit_source:
        return False
    return None


def _lead_in(
    admission: EncounterFacts, history: Sequence[EncounterFacts], config: RiskConfig
) -> EncounterFacts | None:
    """The ED visit that led to the admission (part of it, or ended just before it)."""
    start = admission.start
    assert start is not None
    window = timedelta(hours=config.encounters.ed_lead_in_hours)
    best: EncounterFacts | None = None
    for facts in history:
        if facts.cls not in config.encounters.emergency_classes or facts.start is None:
            continue
        if facts.part_of == admission.id or admission.part_of == facts.id:
            return facts
        end = facts.end or facts.start
        near = facts.start <= start and start - window <= end <= start + window
        if near and (best is None or (best.start is not None and facts.start > best.start)):
            best = facts
    return best


def _lab_value(
    observations: Sequence[Mapping[str, Any]],
    codes: CodeSet,
    stay: Stay,
    zone: ZoneInfo,
    convert: dict[str, float],
) -> tuple[float | None, str | None, str | None]:
    """(value in the target unit, observation id, problem) of the last result during the stay."""
    start, end = stay.start, stay.end
    best: tuple[datetime, float | None, str, str | None] | None = None
    ids = set(stay.ids)
    for obs in observations:
        if obs.get("status") in _LAB_BAD or not codes.any_match(codings_of([obs.get("code")])):
            continue
        when = parse_instant(obs.get("effectiveDateTime") or obs.get("issued"), zone)
        if when is None:
            period = obs.get("effectivePeriod") or {}
            when = parse_instant(period.get("end") or period.get("start"), zone)
        in_stay = ref_id(obs.get("encounter"), "Encounter") in ids
        if when is None or (not in_stay and (when < start or (end is not None and when > end))):
            continue
        quantity = obs.get("valueQuantity") or {}
        value, problem = quantity.get("value"), None
        unit = str(quantity.get("code") or quantity.get("unit") or "").strip()
        factor = convert.get(unit.lower()) if unit else convert.get("")
        if not isinstance(value, int | float) or isinstance(value, bool):
            result, problem = None, "no numeric value"
        elif factor is None:
            result, problem = None, f"unit {unit!r} not understood"
        else:
            result = round(float(value) * factor, 3)
        if best is None or when >= best[0]:
            best = (when, result, str(obs.get("id")), problem)
    if best is None:
        return None, None, None
    return best[1], best[2], best[3]


_HB_UNITS = {"g/dl": 1.0, "g/l": 0.1, "mmol/l": 1.611, "": 1.0}
_NA_UNITS = {"mmol/l": 1.0, "meq/l": 1.0, "": 1.0}


def discharge_inputs(
    encounter_id: str,
    encounters: Sequence[EncounterFacts],
    conditions: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
    procedures: Sequence[Mapping[str, Any]],
    config: RiskConfig,
    *,
    now: datetime,
) -> DischargeInputs:
    """LACE and HOSPITAL inputs of the discharge from ``encounter_id``.

    ``encounters`` are all of the patient's (any class); the others are the patient's resources.
    The stay is the chain of transfers ending at ``encounter_id``; its discharge time is the
    encounter's end (``now`` when it has none, reported as missing).
    """
    zone = ZoneInfo(config.timezone)
    readmissions = config.readmissions
    stays = chain_stays(encounters, readmissions)
    stay = next((s for s in stays if encounter_id in s.ids), None)
    missing: list[str] = []
    if stay is None:  # not an inpatient class: score the encounter on its own
        own = next(e for e in encounters if e.id == encounter_id)
        stay = Stay((own,), None, ((own.start or now).astimezone(zone).date(), None))
    else:
        parts = stay.parts[: stay.ids.index(encounter_id) + 1]
        stay = Stay(parts, stay.planned, (stay.admitted_on, None))
    end = stay.end
    if end is None:
        missing.append("discharge time (scored as now)")
        end = now
    stay = Stay(stay.parts, stay.planned, (stay.admitted_on, end.astimezone(zone).date()))
    admission = stay.admission
    start = stay.start
    los = (end.astimezone(zone).date() - stay.admitted_on).days
    history = [e for e in encounters if e.id not in stay.ids]
    lead_in = _lead_in(admission, history, config)
    acute = _acuity(admission, lead_in, config)

    ed_from = months_before(start, config.lace.ed_lookback_months)
    ed_visits = sum(
        1
        for e in history
        if e.cls in config.encounters.emergency_classes
        and e.start is not None
        and ed_from <= e.start < start
        and (lead_in is None or e.id != lead_in.id)
        and e.status not in ("cancelled", "entered-in-error", "planned")
    )
    adm_from = months_before(start, config.hospital.admissions_lookback_months)
    prior_admissions = sum(
        1 for s in stays if s.ids[0] != stay.ids[0] and adm_from <= s.start < start
    )

    basis: list[str] = []
    codings: list[Coding] = []
    valid_conditions = 0
    for cond in conditions:
        verification = codings_of([cond.get("verificationStatus")])
        if any(code in _NOT_VALID for _, code in verification):
            continue
        onset_period = cond.get("onsetPeriod") or {}
        onset = parse_instant(
            cond.get("onsetDateTime") or cond.get("recordedDate") or onset_period.get("start"), zone
        )
        if onset is not None and onset > end:
            continue
        valid_conditions += 1
        found = codings_of([cond.get("code")])
        codings.extend(found)
        basis.append(f"Condition/{cond.get('id')}")
    charlson = charlson_score(codings, config.mappings, config.weights, config.hierarchy)
    lace_missing: list[str] = []
    if valid_conditions == 0:
        lace_missing.append("conditions (none on record: Charlson scored 0)")

    hb, hb_id, hb_problem = _lab_value(
        observations, CodeSet.of(config.hospital.haemoglobin_codes), stay, zone, _HB_UNITS
    )
    na, na_id, na_problem = _lab_value(
        observations, CodeSet.of(config.hospital.sodium_codes), stay, zone, _NA_UNITS
    )
    hosp_missing: list[str] = []
    for label, problem in (("haemoglobin", hb_problem), ("sodium", na_problem)):
        if problem:
            hosp_missing.append(f"{label} ({problem})")
    basis.extend(f"Observation/{i}" for i in (hb_id, na_id) if i)
    ids = set(stay.ids)
    procedure = False
    for proc in procedures:
        if proc.get("status") in _NOT_DONE:
            continue
        when = parse_instant(
            proc.get("performedDateTime") or (proc.get("performedPeriod") or {}).get("start"), zone
        )
        if ref_id(proc.get("encounter"), "Encounter") in ids or (
            when is not None and start <= when <= end
        ):
            procedure = True
            basis.append(f"Procedure/{proc.get('id')}")
    service = [c for part in stay.parts for c in part.service_types]
    oncology = CodeSet.of(config.hospital.oncology_services).any_match(service) if service else None

    lace = LaceInputs(los, acute, charlson.score, ed_visits, (*missing, *lace_missing))
    hospital = HospitalInputs(
        haemoglobin_g_dl=hb,
        oncology_service=oncology,
        sodium_mmol_l=na,
        procedure=procedure,
        urgent=acute,
        prior_admissions=prior_admissions,
        los_days=los,
        missing=(*missing, *hosp_missing),
    )
    return DischargeInputs(stay, lace, hospital, charlson.categories, tuple(basis))
