"""``carecoord pccm assign|choose|pcp-leaves`` through typer's CliRunner."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from carecoord.cli import app
from carecoord.fhir.store import FhirStore
from carecoord.pccm.tables import pccm_assignments
from tests.pccm import world


@pytest.fixture
def run(database_url: str, tmp_path: Path) -> Any:
    runner = CliRunner()
    env = {"CARECOORD_DATABASE_URL": database_url, "CARECOORD_DATA_DIR": str(tmp_path / "data")}

    def invoke(*args: str) -> Any:
        return runner.invoke(app, ["pccm", *args], env=env)

    return invoke


@pytest.fixture
def members(store: FhirStore) -> FhirStore:
    world.put_all(
        store,
        [
            *world.role("near", miles=1),
            *world.role("far", miles=80),
            world.patient("a-near"),
            world.coverage("a-near"),
            world.patient("b-far"),
            world.coverage("b-far"),
            world.visit("b-far", "far", "2026-05-01"),
            world.patient("c-nowhere", miles=None),
            world.coverage("c-nowhere"),
            world.patient("d-other-plan"),
            world.coverage("d-other-plan", plan="SOMETHING-ELSE"),
        ],
    )
    return store


def _assignments(store: FhirStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(pccm_assignments)).scalar() or 0)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_dry_run_writes_nothing_then_assign_then_rerun_assigns_nobody_twice(
    run: Any, members: FhirStore, tmp_path: Path
) -> None:
    result = run("assign", "--program", "default", "--dry-run", "--out", str(tmp_path / "dry"))
    assert result.exit_code == 0, result.output
    assert "dry run: would assign 2 of 3 members" in result.output
    assert _assignments(members) == 0
    assert members.search(members.parse("Task", [])).matches == []

    result = run("assign", "--program", "default", "--out", str(tmp_path / "real"))
    assert result.exit_code == 0, result.output
    assert "assigned 2 of 3 members; 1 unassigned; 1 outside" in result.output
    report = orjson.loads((tmp_path / "real" / "report.json").read_bytes())
    assert report["perRule"]["own-history"] == 1 and report["perRule"]["distance"] == 1
    assert [u["member"] for u in report["unassigned"]] == ["Patient/c-nowhere"]
    assert "no coordinates" in report["unassigned"][0]["reason"]
    [outside] = _csv(tmp_path / "real" / "outside-standard.csv")
    assert outside["member"] == "Patient/b-far" and float(outside["distanceMiles"]) > 75
    panels = {row["pcp"]: row for row in _csv(tmp_path / "real" / "panels.csv")}
    assert panels["PractitionerRole/near"]["panel"] == "1"
    assert panels["PractitionerRole/near"]["utilisation"] == "0.0004"
    practices = _csv(tmp_path / "real" / "practices.csv")
    assert practices == [
        {"practice": "Organization/org-1", "panel": "2", "cap": "10000", "utilisation": "0.0002"}
    ]
    assert _assignments(members) == 2

    result = run("assign", "--program", "default", "--out", str(tmp_path / "again"))
    assert result.exit_code == 0, result.output
    assert "assigned 0 of 1 members; 1 unassigned" in result.output
    assert _assignments(members) == 2
    assert len(members.search(members.parse("Task", [])).matches) == 2


def test_choose_and_unknown_program(run: Any, members: FhirStore, tmp_path: Path) -> None:
    assert run("assign", "--program", "default", "--out", str(tmp_path / "r")).exit_code == 0
    result = run("choose", "--program", "default", "b-far", "near")
    assert result.exit_code == 0, result.output
    assert "assigned (member-choice)" in result.output
    result = run("choose", "--program", "default", "c-nowhere", "nobody")
    assert result.exit_code == 1 and "refused" in result.output
    result = run("assign", "--program", "nope")
    assert result.exit_code == 1 and "No PCCM program named 'nope'" in result.output


def test_pcp_leaves(run: Any, members: FhirStore, tmp_path: Path) -> None:
    assert run("assign", "--program", "default", "--out", str(tmp_path / "r")).exit_code == 0
    result = run("pcp-leaves", "--program", "default", "far", "--reason", "retired")
    assert result.exit_code == 0, result.output
    assert "reassigned 1 of 1 members" in result.output
