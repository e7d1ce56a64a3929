"""Charlson categories from ICD-10-CM (Quan 2005) and SNOMED CT, with the hierarchy."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecoord.transitions.risk import RiskConfig, load_risk_config
from carecoord.transitions.risk.charlson import charlson_score

CONFIG = Path(__file__).resolve().parents[3] / "config"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def cfg() -> RiskConfig:
    return load_risk_config(CONFIG)


@pytest.mark.parametrize(
    ("system", "code", "category"),
    [
        (ICD, "I21.4", "myocardial_infarction"),
        (ICD, "I25.2", "myocardial_infarction"),
        (ICD, "I50.22", "congestive_heart_failure"),
        (ICD, "I42.7", "congestive_heart_failure"),
        (ICD, "C78.7", "metastatic_solid_tumour"),
        (ICD, "B20", "hiv_aids"),
        (ICD, "E11.22", "diabetes_complicated"),
        (ICD, "N18.3", "mild_renal"),
        (ICD, "N18.6", "renal"),
        (SCT, "88805009", "congestive_heart_failure"),
        (SCT, "26929004", "dementia"),
        (SCT, "185086009", "chronic_pulmonary"),
        (SCT, "399211009", "myocardial_infarction"),
        (SCT, "698754002", "hemiplegia"),
    ],
)
def test_code_maps_to_category(cfg: RiskConfig, system: str, code: str, category: str) -> None:
    result = charlson_score([(system, code)], cfg.mappings, cfg.weights, cfg.hierarchy)
    assert result.categories == (category,)


def test_unrelated_codes_score_nothing(cfg: RiskConfig) -> None:
    # Chronic ischaemic heart disease (not MI), hypertension, and an ICD code in another system.
    codes = [(ICD, "I25.1"), (SCT, "38341003"), ("http://example.org/other", "I21")]
    found = charlson_score(codes, cfg.mappings, cfg.weights, cfg.hierarchy)
    assert found.score == 0 and found.categories == ()


def test_hierarchy_keeps_the_severer_category(cfg: RiskConfig) -> None:
    codes = [
        (ICD, "E11.9"),
        (ICD, "E11.22"),
        (ICD, "C18.0"),
        (ICD, "C78.0"),
        (ICD, "N18.2"),
        (ICD, "N18.5"),
    ]
    result = charlson_score(codes, cfg.mappings, cfg.weights, cfg.hierarchy)
    assert result.categories == ("diabetes_complicated", "metastatic_solid_tumour", "renal")
    assert result.score == 2 + 6 + 4


def test_each_category_counts_once(cfg: RiskConfig) -> None:
    codes = [(ICD, "I50.9"), (SCT, "88805009"), (ICD, "I11.0")]
    assert charlson_score(codes, cfg.mappings, cfg.weights, cfg.hierarchy).score == 2
