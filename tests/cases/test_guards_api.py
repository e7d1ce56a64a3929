"""Guarded moves through the API and through a plain FHIR PUT (the write hook)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from carecoord.cases.hook import case_phase_guard
from carecoord.cases.phases import Phase
from carecoord.cases.resources import with_phase
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from tests.cases.answers import social_needs
from tests.cases.conftest import World


def _phase(api: TestClient, cid: str, phase: str) -> Any:
    return api.post(f"/api/cases/{cid}/phase", json={"phase": phase})


def _diagnostics(r: Any) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["diagnostics"])


def test_refused_moves_answer_422_naming_the_move(world: World) -> None:
    api = world.api
    cid = world.open_case("clinical")["id"]
    r = _phase(api, cid, "planning")
    assert r.status_code == 422
    assert "intake -> planning" in _diagnostics(r)
    assert "no planning before an assessment" in _diagnostics(r)
    for target in ("implementation", "monitoring"):
        assert _phase(api, cid, target).status_code == 422
    assert _phase(api, cid, "closure").status_code == 400  # closure has its own endpoint
    assert _phase(api, cid, "assessment").status_code == 200
    r = _phase(api, cid, "planning")
    assert r.status_code == 422 and "no completed assessment" in _diagnostics(r)
    patient = api.get(f"/api/cases/{cid}").json()["patient"]
    assert api.post(f"/api/cases/{cid}/assessments", json=social_needs(patient)).status_code == 201
    assert _phase(api, cid, "planning").status_code == 200
    r = _phase(api, cid, "implementation")
    assert r.status_code == 422 and "no confirmed goal" in _diagnostics(r)
    goal = {"text": "Walk to the shop", "dueDate": "2026-06-01", "target": "twice a week"}
    assert api.post(f"/api/cases/{cid}/goals", json=goal).status_code == 201
    assert _phase(api, cid, "implementation").status_code == 200
    # back to planning and on again is allowed (plan revision)
    assert _phase(api, cid, "planning").status_code == 200
    assert _phase(api, cid, "implementation").status_code == 200
    r = api.post(f"/api/cases/{cid}/close", json={"reason": "unknown", "evaluation": "x"})
    assert r.status_code == 400
    r = api.post(f"/api/cases/{cid}/close", json={"reason": "moved", "evaluation": "Left"})
    assert r.status_code == 422 and "required task(s) still open" in _diagnostics(r)
    r = api.post(
        f"/api/cases/{cid}/close",
        json={"reason": "moved", "evaluation": "Left", "waiverReason": "client moved away"},
    )
    assert r.status_code == 200
    r = _phase(api, cid, "assessment")
    assert r.status_code == 422 and "cannot be reopened" in _diagnostics(r)
    r = api.post(f"/api/cases/{cid}/contacts", json={"channel": "phone"})
    assert r.status_code == 422


def test_assessment_in_intake_is_refused(world: World) -> None:
    case = world.open_case()
    r = world.api.post(
        f"/api/cases/{case['id']}/assessments", json=social_needs(case["patient"]["reference"])
    )
    assert r.status_code == 422 and "move it to assessment first" in _diagnostics(r)


def test_closing_from_intake_when_the_client_declines(world: World) -> None:
    cid = world.open_case()["id"]
    r = world.api.post(
        f"/api/cases/{cid}/close",
        json={"reason": "client-declined", "evaluation": "Did not want services"},
    )
    assert r.status_code == 200, r.text
    view = world.api.get(f"/api/cases/{cid}").json()
    assert view["closure"]["reason"] == "client-declined"
    assert {t["code"]: t["status"] for t in view["tasks"]} == {
        "case-contact": "cancelled",
        "case-follow-up": "requested",
    }


def _chain(store: FhirStore) -> None:
    previous = store.on_written

    def both(w: Writer, res_type: str, stored: StoredResource, status: str | None) -> None:
        if previous is not None:
            previous(w, res_type, stored, status)
        case_phase_guard(w, res_type, stored, status)

    store.on_written = both


@pytest.fixture
def guarded(world: World) -> World:
    _chain(world.api.app.state.store)  # type: ignore[attr-defined]
    return world


def _put(api: TestClient, body: dict[str, Any]) -> Any:
    return api.put(f"/fhir/EpisodeOfCare/{body['id']}", json=body)


def test_plain_put_cannot_skip_the_assessment(guarded: World) -> None:
    api = guarded.api
    case = guarded.open_case("intensive")
    skipped = with_phase(case, Phase.PLANNING, "2026-03-03T10:00:00Z")
    r = _put(api, skipped)
    assert r.status_code == 422
    assert "intake -> planning" in _diagnostics(r)
    assert api.get(f"/api/cases/{case['id']}").json()["phase"] == "intake"
    # an allowed move by PUT goes through
    moved = with_phase(case, Phase.ASSESSMENT, "2026-03-03T10:00:00Z")
    assert _put(api, moved).status_code == 200
    assert api.get(f"/api/cases/{case['id']}").json()["phase"] == "assessment"


def test_plain_put_cannot_close_with_open_required_tasks_or_rewrite_history(
    guarded: World,
) -> None:
    api = guarded.api
    case = guarded.open_case("brokerage")
    cid = case["id"]
    assert _phase(api, cid, "assessment").status_code == 200
    api.post(f"/api/cases/{cid}/assessments", json=social_needs(case["patient"]["reference"]))
    assert _phase(api, cid, "planning").status_code == 200  # the service's writes pass the hook
    current = api.get(f"/fhir/EpisodeOfCare/{cid}").json()
    closure = {
        "url": "https://carecoord.org/fhir/StructureDefinition/case-closure",
        "extension": [
            {"url": "reason", "valueCoding": {"code": "moved"}},
            {"url": "evaluation", "valueString": "gone"},
        ],
    }
    closing = with_phase(
        {**current, "extension": [*current["extension"], closure]},
        Phase.CLOSURE,
        "2026-03-04T10:00:00Z",
    )
    r = _put(api, closing)
    assert r.status_code == 422 and "required task(s) still open" in _diagnostics(r)
    rewritten = {**current, "extension": current["extension"][1:]}
    r = _put(api, rewritten)
    assert r.status_code == 422 and "cannot be rewritten" in _diagnostics(r)
    created = {**case, "id": None}
    created.pop("id")
    created["identifier"] = [{"system": "urn:x", "value": "other"}]
    created = with_phase(
        {k: v for k, v in created.items() if k != "extension"}, Phase.MONITORING, "2026-03-04"
    )
    r = api.post("/fhir/EpisodeOfCare", json=created)
    assert r.status_code == 422 and "starts in intake" in _diagnostics(r)
