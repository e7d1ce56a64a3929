"""Outcomes computed from stored data: JSON and CSV."""

from __future__ import annotations

import csv
import io

from tests.cases.conftest import Clock, World, put
from tests.fhir.factories import encounter


def test_outcomes_from_data(world: World, clock: Clock) -> None:
    api = world.api
    case = world.open_case("brokerage")  # Mar 2, contact every 30 days
    cid, patient = case["id"], case["patient"]["reference"]
    pid = patient.split("/")[1]
    # an inpatient stay before the case, a readmission 17 days after its discharge during the case
    put(api, encounter(pid, start="2026-02-20T08:00:00Z", end="2026-02-25T10:00:00Z"))
    put(api, encounter(pid, start="2026-03-14T08:00:00Z", end="2026-03-16T10:00:00Z"))
    put(
        api, encounter(pid, start="2026-03-20T08:00:00Z", end=None, status="in-progress", cls="AMB")
    )
    # contacts: one call, one visit recorded as an Encounter of the case
    clock.advance(3)
    api.post(f"/api/cases/{cid}/contacts", json={"channel": "phone"})
    put(api, encounter(pid, cls="AMB", start="2026-03-25T10:00:00Z", end="2026-03-25T11:00:00Z",
                       episodeOfCare=[{"reference": f"EpisodeOfCare/{cid}"}]))  # fmt: skip
    clock.advance(2)
    api.post(f"/api/cases/{cid}/phase", json={"phase": "assessment"})
    api.post(f"/api/cases/{cid}/goals", json={"text": "Keep the flat", "dueDate": "2026-06-01"})
    gid = api.get(f"/api/cases/{cid}").json()["goals"][0]["id"]
    api.post(f"/api/cases/{cid}/goals/{gid}", json={"achievementStatus": "achieved"})
    api.post(f"/api/cases/{cid}/goals", json={"text": "Find work", "dueDate": "2026-07-01"})
    clock.now = clock.now.replace(month=4, day=6)  # 35 days into the case: 1 contact expected
    out = api.get("/api/metrics/cases").json()["outcomes"]
    rows = {(o["model"], o["careManager"]): o for o in out}
    row = rows[("brokerage", case["careManager"]["reference"])]
    assert row["cases"] == 1 and row["open"] == 1
    assert (row["contacts"], row["expectedContacts"], row["contactRatio"]) == (2, 1, 2.0)
    assert row["readmissions"] == 1
    assert (row["goals"], row["goalsAchieved"], row["goalAttainment"]) == (2, 1, 0.5)
    assert row["meanDaysInPhase"] == {"intake": 5.0, "assessment": 30.0}
    assert rows[("brokerage", "*")]["cases"] == 1
    text = api.get("/api/metrics/cases.csv")
    assert text.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(text.text)))
    mine = next(r for r in table if r["careManager"] == case["careManager"]["reference"])
    assert mine["readmissions"] == "1" and mine["meanDays_intake"] == "5.0"
    assert api.get("/api/metrics/cases", params={"format": "csv"}).text == text.text
    assert api.get("/api/metrics/cases", params={"model": "intensive"}).json() == {"outcomes": []}


def test_case_reads_are_audited(world: World) -> None:
    case = world.open_case()
    world.api.get(f"/api/cases/{case['id']}")
    events = world.api.get(
        "/fhir/AuditEvent", params={"entity": f"EpisodeOfCare/{case['id']}"}
    ).json()
    assert events.get("total", len(events.get("entry", []))) >= 1
