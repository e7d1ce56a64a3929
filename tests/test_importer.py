"""Importing real-world data: the shared Synthea bundles, NDJSON, and bad files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
from typer.testing import CliRunner

from carecoord.cli import app
from carecoord.fhir.store import FhirStore
from carecoord.importer import import_paths


def _expected_counts(folder: Path) -> tuple[Counter[str], set[tuple[str, str]]]:
    counts: Counter[str] = Counter()
    ids: set[tuple[str, str]] = set()
    for path in folder.glob("*.json"):
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            ids.add((resource["resourceType"], resource["id"]))
    for res_type, _ in ids:
        counts[res_type] += 1
    return counts, ids


def test_synthea_bundles_import_with_cross_bundle_references(
    store: FhirStore, synthea_dir: Path
) -> None:
    report = import_paths(store, [synthea_dir], workers=2)
    assert report.errors == []
    expected, ids = _expected_counts(synthea_dir)
    for res_type, count in expected.items():
        query = store.parse(res_type, [("_summary", "count")])
        assert store.search(query).total == count, res_type
    # Every urn:uuid reference, also those into organizations.json / practitioners.json, now
    # points at a stored resource.
    for res_type in ("Encounter", "Observation", "Claim"):
        page = store.search(store.parse(res_type, [("_count", "1000")]))
        for _, _, content in page.matches:
            raw = content.decode()
            assert "urn:uuid:" not in raw.replace('"fullUrl"', "")
    encounters = store.search(store.parse("Encounter", [("class", "IMP"), ("_count", "1000")]))
    assert encounters.matches, "patients 01-08 have inpatient stays"
    enc = orjson.loads(encounters.matches[0][2])
    practitioner = enc["participant"][0]["individual"]["reference"]
    assert practitioner.startswith("Practitioner/")
    assert ("Practitioner", practitioner.split("/")[1]) in ids
    store.read("Practitioner", practitioner.split("/")[1])
    # Chained search works on imported data.
    patient_id = enc["subject"]["reference"].split("/")[1]
    found = store.search(store.parse("Encounter", [("patient", patient_id), ("class", "IMP")]))
    assert found.matches


def test_replaying_an_import_changes_nothing(store: FhirStore, synthea_dir: Path) -> None:
    shared = [synthea_dir / "organizations.json", synthea_dir / "practitioners.json"]
    first = import_paths(store, shared, workers=1)
    again = import_paths(store, shared, workers=1)
    assert first.errors == again.errors == []
    assert sum(again.created.values()) == sum(again.updated.values()) == 0
    assert again.resources == first.resources

    # A patient bundle repeats some practitioners and organisations without Synthea's utilisation
    # extensions: the newer copy wins (one new version), and replaying that bundle changes nothing.
    bundle = [synthea_dir / "patient-09.json"]
    landed = import_paths(store, bundle, workers=1)
    assert landed.errors == []
    replay = import_paths(store, bundle, workers=1)
    assert sum(replay.created.values()) == sum(replay.updated.values()) == 0
    assert replay.unchanged == landed.created + landed.updated + landed.unchanged


def test_ndjson_and_bad_files_are_reported_not_fatal(store: FhirStore, tmp_path: Path) -> None:
    lines = [
        {"resourceType": "Patient", "id": f"nd-{i}", "name": [{"family": f"Nd{i}"}]}
        for i in range(3)
    ]
    (tmp_path / "patients.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "invalid.json").write_text(
        json.dumps({"resourceType": "Patient", "birthDate": "soon"})
    )
    report = import_paths(store, [tmp_path], workers=1)
    assert report.created["Patient"] == 3
    labels = {label.split("/")[-1]: message for label, message in report.errors}
    assert "broken.json" in labels
    assert "Patient.birthDate" in labels["invalid.json"]
    assert store.read("Patient", "nd-2").version_id == 1


def test_cli_import_prints_summary_and_fails_on_errors(
    tmp_path: Path, database_url: str, store: FhirStore
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"resourceType": "Patient", "id": "cli-1"}))
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(good)], env={"CARECOORD_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert "Patient" in result.output and "1 resources" in result.output
    assert store.read("Patient", "cli-1").res_id == "cli-1"
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    result = runner.invoke(app, ["import", str(bad)], env={"CARECOORD_DATABASE_URL": database_url})
    assert result.exit_code == 1
