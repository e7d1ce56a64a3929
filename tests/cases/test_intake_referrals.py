"""Intake (screening, accept, decline the referrer sees) and community referrals (Gravity)."""

from __future__ import annotations

from typing import Any

from tests.cases.conftest import World


def _bundle(api: Any, path: str, **params: str) -> list[dict]:
    return [e["resource"] for e in api.get(path, params=params).json().get("entry", [])]


def test_screening_reports_why_a_referral_is_not_eligible(world: World) -> None:
    api = world.api
    dead = world.client("Gone", deceasedBoolean=True)
    ref = world.referral(dead, code={"coding": [{"system": "http://snomed.info/sct", "code": "1"}]})
    r = api.get(f"/api/cases/referrals/{ref.split('/')[1]}/screening")
    assert r.json()["eligible"] is False
    assert r.json()["reasons"] == [
        "the referral is not for case management (ServiceRequest.code)",
        "the client has died",
    ]
    r = api.post("/api/cases", json={"referral": ref})
    assert r.status_code == 422
    ok = world.referral(world.client(), model="intensive")
    r = api.get(f"/api/cases/referrals/{ok.split('/')[1]}/screening").json()
    assert r == {"eligible": True, "reasons": [], "model": "intensive"}


def test_one_open_case_per_client_and_accepting_twice_is_one_case(world: World) -> None:
    api = world.api
    patient = world.client()
    ref = world.referral(patient)
    first = api.post("/api/cases", json={"referral": ref})
    again = api.post("/api/cases", json={"referral": ref})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert len(_bundle(api, "/fhir/EpisodeOfCare", patient=patient)) == 1
    second = world.referral(patient)
    r = api.post("/api/cases", json={"referral": second})
    assert r.status_code == 422
    assert "already has an open case" in r.json()["issue"][0]["diagnostics"]


