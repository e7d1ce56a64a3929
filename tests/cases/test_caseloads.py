"""Caseload assignment, caps, overrides and reassignment through the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from carecoord.cases.tables import case_assignments
from tests.cases.conftest import World, staff


def _loads(api: TestClient) -> dict[str, dict]:
    rows = api.get("/api/caseloads").json()["caseloads"]
    return {r["careManager"]: r for r in rows}


def test_new_cases_go_to_the_least_loaded_eligible_manager(world: World) -> None:
    a, b = world.nurses
    sw = world.social_workers[0]
    managers = [world.open_case("clinical")["careManager"]["reference"] for _ in range(4)]
    # clinical cases are for nurse case managers only, spread evenly
    assert sorted(managers) == sorted([a, a, b, b])
    loads = _loads(world.api)
    assert loads[a]["load"] == loads[b]["load"] == 5.0  # 2 clinical cases x 2.5 units
    assert loads[a]["cases"] == 2 and loads[sw]["cases"] == 0
    # a brokerage case may go to the social worker, who now has the lowest load
    assert world.open_case("brokerage")["careManager"]["reference"] == sw


def test_a_chosen_manager_must_be_eligible(world: World) -> None:
    ref = world.referral(world.client(), model="clinical")
    r = world.api.post("/api/cases", json={"referral": ref, "careManager": world.social_workers[0]})
    assert r.status_code == 422
    assert "eligible for clinical" in r.json()["issue"][0]["diagnostics"]


def test_cap_override_and_alert(settings, engine: Engine, world: World, tmp_path: Path) -> None:
    api = world.api
    nurse = world.nurses[0]
    # 15 intensive cases (5 units each) fill a nurse's 75-unit cap
    for _ in range(15):
        assert world.open_case("intensive", careManager=nurse)["careManager"]["reference"] == nurse
    ref = world.referral(world.client(), model="intensive")
    r = api.post("/api/cases", json={"referral": ref, "careManager": nurse})
    assert r.status_code == 422
    assert "cap of 75" in r.json()["issue"][0]["diagnostics"]
    assert _loads(api)[nurse]["aboveCap"] is False
    r = api.post(
        "/api/cases",
        json={"referral": ref, "careManager": nurse, "overrideReason": "continuity: known client"},
    )
    assert r.status_code == 201, r.text
    answer = api.get("/api/caseloads").json()
    row = next(c for c in answer["caseloads"] if c["careManager"] == nurse)
    assert row["load"] == 80 and row["aboveCap"] is True
    assert answer["alerts"] == [f"{nurse} carries 80 units, above the cap of 75"]
    with engine.connect() as conn:
        kinds = conn.execute(
            select(case_assignments.c.kind, case_assignments.c.reason).where(
                case_assignments.c.case_id == r.json()["id"]
            )
        ).all()
    assert [tuple(k) for k in kinds] == [("override", "continuity: known client")]


def test_when_everyone_is_full_the_automatic_choice_refuses(world: World) -> None:
    for nurse in world.nurses + world.social_workers:
        for _ in range(15):
            world.open_case("intensive", careManager=nurse)
    ref = world.referral(world.client(), model="intensive")
    r = world.api.post("/api/cases", json={"referral": ref})
    assert r.status_code == 422
    assert "at their cap" in r.json()["issue"][0]["diagnostics"]


def test_reassigning_a_caseload_moves_cases_and_open_tasks_together(world: World) -> None:
    api = world.api
    leaving, other = world.nurses
    cases = [world.open_case("clinical", careManager=leaving) for _ in range(2)]
    for case in cases:
        assert (
            api.post(f"/api/cases/{case['id']}/phase", json={"phase": "assessment"}).status_code
            == 200
        )
    r = api.post("/api/caseloads/reassign", json={"from": leaving, "reason": "parental leave"})
    assert r.status_code == 200, r.text
    moved = r.json()["moved"]
    assert {m["careManager"] for m in moved} == {other}  # the only other eligible nurse
    for case in cases:
        view = api.get(f"/api/cases/{case['id']}").json()
        assert view["careManager"] == other
        open_tasks = [t for t in view["tasks"] if t["status"] == "requested"]
        assert open_tasks and {t["owner"] for t in open_tasks} == {other}
        team = api.get(case["team"][0]["reference"].replace("CareTeam", "/fhir/CareTeam")).json()
        members = {p["member"]["reference"]: p["period"] for p in team["participant"]}
        assert "end" in members[leaving] and "end" not in members[other]
    loads = _loads(api)
    assert loads[leaving]["cases"] == 0 and loads[other]["cases"] == 2


def test_reassign_one_case_to_a_chosen_manager(world: World) -> None:
    api = world.api
    case = world.open_case("brokerage", careManager=world.nurses[0])
    r = api.post(
        f"/api/cases/{case['id']}/reassign",
        json={"careManager": world.social_workers[0], "reason": "language match"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["careManager"]["reference"] == world.social_workers[0]
    r = api.post(
        f"/api/cases/{case['id']}/reassign",
        json={"careManager": world.social_workers[0], "reason": "again"},
    )
    assert r.status_code == 422


def test_per_manager_and_per_organisation_caps_from_config(
    settings, engine: Engine, auth_header, tmp_path: Path
) -> None:
    import shutil

    from carecoord.app import create_app

    folder = tmp_path / "config"
    shutil.copytree("config", folder)
    with TestClient(create_app(settings.model_copy(update={"config_dir": folder}), engine=engine),
                    headers=auth_header) as api:  # fmt: skip
        org = (
            "Organization/"
            + api.post("/fhir/Organization", json={"resourceType": "Organization"}).json()["id"]
        )
        nurse = staff(api, org, "PartTime", "nurse-case-manager")
    data = yaml.safe_load((folder / "cases/caseloads.yaml").read_text())
    data["managers"] = {nurse: {"cap": 10}}
    data["organizations"] = {org: {"weights": {"clinical": 4}}}
    (folder / "cases/caseloads.yaml").write_text(yaml.safe_dump(data))
    with TestClient(create_app(settings.model_copy(update={"config_dir": folder}), engine=engine),
                    headers=auth_header) as api:  # fmt: skip
        w = World(org, [nurse], [], nurse, api)
        w.open_case("clinical")
        row = _loads(api)[nurse]
        assert (row["load"], row["cap"]) == (4, 10)
        w.open_case("clinical")
        ref = w.referral(w.client(), model="clinical")
        assert api.post("/api/cases", json={"referral": ref}).status_code == 422


@pytest.mark.parametrize("field", ["default_cap"])
def test_a_bad_caseload_file_stops_the_start(
    settings, engine: Engine, tmp_path: Path, field: str
) -> None:
    import shutil

    from carecoord.app import create_app
    from carecoord.cases.config import CaseConfigError

    folder = tmp_path / "config"
    shutil.copytree("config", folder)
    (folder / "cases/caseloads.yaml").write_text(f"{field}: -1\n")
    with pytest.raises(CaseConfigError, match=r"caseloads\.yaml: default_cap"):
        create_app(settings.model_copy(update={"config_dir": folder}), engine=engine)
