"""30-day readmission rules (rules.md §5, R1-R2): index stays, transfer chains, planned rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carecoord.transitions.readmissions import (
    ReadmissionConfig,
    chain_stays,
    find_readmissions,
    load_readmission_config,
)
from carecoord.transitions.readmissions.stays import parse_encounter
from tests.transitions.risk.builders import ICD10CM, SNOMED, encounter

CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.fixture(scope="module")
def cfg() -> ReadmissionConfig:
    return load_readmission_config(CONFIG)


def _find(bodies: list[dict[str, Any]], cfg: ReadmissionConfig) -> list[tuple[str, str, int, bool]]:
    facts = [parse_encounter(b, ZoneInfo(cfg.timezone)) for b in bodies]
    return [
        (f.index.discharge.id, f.readmission.admission.id, f.days, f.planned)
        for f in find_readmissions(chain_stays(facts, cfg), cfg)
    ]


def test_unplanned_readmission_within_30_days(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-03-01T10:00:00-05:00", "2025-03-04T12:00:00-05:00"),
        encounter("b", "p", "2025-04-03T09:00:00-04:00", "2025-04-05T12:00:00-04:00"),
    ]
    assert _find(bodies, cfg) == [("a", "b", 30, False)]


def test_day_31_is_not_a_readmission(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-03-01T10:00:00-05:00", "2025-03-04T12:00:00-05:00"),
        encounter("b", "p", "2025-04-04T09:00:00-04:00", "2025-04-05T12:00:00-04:00"),
    ]
    assert _find(bodies, cfg) == []


def test_r1_ama_discharge_is_not_an_index(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-03-01", "2025-03-02", disposition="07"),
        encounter("b", "p", "2025-03-05", "2025-03-07"),
    ]
    assert _find(bodies, cfg) == []


def test_expired_is_not_an_index(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-03-01", "2025-03-02", disposition="20"),
        encounter("b", "p", "2025-03-05", "2025-03-07"),
    ]
    assert _find(bodies, cfg) == []


def test_r2_planned_chemotherapy_first_then_unplanned_counts_nothing(
    cfg: ReadmissionConfig,
) -> None:
    bodies = [
        encounter("index", "p", "2025-02-26", "2025-03-01"),
        encounter("chemo", "p", "2025-03-10", "2025-03-11", reason=(ICD10CM, "Z51.11")),
        encounter("later", "p", "2025-03-20", "2025-03-23"),
    ]
    found = _find(bodies, cfg)
    assert found == [("index", "chemo", 9, True)]
    assert not any(not planned for *_, planned in found)


def test_snomed_chemotherapy_is_planned(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("index", "p", "2025-02-26", "2025-03-01"),
        encounter("chemo", "p", "2025-03-10", "2025-03-11", reason=(SNOMED, "367336001")),
    ]
    assert _find(bodies, cfg) == [("index", "chemo", 9, True)]


def test_elective_only_rule_needs_a_non_acute_admission(cfg: ReadmissionConfig) -> None:
    knee = (SNOMED, "609588000")
    elective = [
        encounter("i", "p", "2025-02-26", "2025-03-01"),
        encounter("r", "p", "2025-03-10", "2025-03-12", reason=knee, priority="EL"),
    ]
    emergency = [
        encounter("i", "p", "2025-02-26", "2025-03-01"),
        encounter("r", "p", "2025-03-10", "2025-03-12", reason=knee, priority="EM"),
    ]
    assert _find(elective, cfg) == [("i", "r", 9, True)]
    assert _find(emergency, cfg) == [("i", "r", 9, False)]


def test_transfers_chain_into_one_stay(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a1", "p", "2025-05-01", "2025-05-03T10:00:00-04:00", disposition="02"),
        encounter("a2", "p", "2025-05-03T15:00:00-04:00", "2025-05-08", facility="hosp-b"),
        encounter("b", "p", "2025-05-20", "2025-05-22"),
    ]
    facts = [parse_encounter(b, ZoneInfo(cfg.timezone)) for b in bodies]
    stays = chain_stays(facts, cfg)
    assert [s.ids for s in stays] == [("a1", "a2"), ("b",)]
    # The transfer is not a readmission; the chained stay is the index, attributed to hosp-b.
    found = find_readmissions(stays, cfg)
    assert [(f.index.ids, f.readmission.ids, f.days) for f in found] == [(("a1", "a2"), ("b",), 12)]
    assert found[0].index.facility("last") == "hosp-b"


def test_transfer_out_without_a_following_stay_is_not_an_index(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-05-01", "2025-05-03", disposition="02"),
        encounter("b", "p", "2025-05-10", "2025-05-12"),
    ]
    assert _find(bodies, cfg) == []


def test_same_day_same_facility_same_condition_is_a_continuation(cfg: ReadmissionConfig) -> None:
    chf = (SNOMED, "88805009")
    same = [
        encounter("a", "p", "2025-06-01", "2025-06-03T09:00:00-04:00", reason=chf),
        encounter("b", "p", "2025-06-03T18:00:00-04:00", "2025-06-06", reason=chf),
    ]
    other = [
        encounter("a", "p", "2025-06-01", "2025-06-03T09:00:00-04:00", reason=chf),
        encounter("b", "p", "2025-06-03T18:00:00-04:00", "2025-06-06", reason=(SNOMED, "74400008")),
    ]
    assert _find(same, cfg) == []
    assert _find(other, cfg) == [("a", "b", 0, False)]


def test_only_inpatient_classes_count(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("a", "p", "2025-03-01", "2025-03-02"),
        encounter("ed", "p", "2025-03-05", "2025-03-05", cls="EMER"),
        encounter("amb", "p", "2025-03-06", "2025-03-06", cls="AMB"),
    ]
    assert _find(bodies, cfg) == []


def test_planned_stays_can_be_made_index(cfg: ReadmissionConfig) -> None:
    bodies = [
        encounter("index", "p", "2025-02-26", "2025-03-01"),
        encounter("chemo", "p", "2025-03-10", "2025-03-11", reason=(ICD10CM, "Z51.11")),
        encounter("later", "p", "2025-03-20", "2025-03-23"),
    ]
    lenient = cfg.model_copy(update={"planned_stays_are_index": True})
    assert _find(bodies, lenient)[-1] == ("chemo", "later", 9, False)
