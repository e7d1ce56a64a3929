"""``carecoord transitions check`` and ``backfill`` over imported Synthea history."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from carecoord.cli import app
from carecoord.fhir.store import FhirStore
from carecoord.importer import import_paths
from carecoord.transitions.codes import CAREPLAN_CATEGORY_SYSTEM

runner = CliRunner()


def test_check_shows_the_variants(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transitions", "check"])
    assert result.exit_code == 0, result.output
    for variant in (
        "home",
        "home-with-home-health",
        "skilled-nursing-facility",
        "against-medical-advice",
        "ed-treat-and-release",
    ):
        assert f"variant {variant}" in result.output


def test_check_names_the_broken_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "transitions").mkdir()
    default = Path("config/transitions/default.yaml").read_text()
    (tmp_path / "transitions" / "default.yaml").write_text(
        default.replace("owner: pharmacist", "owner: wizard", 1)
    )
    monkeypatch.setenv("CARECOORD_CONFIG_DIR", str(tmp_path))
    result = runner.invoke(app, ["transitions", "check"])
    assert result.exit_code == 2
    assert "default.yaml" in result.output and "owner" in result.output


def _transition_plans(store: FhirStore) -> list[dict[str, object]]:
    page = store.search(
        store.parse(
            "CarePlan",
            [("category", f"{CAREPLAN_CATEGORY_SYSTEM}|transition-of-care"), ("_count", "500")],
        )
    )
    return [orjson.loads(c) for _, _, c in page.matches]


def test_backfill_makes_checklists_for_past_discharges_once(
    store: FhirStore, synthea_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_paths(store, [synthea_dir / "organizations.json", synthea_dir / "patient-01.json"])
    page = store.search(store.parse("Encounter", [("class", "IMP,EMER"), ("_count", "500")]))
    stays = [orjson.loads(c) for _, _, c in page.matches]
    finished = [e for e in stays if e.get("status") == "finished"]
    assert finished, "patient 01 has hospital stays"
    monkeypatch.setenv("CARECOORD_DATABASE_URL", database_url)

    first = runner.invoke(app, ["transitions", "backfill", "--since", "1900-01-01"])
    assert first.exit_code == 0, first.output
    plans = _transition_plans(store)
    assert plans and len(plans) <= len(finished)
    assert {p["encounter"]["reference"] for p in plans} <= {
        f"Encounter/{e['id']}" for e in finished
    }

    again = runner.invoke(app, ["transitions", "backfill", "--since", "1900-01-01"])
    assert again.exit_code == 0
    assert "checklists made 0" in again.output
    assert len(_transition_plans(store)) == len(plans)
