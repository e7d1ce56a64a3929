"""Program metrics over a constructed data set with known answers (pure: no database)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.metrics.compute import (
    MetricsInput,
    aggregate,
    discharge_outcomes,
    period_key,
)
from carecoord.transitions.readmissions import load_readmission_config
from tests.transitions.metrics.dataset import program

CONFIG = Path(__file__).resolve().parents[3] / "config"
CAL = BusinessCalendar.us_federal("America/New_York")


def _input(bodies: list[dict[str, Any]]) -> MetricsInput:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for body in bodies:
        kinds.setdefault(body["resourceType"], []).append(body)
    return MetricsInput(
        encounters=kinds["Encounter"],
        patients={p["id"]: p for p in kinds["Patient"]},
        care_plans=kinds["CarePlan"],
        tasks=kinds["Task"],
        communications=kinds["Communication"],
        risk_assessments=kinds["RiskAssessment"],
    )


@pytest.fixture(scope="module")
def rows() -> Any:
    config = load_readmission_config(CONFIG)
    return discharge_outcomes(
        _input(program()),
        config,
        since=date(2025, 7, 1),
        until=date(2025, 11, 30),
        calendar_for=lambda _org: CAL,
    )


def test_each_index_discharge_and_its_outcomes(rows: Any) -> None:
    got = {
        r.encounter: (r.readmitted, r.contact_2bd, r.visit_7d, r.visit_14d, r.risk_band)
        for r in rows
    }
    assert got == {
        "d1": (True, True, True, True, "high"),
        "r1": (False, False, False, False, "unscored"),
        "d2": (False, True, False, True, "moderate"),
        "d4": (False, False, False, False, "unscored"),
        "r3": (False, False, False, False, "unscored"),  # index, though d3 (AMA) was not
    }


def test_totals(rows: Any) -> None:
    total = aggregate(rows, [])["total"]
    assert total == {
        "discharges": 5,
        "readmissions_30d": 1,
        "readmission_rate": 0.2,
        "contact_2bd": 2,
        "contact_2bd_rate": 0.4,
        "visit_7d": 1,
        "visit_7d_rate": 0.2,
        "visit_14d": 2,
        "visit_14d_rate": 0.4,
        "checklists": 3,
        "checklists_completed": 1,
        "checklist_completion_rate": 0.3333,
        "tasks": 8,
        "tasks_completed": 6,
        "task_completion_rate": 0.75,
    }


def test_by_facility_and_period(rows: Any) -> None:
    groups = aggregate(rows, ["facility", "period"])["groups"]
    short = [
        (g["facility"], g["period"], g["discharges"], g["readmissions_30d"], g["contact_2bd"])
        for g in groups
    ]
    assert short == [
        ("Organization/hosp-a", "2025-07", 4, 1, 1),
        ("Organization/hosp-b", "2025-11", 1, 0, 1),
    ]


def test_by_case_manager_pcp_unit_and_band(rows: Any) -> None:
    def keyed(dim: str) -> dict[str, int]:
        return {g[dim]: g["discharges"] for g in aggregate(rows, [dim])["groups"]}

    assert keyed("case_manager") == {
        "Practitioner/nurse-1": 1,
        "Practitioner/nurse-2": 1,
        "unassigned": 3,
    }
    assert keyed("pcp") == {"Practitioner/dr-a": 3, "Practitioner/dr-b": 1, "none": 1}
    assert keyed("unit") == {"Location/ward-1": 1, "Location/ward-2": 1, "unknown": 3}
    assert keyed("risk_band") == {"high": 1, "moderate": 1, "unscored": 3}


def test_period_keys() -> None:
    day = date(2025, 11, 7)
    assert [period_key(day, p) for p in ("week", "month", "quarter", "year")] == [
        "2025-W45",
        "2025-11",
        "2025-Q4",
        "2025",
    ]


def test_a_narrower_range_leaves_discharges_out(rows: Any) -> None:
    config = load_readmission_config(CONFIG)
    july = discharge_outcomes(
        _input(program()),
        config,
        since=date(2025, 7, 1),
        until=date(2025, 7, 31),
        calendar_for=lambda _org: CAL,
    )
    assert sorted(r.encounter for r in july) == ["d1", "d4", "r1", "r3"]
