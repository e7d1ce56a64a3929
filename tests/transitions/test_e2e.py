"""A discharge Encounter written to our API becomes a checklist with exact deadlines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi.testclient import TestClient

from carecoord.fhir.store import FhirStore
from carecoord.importer import import_paths
from carecoord.transitions.codes import (
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_CODE_SYSTEM,
)
from tests.transitions.conftest import FakeClock

DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"


def discharge(
    patient: dict[str, Any],
    *,
    end: str = "2025-07-02T15:00:00-04:00",
    status: str = "finished",
    disposition: str = "home",
    cls: str = "IMP",
    hospital: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": cls,
        },
        "subject": {"reference": f"Patient/{patient['id']}"},
        "period": {"start": "2025-06-28T09:00:00-04:00", "end": end},
        "hospitalization": {
            "dischargeDisposition": {"coding": [{"system": DISPOSITION, "code": disposition}]}
        },
    }
    if hospital:
        body["serviceProvider"] = {"reference": hospital}
    return body


def checklist(client: TestClient, patient: dict[str, Any]) -> dict[str, Any]:
    answer = client.get(f"/api/patients/{patient['id']}/transitions")
    assert answer.status_code == 200, answer.text
    found = answer.json()["checklists"]
    assert len(found) == 1
    return dict(found[0])


def items(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["key"]: i for i in view["items"]}


def count(store: FhirStore, res_type: str, *params: tuple[str, str]) -> int:
    page = store.search(store.parse(res_type, [*params, ("_count", "1000")]))
    return len(page.matches)


def test_discharge_through_the_api_makes_the_checklist_with_exact_deadlines(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
) -> None:
    created = app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    assert created.status_code == 201, created.text
    encounter_id = created.json()["id"]
    assert run_jobs() >= 1

    view = checklist(app_client, synthea_patient)
    assert view["status"] == "active"
    assert view["encounter"] == f"Encounter/{encounter_id}"
    assert view["period"]["end"] == "2025-07-31"  # 30-day TCM service period
    assert view["tcm"]["eligible"] is True and view["tcm"]["complexity"] == "moderate"
    by_key = items(view)
    # rules.md §8: discharge Wed 2025-07-02 -> contact Mon 07-07 (Jul 4 holiday), visit 07-16.
    assert by_key["tcm-interactive-contact"]["due"] == "2025-07-07"
    assert by_key["tcm-face-to-face-visit"]["due"] == "2025-07-16"
    assert by_key["medication-reconciliation"]["due_date"] <= "2025-07-16"
    assert "interpreter" in by_key  # patient 01 speaks Spanish
    assert all(i["status"] in ("ready", "requested") for i in view["items"])

    plan = store.search(
        store.parse("CarePlan", [("identifier", f"{CAREPLAN_IDENTIFIER_SYSTEM}|{encounter_id}")])
    )
    assert len(plan.matches) == 1
    plan_json = orjson.loads(plan.matches[0][2])
    assert len(plan_json["activity"]) == len(view["items"])
    contact = store.read("Task", by_key["tcm-interactive-contact"]["task_id"])
    task = orjson.loads(contact.content or b"{}")
    assert task["intent"] == "order" and task["for"] == {
        "reference": f"Patient/{synthea_patient['id']}"
    }
    assert task["encounter"] == {"reference": f"Encounter/{encounter_id}"}
    assert task["code"]["coding"][0] == {
        "system": TASK_CODE_SYSTEM,
        "code": "tcm-interactive-contact",
        "display": task["code"]["text"],
    }
    assert task["restriction"]["period"]["end"] == "2025-07-07"
    assert task["basedOn"] == [{"reference": f"CarePlan/{plan.matches[0][1]}"}]


def test_the_same_discharge_twice_makes_one_checklist(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
) -> None:
    body = discharge(synthea_patient)
    encounter_id = app_client.post("/fhir/Encounter", json=body).json()["id"]
    run_jobs()
    tasks = count(store, "Task", ("patient", f"Patient/{synthea_patient['id']}"))
    # The same discharge again: a replayed message (same content) and an A08-style touch-up.
    app_client.put(f"/fhir/Encounter/{encounter_id}", json={**body, "id": encounter_id})
    touched = {**body, "id": encounter_id, "priority": {"text": "routine"}}
    app_client.put(f"/fhir/Encounter/{encounter_id}", json=touched)
    run_jobs()
    transition = ("category", f"{CAREPLAN_CATEGORY_SYSTEM}|transition-of-care")
    assert (
        count(store, "CarePlan", ("subject", f"Patient/{synthea_patient['id']}"), transition) == 1
    )
    assert count(store, "Task", ("patient", f"Patient/{synthea_patient['id']}")) == tasks


def test_an_update_recomputes_the_deadlines(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    body = discharge(synthea_patient)
    encounter_id = app_client.post("/fhir/Encounter", json=body).json()["id"]
    run_jobs()
    # The discharge was in fact on Fri 2025-11-07: contact Wed 11-12 (Veterans Day Tue 11-11).
    later = {
        **body,
        "id": encounter_id,
        "period": {"start": "2025-11-01T09:00:00-04:00", "end": "2025-11-07T12:00:00-05:00"},
    }
    app_client.put(f"/fhir/Encounter/{encounter_id}", json=later)
    run_jobs()
    by_key = items(checklist(app_client, synthea_patient))
    assert by_key["tcm-interactive-contact"]["due"] == "2025-11-12"
    assert by_key["tcm-face-to-face-visit"]["due"] == "2025-11-21"


def test_a_cancelled_discharge_revokes_the_checklist_with_a_reason(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    body = discharge(synthea_patient)
    encounter_id = app_client.post("/fhir/Encounter", json=body).json()["id"]
    run_jobs()
    # A13: the patient is back in the bed, the discharge is undone.
    undone = {
        **body,
        "id": encounter_id,
        "status": "in-progress",
        "period": {"start": body["period"]["start"]},
    }
    assert app_client.put(f"/fhir/Encounter/{encounter_id}", json=undone).status_code == 200
    run_jobs()
    view = checklist(app_client, synthea_patient)
    assert view["status"] == "revoked"
    assert {i["status"] for i in view["items"]} == {"cancelled"}
    assert {i["status_reason"] for i in view["items"]} == {"The discharge was cancelled"}


def test_entered_in_error_cancels_too(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    body = discharge(synthea_patient)
    encounter_id = app_client.post("/fhir/Encounter", json=body).json()["id"]
    run_jobs()
    app_client.put(
        f"/fhir/Encounter/{encounter_id}",
        json={**body, "id": encounter_id, "status": "entered-in-error"},
    )
    run_jobs()
    view = checklist(app_client, synthea_patient)
    assert view["status"] == "revoked"
    assert {i["status_reason"] for i in view["items"]} == {
        "The discharge encounter was entered in error"
    }


def test_no_checklist_for_an_office_visit_or_a_death(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient, cls="AMB"))
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient, disposition="exp"))
    run_jobs()
    answer = app_client.get(f"/api/patients/{synthea_patient['id']}/transitions")
    assert answer.json()["checklists"] == []


def test_two_unsuccessful_attempts_satisfy_the_tcm_contact(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    run_jobs()
    contact = items(checklist(app_client, synthea_patient))["tcm-interactive-contact"]
    url = f"/api/tasks/{contact['task_id']}/contact-attempts"
    first = app_client.post(url, json={"reached": False, "note": "no answer"})
    assert first.status_code == 201, first.text
    assert first.json()["task_status"] == "in-progress"
    second = app_client.post(url, json={"reached": False, "note": "voicemail left"})
    assert second.json() == {
        "communication": second.json()["communication"],
        "attempt": 2,
        "unsuccessful_attempts": 2,
        "task_status": "completed",
        "business_status": "2 documented unsuccessful attempts",
    }
    third = app_client.post(url, json={"reached": True})
    assert third.status_code == 422  # the item is closed


def test_completing_the_visit_suggests_the_billing_code(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    clock: FakeClock,
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    run_jobs()
    visit = items(checklist(app_client, synthea_patient))["tcm-face-to-face-visit"]
    url = f"/api/tasks/{visit['task_id']}/status"
    clock.now = datetime(2025, 7, 12, 15, 0, tzinfo=UTC)  # day 10
    done = app_client.post(url, json={"status": "completed"})
    assert done.status_code == 200, done.text
    view = items(checklist(app_client, synthea_patient))["tcm-face-to-face-visit"]
    assert view["status"] == "completed"
    assert view["billing_code"] == "99495"  # moderate complexity, visit within 14 days


def test_the_plan_completes_when_every_required_item_is_done_or_waived(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    run_jobs()
    view = checklist(app_client, synthea_patient)
    required = [i for i in view["items"] if i["required"]]
    assert required
    for n, item in enumerate(required):
        url = f"/api/tasks/{item['task_id']}/status"
        if n == 0:
            refused = app_client.post(url, json={"status": "cancelled"})
            assert refused.status_code == 400  # waiving needs a reason
            assert (
                app_client.post(
                    url, json={"status": "cancelled", "reason": "done by the SNF"}
                ).status_code
                == 200
            )
            continue
        assert app_client.post(url, json={"status": "completed"}).status_code == 200
        expected = "completed" if n == len(required) - 1 else "active"
        assert checklist(app_client, synthea_patient)["status"] == expected


def test_the_rest_api_refuses_a_forbidden_move_with_an_outcome(
    app_client: TestClient, run_jobs: Callable[[], int], synthea_patient: dict[str, Any]
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    run_jobs()
    contact = items(checklist(app_client, synthea_patient))["tcm-interactive-contact"]
    task = app_client.get(f"/fhir/Task/{contact['task_id']}").json()
    early = app_client.put(f"/fhir/Task/{task['id']}", json={**task, "status": "completed"})
    assert early.status_code == 422  # a requested item is accepted before it is done
    assert "from requested to completed" in early.json()["issue"][0]["diagnostics"]
    taken = app_client.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"})
    assert taken.status_code == 200
    done = app_client.put(f"/fhir/Task/{task['id']}", json={**taken.json(), "status": "completed"})
    assert done.status_code == 200
    back = app_client.put(f"/fhir/Task/{task['id']}", json={**done.json(), "status": "in-progress"})
    assert back.status_code == 422
    outcome = back.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "from completed (final) to in-progress" in outcome["issue"][0]["diagnostics"]
    held = app_client.put(f"/fhir/Task/{task['id']}", json={**task, "status": "on-hold"})
    assert held.status_code == 422  # (and a stale body) — a completed item stays completed


def test_escalation_fires_once_per_step(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
    clock: FakeClock,
    staff: dict[str, str],
) -> None:
    body = discharge(synthea_patient, hospital=staff["hospital"])
    app_client.post("/fhir/Encounter", json=body)
    run_jobs()
    contact = items(checklist(app_client, synthea_patient))["tcm-interactive-contact"]
    about = ("based-on", f"Task/{contact['task_id']}")
    escalation = ("category", f"{COMMUNICATION_CATEGORY_SYSTEM}|escalation")
    assert count(store, "Communication", about, escalation) == 0
    # Contact due by the end of Mon 2025-07-07 (New York): a day after, overdue steps fire.
    clock.now = datetime(2025, 7, 9, 12, 0, tzinfo=UTC)
    run_jobs()
    sent = store.search(store.parse("Communication", [about, escalation]))
    notices = {
        orjson.loads(c)["identifier"][0]["value"].rpartition(":")[2]: orjson.loads(c)
        for _, _, c in sent.matches
    }
    assert sorted(notices) == ["due-soon", "overdue", "overdue-supervisor"]
    owner = contact["owner"]
    assert owner in (staff["nurse-a"], staff["nurse-b"])
    assert notices["overdue"]["recipient"] == [{"reference": owner}]
    assert notices["overdue-supervisor"]["recipient"] == [{"reference": staff["supervisor"]}]
    assert notices["overdue"]["payload"][0]["contentString"].startswith("Overdue: ")
    clock.now += timedelta(days=3)
    run_jobs()
    assert count(store, "Communication", about, escalation) == 3  # never twice


def test_a_closed_item_does_not_escalate(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
    clock: FakeClock,
) -> None:
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient))
    run_jobs()
    contact = items(checklist(app_client, synthea_patient))["tcm-interactive-contact"]
    app_client.post(f"/api/tasks/{contact['task_id']}/contact-attempts", json={"reached": True})
    clock.now = datetime(2025, 7, 20, 12, 0, tzinfo=UTC)
    run_jobs()
    escalation = ("category", f"{COMMUNICATION_CATEGORY_SYSTEM}|escalation")
    assert (
        count(store, "Communication", ("based-on", f"Task/{contact['task_id']}"), escalation) == 0
    )


def test_no_interpreter_for_an_english_speaking_patient(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    store: FhirStore,
    synthea_dir: Any,
) -> None:
    import_paths(store, [synthea_dir / "organizations.json", synthea_dir / "patient-02.json"])
    patient = orjson.loads(store.search(store.parse("Patient", [("_count", "1")])).matches[0][2])
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "en-US"
    app_client.post("/fhir/Encounter", json=discharge(patient))
    run_jobs()
    assert "interpreter" not in items(checklist(app_client, patient))


def test_the_task_codes_are_published_as_a_code_system(
    app_client: TestClient, store: FhirStore
) -> None:
    from carecoord.transitions.publish import publish_code_systems

    assert publish_code_systems(store) == 6
    assert publish_code_systems(store) == 0  # a rerun changes nothing
    system = app_client.get("/fhir/CodeSystem/care-transition-task").json()
    assert system["url"] == TASK_CODE_SYSTEM
    codes = {c["code"] for c in system["concept"]}
    assert {
        "tcm-interactive-contact",
        "tcm-face-to-face-visit",
        "medication-reconciliation",
        "discharge-summary-to-pcp",
        "follow-up-appointment",
        "follow-up-call",
        "teach-back-education",
        "red-flags-education",
        "pending-results-follow-up",
        "home-services-equipment",
        "interpreter",
    } <= codes


def test_a_high_risk_discharge_gets_the_7_day_visit_and_more_calls(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
) -> None:
    body = discharge(synthea_patient)
    # 22 days in hospital (L = 7), admitted through the ED as an emergency (A = 3): LACE >= 10.
    body["period"] = {"start": "2025-06-10T09:00:00-04:00", "end": "2025-07-02T15:00:00-04:00"}
    body["priority"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": "EM"}]
    }
    body["hospitalization"]["admitSource"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}]
    }
    encounter_id = app_client.post("/fhir/Encounter", json=body).json()["id"]
    run_jobs()
    view = checklist(app_client, synthea_patient)
    assert view["tcm"]["riskBand"] == "high" and view["tcm"]["complexity"] == "high"
    by_key = items(view)
    assert by_key["tcm-face-to-face-visit"]["due"] == "2025-07-09"  # day 7
    calls = sorted(k for k in by_key if k.startswith("follow-up-call"))
    assert calls == [
        "follow-up-call-72h",
        "follow-up-call-d14",
        "follow-up-call-d30",
        "follow-up-call-d7",
    ]
    scored = store.search(
        store.parse("RiskAssessment", [("subject", f"Patient/{synthea_patient['id']}")])
    )
    methods = {
        orjson.loads(c)["method"]["coding"][0]["code"]: orjson.loads(c)
        for _, _, c in scored.matches
    }
    assert set(methods) >= {"LACE", "HOSPITAL"}
    assert methods["LACE"]["encounter"] == {"reference": f"Encounter/{encounter_id}"}


def test_an_admission_within_30_days_opens_a_readmission_review(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
) -> None:
    index_id = app_client.post("/fhir/Encounter", json=discharge(synthea_patient)).json()["id"]
    run_jobs()
    back = discharge(synthea_patient, status="in-progress")
    back["period"] = {"start": "2025-07-20T08:00:00-04:00"}
    del back["hospitalization"]
    again_id = app_client.post("/fhir/Encounter", json=back).json()["id"]
    run_jobs()
    reviews = store.search(
        store.parse("Task", [("code", f"{TASK_CODE_SYSTEM}|readmission-review")])
    )
    assert len(reviews.matches) == 1
    review = orjson.loads(reviews.matches[0][2])
    assert review["for"] == {"reference": f"Patient/{synthea_patient['id']}"}
    assert review["focus"] == {"reference": f"Encounter/{index_id}"}
    assert review["encounter"] == {"reference": f"Encounter/{again_id}"}
    plan = store.search(
        store.parse("CarePlan", [("identifier", f"{CAREPLAN_IDENTIFIER_SYSTEM}|{index_id}")])
    )
    assert review["basedOn"] == [{"reference": f"CarePlan/{plan.matches[0][1]}"}]
    listed = app_client.get(
        "/api/readmissions", params={"since": "2025-07-01", "until": "2025-07-31"}
    )
    assert listed.status_code == 200, listed.text
    [found] = listed.json()["readmissions"]
    assert found["index_encounter"] == f"Encounter/{index_id}"
    assert found["readmission_encounter"] == f"Encounter/{again_id}"
    assert found["days_between"] == 18 and found["planned"] is False
