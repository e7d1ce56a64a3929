"""A discharge from an HL7 v2 feed starts the checklist; A13 (cancel discharge) revokes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi.testclient import TestClient

from carecoord.events import AdtIntake
from carecoord.fhir.store import FhirStore
from carecoord.transitions.codes import CAREPLAN_CATEGORY_SYSTEM
from integrations.hl7v2 import FeedConfig
from tests.events.messages import admit, adt, discharge
from tests.transitions.conftest import FakeClock
from tests.transitions.test_e2e import items

CONFIG = FeedConfig(
    default_timezone="America/Chicago",
    patient_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.1"},
    visit_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.2"},
)


def _plans(store: FhirStore) -> list[dict[str, Any]]:
    page = store.search(
        store.parse("CarePlan", [("category", f"{CAREPLAN_CATEGORY_SYSTEM}|transition-of-care")])
    )
    return [orjson.loads(c) for _, _, c in page.matches]


def test_a03_starts_the_checklist_and_a13_revokes_it(
    app_client: TestClient, run_jobs: Callable[[], int], store: FhirStore, clock: FakeClock
) -> None:
    clock.now = datetime.now(UTC) + timedelta(minutes=1)  # the test store queues at real time
    intake = AdtIntake(store, source="mllp:test", config=CONFIG, clock=clock)
    assert intake.handle(admit()).ack_code == "AA"
    assert intake.handle(discharge()).ack_code == "AA"
    run_jobs()
    [plan] = _plans(store)
    patient = plan["subject"]["reference"].partition("/")[2]
    view = app_client.get(f"/api/patients/{patient}/transitions").json()["checklists"][0]
    by_key = items(view)
    # Discharged Thu 2024-01-18 14:00 Chicago: contact by Mon 01-22, 14-day visit by Thu 02-01.
    assert by_key["tcm-interactive-contact"]["due"] == "2024-01-22"
    assert by_key["tcm-face-to-face-visit"]["due"] == "2024-02-01"

    assert intake.handle(discharge("A03-0001")).ack_code == "AA"  # the same message replayed
    run_jobs()
    assert len(_plans(store)) == 1

    assert intake.handle(adt("A13", "A13-0001", pv1={45: ""})).ack_code == "AA"
    run_jobs()
    [plan] = _plans(store)
    assert plan["status"] == "revoked"
    view = app_client.get(f"/api/patients/{patient}/transitions").json()["checklists"][0]
    assert {i["status"] for i in view["items"]} == {"cancelled"}
