"""LACE and HOSPITAL: the worked examples of rules.md §8 (L1-L5, H1-H2) and band combination."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecoord.transitions.risk import (
    HospitalInputs,
    LaceInputs,
    combine_bands,
    load_risk_config,
    score_hospital,
    score_lace,
)
from carecoord.transitions.risk.charlson import charlson_score
from carecoord.transitions.risk.config import weight_tables

CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.mark.parametrize(
    ("case", "inputs", "score", "band"),
    [
        ("L1", LaceInputs(los_days=5, acute=True, charlson=2, ed_visits=1), 10, "high"),
        ("L2", LaceInputs(los_days=0, acute=False, charlson=0, ed_visits=0), 0, "low"),
        ("L3", LaceInputs(los_days=14, acute=True, charlson=4, ed_visits=6), 19, "high"),
        ("L4", LaceInputs(los_days=3, acute=False, charlson=3, ed_visits=2), 8, "moderate"),
    ],
)
def test_lace_worked_examples(case: str, inputs: LaceInputs, score: int, band: str) -> None:
    result = score_lace(inputs)
    assert (result.score, result.band) == (score, band), case
    assert result.missing == ()


def test_lace_l1_component_breakdown() -> None:
    result = score_lace(LaceInputs(los_days=5, acute=True, charlson=2, ed_visits=1))
    assert {k: v["points"] for k, v in result.as_json()["components"].items()} == {
        "L": 4,
        "A": 3,
        "C": 2,
        "E": 1,
    }


@pytest.mark.parametrize(
    ("days", "points"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (6, 4), (7, 5), (13, 5), (14, 7)]
)
def test_lace_length_of_stay_points(days: int, points: int) -> None:
    result = score_lace(LaceInputs(los_days=days, acute=False, charlson=0, ed_visits=0))
    assert result.score == points


def test_unknown_acuity_scores_zero_and_is_reported() -> None:
    result = score_lace(LaceInputs(los_days=2, acute=None, charlson=0, ed_visits=0))
    assert result.score == 2
    assert "admission acuity" in result.missing


def test_l5_charlson_weight_tables() -> None:
    """CHF + uncomplicated diabetes + COPD: LACE-tool weights C = 5; Charlson-1987 C = 3."""
    config = load_risk_config(CONFIG)
    codes = [
        ("http://hl7.org/fhir/sid/icd-10-cm", "I50.9"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "J44.9"),
    ]
    tables = weight_tables(CONFIG)
    lace_tool = charlson_score(codes, config.mappings, tables["lace-tool"], config.hierarchy)
    original = charlson_score(codes, config.mappings, tables["charlson-1987"], config.hierarchy)
    assert lace_tool.score == 5
    assert original.score == 3
    lace_c = score_lace(LaceInputs(0, False, lace_tool.score, 0)).components[2].points
    orig_c = score_lace(LaceInputs(0, False, original.score, 0)).components[2].points
    assert (lace_c, orig_c) == (5, 3)


def test_h1() -> None:
    result = score_hospital(
        HospitalInputs(
            haemoglobin_g_dl=11.5,
            oncology_service=False,
            sodium_mmol_l=133,
            procedure=True,
            urgent=True,
            prior_admissions=3,
            los_days=6,
        )
    )
    assert (result.score, result.band) == (8, "high")


@pytest.mark.parametrize(("prior", "score", "band"), [(5, 4, "low"), (6, 7, "high")])
def test_h2(prior: int, score: int, band: str) -> None:
    result = score_hospital(
        HospitalInputs(
            haemoglobin_g_dl=12.0,
            oncology_service=False,
            sodium_mmol_l=135,
            procedure=False,
            urgent=False,
            prior_admissions=prior,
            los_days=5,
        )
    )
    assert (result.score, result.band) == (score, band)


def test_missing_labs_score_zero_and_are_reported() -> None:
    result = score_hospital(
        HospitalInputs(
            haemoglobin_g_dl=None,
            oncology_service=None,
            sodium_mmol_l=None,
            procedure=False,
            urgent=True,
            prior_admissions=0,
            los_days=1,
        )
    )
    assert result.score == 1
    assert set(result.missing) == {
        "haemoglobin at discharge",
        "sodium at discharge",
        "discharging service",
    }
    points = {c.code: c.points for c in result.components}
    assert points["H"] == points["S"] == points["O"] == 0


def test_hospital_intermediate_band() -> None:
    inputs = HospitalInputs(11.0, True, 140, False, True, 1, 5)  # H1 + O2 + I1 + L2 = 6
    result = score_hospital(inputs)
    assert (result.score, result.band) == (6, "intermediate")


@pytest.mark.parametrize(
    ("lace", "hospital", "how", "expected"),
    [
        ("low", "intermediate", "max", "moderate"),
        ("high", "low", "max", "high"),
        ("low", "high", "max", "high"),
        ("moderate", "low", "max", "moderate"),
        ("high", "low", "hospital", "low"),
        ("low", "intermediate", "hospital", "moderate"),
        ("moderate", "high", "lace", "moderate"),
    ],
)
def test_combined_band(lace: str, hospital: str, how: str, expected: str) -> None:
    assert combine_bands(lace, hospital, how=how) == expected


def test_intermediate_can_count_as_high() -> None:
    assert combine_bands("low", "intermediate", intermediate_as="high") == "high"
