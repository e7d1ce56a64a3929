"""assess_discharge through a Writer: inputs from FHIR data, RiskAssessments written once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from carecoord.fhir.store import FhirStore
from carecoord.transitions.risk import RiskConfig, assess_discharge, load_risk_config
from carecoord.transitions.risk.config import weight_tables
from carecoord.transitions.risk.resources import RISK_IDENTIFIER_SYSTEM, score_json
from tests.transitions.risk.builders import (
    ICD10CM,
    SNOMED,
    condition,
    encounter,
    lab,
    patient,
    procedure,
)

CONFIG = Path(__file__).resolve().parents[3] / "config"
NOW = datetime(2025, 7, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> RiskConfig:
    return load_risk_config(CONFIG)


def _put(store: FhirStore, *bodies: dict[str, Any]) -> None:
    def work(w: Any) -> None:
        for body in bodies:
            w.update(body["resourceType"], body["id"], body)

    store.write(work)


def _assessments(store: FhirStore) -> dict[str, dict[str, Any]]:
    page = store.search(store.parse("RiskAssessment", [("_count", "100")]))
    out = {}
    for _, _, content in page.matches:
        body = orjson.loads(content)
        out[body["identifier"][0]["value"]] = body
    return out


def _h1_patient(store: FhirStore) -> None:
    """H1 in FHIR: Hb 11.5, Na 133, a procedure, urgent, 3 prior admissions, LOS 6."""
    _put(
        store,
        patient("p1"),
        encounter("prior1", "p1", "2024-09-01", "2024-09-03"),
        encounter("prior2", "p1", "2024-12-01", "2024-12-02"),
        encounter("prior3", "p1", "2025-03-01", "2025-03-02"),
        encounter("old", "p1", "2023-01-01", "2023-01-04"),
        encounter("ed1", "p1", "2025-05-01T10:00:00Z", "2025-05-01T14:00:00Z", cls="EMER"),
        encounter(
            "stay",
            "p1",
            "2025-07-01T14:00:00-04:00",
            "2025-07-07T11:00:00-04:00",
            priority="UR",
        ),
        condition("c-chf", "p1", SNOMED, "88805009"),
        condition("c-dm", "p1", ICD10CM, "E11.9"),
        condition("c-copd", "p1", SNOMED, "185086009"),
        lab("hb-early", "p1", "718-7", 13.0, "g/dL", "2025-07-02T08:00:00-04:00"),
        lab("hb", "p1", "718-7", 11.5, "g/dL", "2025-07-06T08:00:00-04:00"),
        lab("hb-after", "p1", "718-7", 14.0, "g/dL", "2025-07-09T08:00:00-04:00"),
        lab("na", "p1", "2951-2", 133, "mmol/L", "2025-07-06T08:00:00-04:00"),
        procedure("proc", "p1", "stay", "2025-07-03T10:00:00-04:00"),
    )


def test_h1_and_lace_from_fhir_data(store: FhirStore, config: RiskConfig) -> None:
    _h1_patient(store)
    risk = store.write(lambda w: assess_discharge(w, encounter_id="stay", now=NOW, config=config))
    assert (risk.hospital.score, risk.hospital.band) == (8, "high")
    # LACE: LOS 6 -> 4, urgent -> 3, CHF 2 + diabetes 1 + COPD 2 = 5 -> 5, 1 ED visit -> 1.
    assert [c.points for c in risk.lace.components] == [4, 3, 5, 1]
    assert (risk.lace.score, risk.lace.band) == (13, "high")
    assert risk.band == "high"
    assert "haemoglobin at discharge" not in risk.hospital.missing
    stored = _assessments(store)
    assert set(stored) == {"stay:LACE", "stay:HOSPITAL"}
    hospital = score_json(stored["stay:HOSPITAL"])
    assert hospital["score"] == 8 and hospital["band"] == "high"
    assert hospital["components"]["H"] == {
        "label": "haemoglobin < 12 g/dL at discharge",
        "value": 11.5,
        "points": 1,
    }
    assert stored["stay:LACE"]["subject"] == {"reference": "Patient/p1"}
    assert stored["stay:LACE"]["method"]["coding"][0]["code"] == "LACE"


def test_charlson_1987_weights_change_lace(store: FhirStore, config: RiskConfig) -> None:
    _h1_patient(store)
    original = config.with_weights("charlson-1987", weight_tables(CONFIG)["charlson-1987"])
    risk = store.write(lambda w: assess_discharge(w, encounter_id="stay", now=NOW, config=original))
    assert risk.lace.components[2].value == 3 and risk.lace.components[2].points == 3


def test_replay_writes_nothing_new_and_update_recomputes(
    store: FhirStore, config: RiskConfig
) -> None:
    _h1_patient(store)
    store.write(lambda w: assess_discharge(w, encounter_id="stay", now=NOW, config=config))
    first = {k: v["meta"]["versionId"] for k, v in _assessments(store).items()}
    store.write(lambda w: assess_discharge(w, encounter_id="stay", now=NOW, config=config))
    assert {k: v["meta"]["versionId"] for k, v in _assessments(store).items()} == first
    # A later sodium result during the stay corrects the low value: recomputed in place.
    _put(store, lab("na2", "p1", "2951-2", 138, "mmol/L", "2025-07-07T08:00:00-04:00"))
    risk = store.write(lambda w: assess_discharge(w, encounter_id="stay", now=NOW, config=config))
    assert risk.hospital.score == 7
    after = _assessments(store)
    assert len(after) == 2
    assert after["stay:HOSPITAL"]["meta"]["versionId"] == "2"
    page = store.search(
        store.parse("RiskAssessment", [("identifier", f"{RISK_IDENTIFIER_SYSTEM}|stay:HOSPITAL")])
    )
    assert len(page.matches) == 1


def test_missing_labs_and_acuity_are_reported(store: FhirStore, config: RiskConfig) -> None:
    _put(
        store,
        patient("p2"),
        encounter("s", "p2", "2025-07-01T10:00:00-04:00", "2025-07-03T10:00:00-04:00"),
    )
    risk = store.write(lambda w: assess_discharge(w, encounter_id="s", now=NOW, config=config))
    assert risk.hospital.score == 0
    assert {"haemoglobin at discharge", "sodium at discharge", "admission acuity"} <= set(
        risk.hospital.missing
    )
    assert "admission acuity" in risk.lace.missing
    assert any(m.startswith("conditions") for m in risk.lace.missing)
    stored = score_json(_assessments(store)["s:HOSPITAL"])
    assert "haemoglobin at discharge" in stored["missing"]
    assert stored["components"]["H"]["points"] == 0


def test_ed_visit_that_led_to_the_admission_is_not_counted(
    store: FhirStore, config: RiskConfig
) -> None:
    _put(
        store,
        patient("p3"),
        encounter("ed-old", "p3", "2025-03-01T10:00:00Z", "2025-03-01T12:00:00Z", cls="EMER"),
        encounter("ed-now", "p3", "2025-07-01T08:00:00Z", "2025-07-01T13:00:00Z", cls="EMER"),
        encounter("s", "p3", "2025-07-01T14:00:00Z", "2025-07-02T14:00:00Z"),
    )
    risk = store.write(lambda w: assess_discharge(w, encounter_id="s", now=NOW, config=config))
    acute = risk.lace.components[1]
    ed = risk.lace.components[3]
    assert (acute.value, acute.points) == (True, 3)
    assert (ed.value, ed.points) == (1, 1)
    assert "admission acuity" not in risk.lace.missing


def test_oncology_service_and_unit_conversion(store: FhirStore, config: RiskConfig) -> None:
    _put(
        store,
        patient("p4"),
        encounter(
            "s",
            "p4",
            "2025-07-01T10:00:00Z",
            "2025-07-02T10:00:00Z",
            priority="EL",
            service=(SNOMED, "394593009"),
        ),
        lab("hb", "p4", "718-7", 118, "g/L", "2025-07-02T08:00:00Z"),
    )
    risk = store.write(lambda w: assess_discharge(w, encounter_id="s", now=NOW, config=config))
    points = {c.code: (c.value, c.points) for c in risk.hospital.components}
    assert points["O"] == (True, 2)
    assert points["H"] == (11.8, 1)
    assert points["I"] == (False, 0)