def test_a_declined_referral_tells_the_referrer_why(world: World) -> None:
    api = world.api
    ref = world.referral(world.client())
    sr_id = ref.split("/")[1]
    r = api.post(f"/api/cases/referrals/{sr_id}/decline", json={"reason": "Outside service area"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"] == "Outside service area"
    assert task["requester"]["reference"] == world.referrer
    assert api.get(f"/fhir/{ref}").json()["status"] == "revoked"
    notes = _bundle(api, "/fhir/Communication", recipient=world.referrer)
    assert len(notes) == 1
    assert "Outside service area" in notes[0]["payload"][0]["contentString"]
    # a replay changes nothing
    again = api.post(
        f"/api/cases/referrals/{sr_id}/decline", json={"reason": "Outside service area"}
    )
    assert again.json()["meta"]["versionId"] == task["meta"]["versionId"]
    assert len(_bundle(api, "/fhir/Communication", recipient=world.referrer)) == 1
    assert api.post("/api/cases", json={"referral": ref}).status_code == 422


def test_community_referral_task_life(world: World) -> None:
    api = world.api
    pantry = (
        "Organization/"
        + api.post(
            "/fhir/Organization", json={"resourceType": "Organization", "name": "Food pantry"}
        ).json()["id"]
    )
    cid = world.open_case("brokerage")["id"]
    r = api.post(
        f"/api/cases/{cid}/referrals", json={"organization": pantry, "text": "Weekly food box"}
    )
    assert r.status_code == 201, r.text
    sr, task = r.json()["serviceRequest"], r.json()["task"]
    assert task["owner"]["reference"] == pantry
    assert task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
    assert (task["status"], sr["status"]) == ("requested", "active")
    path = f"/api/cases/{cid}/referrals/{task['id']}"
    # completing needs the outcome; rejecting needs a reason
    assert api.post(path, json={"status": "completed"}).status_code == 400
    assert api.post(path, json={"status": "rejected"}).status_code == 400
    r = api.post(path, json={"status": "accepted"})
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    r = api.post(path, json={"status": "completed", "outcome": "Enrolled, first box delivered"})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed"
    assert done["output"][0]["valueString"] == "Enrolled, first box delivered"
    assert "end" in done["executionPeriod"]
    assert api.get(f"/fhir/ServiceRequest/{sr['id']}").json()["status"] == "completed"
    history = api.get(f"/fhir/Task/{task['id']}/_history").json()["entry"]
    assert [e["resource"]["status"] for e in reversed(history)] == [
        "requested", "accepted", "in-progress", "completed"
    ]  # fmt: skip
    assert api.post(path, json={"status": "cancelled", "reason": "x"}).status_code == 422


def test_a_rejected_community_referral_keeps_its_reason(world: World) -> None:
    api = world.api
    shelter = (
        "Organization/"
        + api.post(
            "/fhir/Organization", json={"resourceType": "Organization", "name": "Shelter"}
        ).json()["id"]
    )
    cid = world.open_case("intensive")["id"]
    made = api.post(
        f"/api/cases/{cid}/referrals", json={"organization": shelter, "text": "Bed"}
    ).json()
    path = f"/api/cases/{cid}/referrals/{made['task']['id']}"
    r = api.post(path, json={"status": "rejected", "reason": "No beds this month"})
    assert r.status_code == 200
    assert r.json()["statusReason"]["text"] == "No beds this month"
    assert (
        api.get(f"/fhir/ServiceRequest/{made['serviceRequest']['id']}").json()["status"]
        == "revoked"
    )


def test_needs_confirm_and_reject(world: World) -> None:
    from tests.cases.answers import social_needs

    api = world.api
    case = world.open_case("strengths-based")
    cid = case["id"]
    api.post(f"/api/cases/{cid}/phase", json={"phase": "assessment"})
    qr = social_needs(case["patient"]["reference"], transportation_lack="LA33-6",
                      utilities_shutoff="LA33-6")  # fmt: skip
    proposed = {
        p["need"]: p for p in api.post(f"/api/cases/{cid}/assessments", json=qr).json()["proposed"]
    }
    condition = api.get(f"/fhir/{proposed['transportation-insecurity']['condition']}").json()
    assert condition["verificationStatus"]["coding"][0]["code"] == "provisional"
    categories = {c["coding"][0]["code"] for c in condition["category"]}
    assert {"sdoh", "health-concern", "transportation-insecurity"} <= categories
    goal = api.get(f"/fhir/{proposed['transportation-insecurity']['goal']}").json()
    assert goal["lifecycleStatus"] == "proposed"
    assert goal["expressedBy"]["reference"] == case["patient"]["reference"]
    r = api.post(
        f"/api/cases/{cid}/needs",
        json={
            "confirm": [proposed["transportation-insecurity"]["condition"]],
            "reject": [proposed["utility-insecurity"]["condition"]],
            "reason": "Bill already paid",
        },
    )
    assert r.status_code == 200, r.text
    view = api.get(f"/api/cases/{cid}").json()
    status = {c["code"]: c["verificationStatus"] for c in view["conditions"]}
    assert status == {"Z59.82": "confirmed", "Z59.12": "refuted"}
    goals = {g["description"]: g["lifecycleStatus"] for g in view["goals"]}
    assert goals == {
        "Has reliable transportation to appointments and errands": "active",
        "Utilities stay on": "rejected",
    }
    episode = api.get(f"/fhir/EpisodeOfCare/{cid}").json()
    assert [d["condition"]["reference"] for d in episode["diagnosis"]] == [
        proposed["transportation-insecurity"]["condition"]
    ]
    # progress over time: the Goal's versions keep each achievement status
    gid = proposed["transportation-insecurity"]["goal"].split("/")[1]
    for status_code in ("improving", "achieved"):
        r = api.post(f"/api/cases/{cid}/goals/{gid}", json={"achievementStatus": status_code})
        assert r.status_code == 200
    history = api.get(f"/fhir/Goal/{gid}/_history").json()["entry"]
    seen = [e["resource"].get("achievementStatus", {}).get("coding", [{}])[0].get("code")
            for e in reversed(history)]  # fmt: skip
    assert seen == [None, "in-progress", "improving", "achieved"]
    assert api.get(f"/fhir/Goal/{gid}").json()["lifecycleStatus"] == "completed"
