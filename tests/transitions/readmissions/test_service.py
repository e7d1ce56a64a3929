"""detect_on_admission through a Writer: the review Task, its owner and links, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from carecoord.fhir.store import FhirStore
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    TRANSITION_OF_CARE,
    CareRole,
    TaskCode,
    task_identifier,
)
from carecoord.transitions.readmissions import (
    ReadmissionConfig,
    detect_on_admission,
    load_readmission_config,
)
from carecoord.transitions.readmissions.tables import readmissions
from tests.transitions.risk.builders import ICD10CM, encounter, patient

CONFIG = Path(__file__).resolve().parents[3] / "config"
NOW = datetime(2025, 3, 20, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def cfg() -> ReadmissionConfig:
    return load_readmission_config(CONFIG)


def _put(store: FhirStore, *bodies: dict[str, Any]) -> None:
    def work(w: Any) -> None:
        for body in bodies:
            w.update(body["resourceType"], body["id"], body)

    store.write(work)


def _care_team(pid: str, nurse: str) -> dict[str, Any]:
    role = {"coding": [{"system": CARE_ROLE_SYSTEM, "code": CareRole.NURSE_CASE_MANAGER.value}]}
    pcp = {"coding": [{"system": CARE_ROLE_SYSTEM, "code": CareRole.PCP.value}]}
    return {
        "resourceType": "CareTeam",
        "id": f"team-{pid}",
        "status": "active",
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [
            {"role": [pcp], "member": {"reference": "Practitioner/dr-who"}},
            {"role": [role], "member": {"reference": f"Practitioner/{nurse}"}},
        ],
    }


def _care_plan(pid: str, encounter_id: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": f"plan-{encounter_id}",
        "status": "active",
        "intent": "plan",
        "identifier": [{"system": CAREPLAN_IDENTIFIER_SYSTEM, "value": encounter_id}],
        "category": [
            {"coding": [{"system": CAREPLAN_CATEGORY_SYSTEM, "code": TRANSITION_OF_CARE}]}
        ],
        "subject": {"reference": f"Patient/{pid}"},
    }


def _tasks(store: FhirStore) -> list[dict[str, Any]]:
    page = store.search(store.parse("Task", [("_count", "100")]))
    return [orjson.loads(c) for _, _, c in page.matches]


def _detect(store: FhirStore, eid: str, cfg: ReadmissionConfig) -> Any:
    return store.write(lambda w: detect_on_admission(w, encounter_id=eid, now=NOW, config=cfg))


def test_readmission_creates_a_review_task_for_the_nurse_case_manager(
    store: FhirStore, cfg: ReadmissionConfig
) -> None:
    _put(
        store,
        patient("p"),
        _care_team("p", "nurse-1"),
        encounter("index", "p", "2025-03-01T10:00:00-05:00", "2025-03-05T10:00:00-05:00"),
        _care_plan("p", "index"),
        encounter("re", "p", "2025-03-19T22:00:00-04:00", None),
    )
    found = _detect(store, "re", cfg)
    assert found is not None
    assert (found.index_encounter_id, found.readmission_encounter_id) == ("index", "re")
    assert (found.days, found.planned) == (14, False)
    (task,) = _tasks(store)
    assert task["id"] == found.task_id
    assert task["code"]["coding"][0] == {
        "system": TASK_CODE_SYSTEM,
        "code": TaskCode.READMISSION_REVIEW.value,
        "display": "Readmission review",
    }
    assert task["identifier"] == [task_identifier("re", "readmission-review")]
    assert task["owner"] == {"reference": "Practitioner/nurse-1"}
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["focus"] == {"reference": "Encounter/index"}
    assert task["encounter"] == {"reference": "Encounter/re"}
    assert task["basedOn"] == [{"reference": "CarePlan/plan-index"}]
    assert task["for"] == {"reference": "Patient/p"}
    with store.engine.connect() as conn:
        row = conn.execute(select(readmissions)).one()
    assert (row.patient, row.index_encounter, row.days, row.planned) == ("p", "index", 14, False)


def test_replay_creates_nothing_twice(store: FhirStore, cfg: ReadmissionConfig) -> None:
    _put(
        store,
        patient("p"),
        encounter("index", "p", "2025-03-01", "2025-03-05"),
        encounter("re", "p", "2025-03-19", None),
    )
    first = _detect(store, "re", cfg)
    second = _detect(store, "re", cfg)
    assert first == second
    assert len(_tasks(store)) == 1
    with store.engine.connect() as conn:
        assert len(conn.execute(select(readmissions)).all()) == 1


def test_without_a_case_manager_the_task_is_unowned_for_the_role(
    store: FhirStore, cfg: ReadmissionConfig
) -> None:
    _put(
        store,
        patient("p"),
        encounter("index", "p", "2025-03-01", "2025-03-05"),
        encounter("re", "p", "2025-03-19", None),
    )
    _detect(store, "re", cfg)
    (task,) = _tasks(store)
    assert "owner" not in task
    assert task["performerType"][0]["coding"][0]["code"] == "nurse-case-manager"
    assert "basedOn" not in task


def test_planned_readmission_is_recorded_without_a_task(
    store: FhirStore, cfg: ReadmissionConfig
) -> None:
    _put(
        store,
        patient("p"),
        encounter("index", "p", "2025-02-26", "2025-03-01"),
        encounter("chemo", "p", "2025-03-10", None, reason=(ICD10CM, "Z51.11")),
    )
    found = _detect(store, "chemo", cfg)
    assert found is not None and found.planned and found.planned_rule == "chemotherapy"
    assert found.task_id is None
    assert _tasks(store) == []


@pytest.mark.parametrize("disposition", ["07", "20", "02"])
def test_ama_expired_and_transfer_are_not_index(
    store: FhirStore, cfg: ReadmissionConfig, disposition: str
) -> None:
    _put(
        store,
        patient("p"),
        encounter("index", "p", "2025-03-01", "2025-03-05", disposition=disposition),
        encounter("re", "p", "2025-03-19", None),
    )
    assert _detect(store, "re", cfg) is None
    assert _tasks(store) == []


def test_a_transfer_admission_is_not_a_readmission(
    store: FhirStore, cfg: ReadmissionConfig
) -> None:
    _put(
        store,
        patient("p"),
        encounter("first", "p", "2025-02-01", "2025-02-10"),
        encounter("a1", "p", "2025-03-01", "2025-03-03T10:00:00-05:00", disposition="02"),
        encounter("a2", "p", "2025-03-03T16:00:00-05:00", None, facility="hosp-b"),
    )
    assert _detect(store, "a2", cfg) is None  # continuation of a1's stay
    found = _detect(store, "a1", cfg)
    assert found is not None and found.index_encounter_id == "first"


def test_outpatient_and_old_admissions_are_ignored(
    store: FhirStore, cfg: ReadmissionConfig
) -> None:
    _put(
        store,
        patient("p"),
        encounter("index", "p", "2025-01-01", "2025-01-05"),
        encounter("amb", "p", "2025-01-10", "2025-01-10", cls="AMB"),
        encounter("late", "p", "2025-02-20", None),
    )
    assert _detect(store, "amb", cfg) is None
    assert _detect(store, "late", cfg) is None
