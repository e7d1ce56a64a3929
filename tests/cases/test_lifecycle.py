"""The whole life of a case through the API, for each of the five models."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.cases.answers import social_needs
from tests.cases.conftest import Clock, World

CONTACT_DAYS = {"brokerage": 30, "clinical": 14, "strengths-based": 7, "intensive": 7,
                "integrated": 14}  # fmt: skip
PLAN_TASKS = {
    "brokerage": {"link-services"},
    "clinical": {"clinical-review", "link-services"},
    "strengths-based": {"personal-recovery-plan"},
    "intensive": {"crisis-plan", "clinical-review"},
    "integrated": {"team-conference"},
}


def _tasks(world: World, case_id: str) -> list[dict]:
    return list(world.api.get(f"/api/cases/{case_id}").json()["tasks"])


@pytest.mark.parametrize("model", sorted(CONTACT_DAYS))
def test_full_lifecycle(world: World, clock: Clock, model: str) -> None:
    api = world.api
    case = world.open_case(model)
    cid, patient = case["id"], case["patient"]["reference"]
    assert case["status"] == "planned"
    assert case["type"][0]["coding"][0]["code"] == model
    assert case["careManager"]["reference"] in world.nurses + world.social_workers
    # the referral's intake Task shows the referrer it was accepted
    sr = case["referralRequest"][0]["reference"]
    intake = api.get("/fhir/Task", params={"focus": sr}).json()["entry"][0]["resource"]
    assert intake["status"] == "accepted"
    assert intake["output"][0]["valueReference"]["reference"] == f"EpisodeOfCare/{cid}"
    # the model's contact frequency drives the first contact Task
    contact = [t for t in _tasks(world, cid) if t["code"] == "case-contact"]
    assert [t["due"] for t in contact] == [
        (date(2026, 3, 2) + timedelta(days=CONTACT_DAYS[model])).isoformat()
    ]

    clock.advance(1)
    r = api.post(f"/api/cases/{cid}/phase", json={"phase": "assessment"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"

    clock.advance(1)
    qr = social_needs(patient, housing_status="LA31995-6", food_worry="LA6729-3")
    r = api.post(f"/api/cases/{cid}/assessments", json=qr)
    assert r.status_code == 201, r.text
    proposed = r.json()["proposed"]
    assert {p["need"] for p in proposed} == {"housing-instability", "food-insecurity"}
    r = api.post(
        f"/api/cases/{cid}/needs",
        json={"confirm": [p["condition"] for p in proposed]},
    )
    assert r.status_code == 200, r.text

    clock.advance(1)
    r = api.post(f"/api/cases/{cid}/phase", json={"phase": "planning"})
    assert r.status_code == 200, r.text
    plan = api.get("/fhir/CarePlan", params={"patient": patient}).json()["entry"][0]["resource"]
    assert len(plan["goal"]) == 2
    assert len(plan["addresses"]) == 2
    view = api.get(f"/api/cases/{cid}").json()
    plan_codes = {t["code"] for t in view["tasks"] if t["code"] not in ("case-contact",)}
    assert PLAN_TASKS[model] <= plan_codes

    for phase in ("implementation", "monitoring"):
        clock.advance(1)
        r = api.post(f"/api/cases/{cid}/phase", json={"phase": phase})
        assert r.status_code == 200, r.text

    clock.advance(2)
    r = api.post(f"/api/cases/{cid}/contacts", json={"channel": "phone"})
    assert r.status_code == 201, r.text
    contacts = [t for t in _tasks(world, cid) if t["code"] == "case-contact"]
    assert sorted(t["status"] for t in contacts) == ["completed", "requested"]
    nxt = next(t for t in contacts if t["status"] == "requested")
    assert nxt["due"] == (clock.now.date() + timedelta(days=CONTACT_DAYS[model])).isoformat()

    # closing with the plan's required interventions still open is refused ...
    r = api.post(f"/api/cases/{cid}/close", json={"reason": "goals-met", "evaluation": "Housed"})
    assert r.status_code == 422
    assert "monitoring -> closure" in r.json()["issue"][0]["diagnostics"]
    # ... unless they are waived with a reason
    r = api.post(
        f"/api/cases/{cid}/close",
        json={"reason": "goals-met", "evaluation": "Housed", "waiverReason": "Done by the PCP"},
    )
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "finished"
    assert [h["phase"] for h in api.get(f"/api/cases/{cid}").json()["phaseHistory"]] == [
        "intake", "assessment", "planning", "implementation", "monitoring", "closure"
    ]  # fmt: skip
    view = api.get(f"/api/cases/{cid}").json()
    follow = [t for t in view["tasks"] if t["code"] == "case-follow-up"]
    assert [(t["status"], t["due"]) for t in follow] == [
        ("requested", (clock.now.date() + timedelta(days=30)).isoformat())
    ]
    plan_tasks = [t for t in view["tasks"] if t["code"] in PLAN_TASKS[model]]
    assert {t["status"] for t in plan_tasks} == {"cancelled"}
    assert all("Done by the PCP" in t["statusReason"] for t in plan_tasks if t["required"])
    intake = api.get(f"/fhir/Task/{intake['id']}").json()
    assert intake["status"] == "completed"
    # outcomes count this case under its model
    out = api.get("/api/metrics/cases", params={"model": model}).json()["outcomes"]
    overall = next(o for o in out if o["careManager"] == "*")
    assert overall["closed"] == 1
    assert overall["goals"] == 2
    assert overall["contacts"] == 1
    assert set(overall["meanDaysInPhase"]) == {
        "intake", "assessment", "planning", "implementation", "monitoring"
    }  # fmt: skip
