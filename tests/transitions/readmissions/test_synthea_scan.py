"""The shared Synthea patients: import, scan, and compare with a count made from the raw bundles."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from carecoord.fhir.store import FhirStore
from carecoord.importer import import_paths
from carecoord.transitions.readmissions.scan import scan
from carecoord.transitions.readmissions.tables import readmissions
from carecoord.transitions.risk import assess_discharge, load_risk_config

CONFIG = Path(__file__).resolve().parents[3] / "config"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ZONE = ZoneInfo("America/New_York")


def _day(value: str) -> date:
    return datetime.fromisoformat(value).astimezone(ZONE).date()


def _raw_count(folder: Path) -> tuple[int, int, set[tuple[str, str]]]:
    """(readmission pairs, inpatient stays, (index id, readmission id)) from the raw bundles."""
    pairs: set[tuple[str, str]] = set()
    stays = 0
    for path in sorted(folder.glob("patient-*.json")):
        bundle = json.loads(path.read_text())
        inpatient = sorted(
            (
                e["resource"]
                for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Encounter"
                and e["resource"]["class"]["code"] == "IMP"
            ),
            key=lambda r: r["period"]["start"],
        )
        stays += len(inpatient)
        for prev, nxt in pairwise(inpatient):
            gap = (_day(nxt["period"]["start"]) - _day(prev["period"]["end"])).days
            if 0 <= gap <= 30:
                pairs.add((prev["id"], nxt["id"]))
    return len(pairs), stays, pairs


@pytest.fixture
def imported(store: FhirStore, synthea_dir: Path) -> FhirStore:
    report = import_paths(store, [synthea_dir], workers=1)
    assert report.errors == []
    return store


def _rows(store: FhirStore) -> set[tuple[str, str]]:
    with store.engine.connect() as conn:
        return {
            (r.index_encounter, r.readmission_encounter)
            for r in conn.execute(select(readmissions)).all()
        }


def test_scan_matches_an_independent_count(imported: FhirStore, synthea_dir: Path) -> None:
    config = load_risk_config(CONFIG)
    expected, stays, pairs = _raw_count(synthea_dir)

    def score(w: Any, encounter_id: str, now: datetime) -> object:
        return assess_discharge(w, encounter_id=encounter_id, now=now, config=config)

    summary = scan(imported, config.readmissions, now=NOW, score=score)
    assert summary.patients == 8  # patients 01-08 have inpatient stays
    assert summary.stays == stays
    assert summary.readmissions + summary.planned == expected
    assert _rows(imported) == pairs
    assert summary.scored_discharges == stays
    page = imported.search(imported.parse("RiskAssessment", [("_summary", "count")]))
    assert page.total == 2 * stays  # LACE and HOSPITAL per discharge
    # SNOMED-coded Synthea conditions reach Charlson: patient with CHF (88805009) scores C > 0.
    found = imported.search(
        imported.parse("Condition", [("code", "http://snomed.info/sct|88805009")])
    )
    chf_patients = {
        orjson.loads(c)["subject"]["reference"].split("/")[1] for _, _, c in found.matches
    }
    lace = imported.search(
        imported.parse(
            "RiskAssessment",
            [("method", "https://carecoord.org/fhir/CodeSystem/readmission-risk-method|LACE"),
             ("_count", "100")],
        )
    )  # fmt: skip
    charlson = {
        orjson.loads(c)["subject"]["reference"].split("/")[1]: orjson.loads(c)["note"][0]["text"]
        for _, _, c in lace.matches
    }
    assert any(pid in charlson for pid in chf_patients)
    for pid in chf_patients & set(charlson):
        assert " C 0" not in charlson[pid]

    # A replay changes nothing.
    again = scan(imported, config.readmissions, now=NOW, score=score)
    assert again == summary
    with imported.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readmissions)).scalar() == expected


def test_an_added_readmission_is_found_by_the_next_scan(
    imported: FhirStore, synthea_dir: Path
) -> None:
    config = load_risk_config(CONFIG)
    expected, _, _ = _raw_count(synthea_dir)
    page = imported.search(imported.parse("Encounter", [("class", "IMP"), ("_count", "1")]))
    stay = orjson.loads(page.matches[0][2])
    end = datetime.fromisoformat(stay["period"]["end"])
    back = {
        "resourceType": "Encounter",
        "id": "synthetic-readmission",
        "status": "finished",
        "class": stay["class"],
        "subject": stay["subject"],
        "serviceProvider": stay.get("serviceProvider"),
        "period": {
            "start": (end + timedelta(days=10)).isoformat(),
            "end": (end + timedelta(days=12)).isoformat(),
        },
    }
    imported.write(lambda w: w.update("Encounter", "synthetic-readmission", back))
    summary = scan(imported, config.readmissions, now=NOW, review_tasks=True)
    assert summary.readmissions + summary.planned == expected + 1
    assert (stay["id"], "synthetic-readmission") in _rows(imported)
    assert summary.review_tasks >= 1


def test_cli_scan_prints_a_summary(
    imported: FhirStore, settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from carecoord.cli import app

    config_file = tmp_path / "carecoord.toml"
    config_file.write_text(
        f'database_url = "{settings.database_url}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'config_dir = "{CONFIG}"\n'
        f'secret_key = "{settings.secret_key.get_secret_value()}"\n'
    )
    result = CliRunner().invoke(app, ["readmissions", "scan", "--score", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "scored discharges" in result.output
    page = imported.search(imported.parse("RiskAssessment", [("_summary", "count")]))
    assert page.total and page.total > 0
