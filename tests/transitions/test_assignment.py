"""Who gets the items: the patient's own nurse, else the least-loaded one; PCP items to the PCP;
and who may then move them (owner, case manager, others)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from carecoord.fhir.access import AccessPolicy, Agent
from carecoord.fhir.errors import BusinessRule
from carecoord.fhir.store import FhirStore
from carecoord.transitions.codes import CARE_ROLE_SYSTEM
from carecoord.transitions.guard import task_guard
from carecoord.transitions.workflow import move_task
from tests.transitions.test_e2e import checklist, discharge, items


def _team(store: FhirStore, patient: dict[str, Any], member: str, role: str) -> None:
    store.create(
        "CareTeam",
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{patient['id']}"},
            "participant": [
                {
                    "role": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": role}]}],
                    "member": {"reference": member},
                }
            ],
        },
    )


def test_the_patients_own_nurse_gets_the_nurse_items(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
    staff: dict[str, str],
) -> None:
    _team(store, synthea_patient, staff["nurse-b"], "nurse-case-manager")
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient, hospital=staff["hospital"]))
    run_jobs()
    by_key = items(checklist(app_client, synthea_patient))
    contact = by_key["tcm-interactive-contact"]
    assert contact["owner"] == staff["nurse-b"] and contact["status"] == "ready"
    assert by_key["medication-access"]["owner"] == staff["pharmacist"]


def test_otherwise_the_least_loaded_nurse_of_the_hospital(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
    staff: dict[str, str],
) -> None:
    for n in range(3):  # nurse-a already carries three open items
        store.create(
            "Task",
            {
                "resourceType": "Task",
                "status": "ready",
                "intent": "order",
                "owner": {"reference": staff["nurse-a"]},
                "description": f"earlier work {n}",
            },
        )
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient, hospital=staff["hospital"]))
    run_jobs()
    contact = items(checklist(app_client, synthea_patient))["tcm-interactive-contact"]
    assert contact["owner"] == staff["nurse-b"]


def test_pcp_items_go_to_the_patients_pcp_who_must_accept_them(
    app_client: TestClient,
    run_jobs: Callable[[], int],
    synthea_patient: dict[str, Any],
    store: FhirStore,
    staff: dict[str, str],
) -> None:
    pcp = store.create("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Gp"}]})
    pcp_ref = f"Practitioner/{pcp.resource.res_id}"
    patient = orjson.loads(store.read("Patient", synthea_patient["id"]).content or b"{}")
    store.update(
        "Patient", patient["id"], {**patient, "generalPractitioner": [{"reference": pcp_ref}]}
    )
    app_client.post("/fhir/Encounter", json=discharge(synthea_patient, hospital=staff["hospital"]))
    run_jobs()
    visit = items(checklist(app_client, synthea_patient))["tcm-face-to-face-visit"]
    assert visit["owner"] == pcp_ref and visit["role"] == "pcp"
    assert visit["status"] == "requested"


@pytest.fixture
def guarded(store: FhirStore) -> FhirStore:
    store.add_write_hook(task_guard())
    return store


def _user(who: str) -> AccessPolicy:
    return AccessPolicy.from_scope_string("user/*.cruds", Agent("user", who))


def test_only_the_owner_or_a_case_manager_does_the_work(
    guarded: FhirStore, staff: dict[str, str], synthea_patient: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 7, 3, tzinfo=UTC)
    task = guarded.create(
        "Task",
        {
            "resourceType": "Task",
            "status": "ready",
            "intent": "order",
            "for": {"reference": f"Patient/{synthea_patient['id']}"},
            "owner": {"reference": staff["nurse-a"]},
            "requester": {"reference": staff["pharmacist"]},
        },
    ).resource.res_id
    with pytest.raises(BusinessRule, match="Only the case-manager or owner may move a Task"):
        guarded.write(
            lambda w: move_task(w, task_id=task, status="completed", when=now),
            policy=_user(staff["nurse-b"]),
        )
    with pytest.raises(BusinessRule, match="Only the requester or the case manager may reassign"):
        guarded.write(
            lambda w: w.update(
                "Task",
                task,
                {
                    **orjson.loads(w.read("Task", task).content or b"{}"),
                    "owner": {"reference": staff["nurse-b"]},
                },
            ),
            policy=_user(staff["nurse-a"]),
        )
    # The supervisor acts as case manager; then the owner finishes the work.
    guarded.write(
        lambda w: move_task(w, task_id=task, status="on-hold", when=now, reason="patient in rehab"),
        policy=_user(staff["supervisor"]),
    )
    guarded.write(
        lambda w: move_task(w, task_id=task, status="ready", when=now),
        policy=_user(staff["nurse-a"]),
    )
    done = guarded.write(
        lambda w: move_task(w, task_id=task, status="completed", when=now),
        policy=_user(staff["nurse-a"]),
    )
    body = orjson.loads(done.content or b"{}")
    assert body["status"] == "completed"
    assert body["executionPeriod"]["end"] == "2025-07-03T00:00:00Z"


def test_an_absolute_fhir_user_is_the_owner_too(
    guarded: FhirStore, staff: dict[str, str], synthea_patient: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    task = guarded.create(
        "Task",
        {
            "resourceType": "Task",
            "status": "ready",
            "intent": "order",
            "for": {"reference": f"Patient/{synthea_patient['id']}"},
            "owner": {"reference": staff["nurse-a"]},
        },
    ).resource.res_id
    absolute = f"https://ehr.example.org/fhir/{staff['nurse-a']}"  # as EHRs send fhirUser
    done = guarded.write(
        lambda w: move_task(w, task_id=task, status="completed", when=datetime.now(UTC)),
        policy=_user(absolute),
    )
    assert orjson.loads(done.content or b"{}")["status"] == "completed"
