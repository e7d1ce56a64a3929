"""Dashboard numbers from plain resources: readmissions, deadline compliance, checklist completion
and caseloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.codes import TASK_CODE_SYSTEM
from carecoord.web.program import (
    caseloads,
    checklist_completion,
    deadline_compliance,
    readmissions_by_month,
)

NY = ZoneInfo("America/New_York")


def _stay(
    pid: str, start: str, end: str | None, *, cls: str = "IMP", status: str = "finished"
) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": {"code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": period,
    }


def test_a_readmission_within_30_days_counts_against_the_discharge_month() -> None:
    rows = readmissions_by_month(
        [
            _stay("a", "2025-02-25T10:00:00Z", "2025-03-01T10:00:00Z"),
            _stay("a", "2025-03-20T10:00:00Z", "2025-03-24T10:00:00Z"),  # 19 days later
            _stay("b", "2025-03-02T10:00:00Z", "2025-03-05T10:00:00Z"),
            _stay("b", "2025-04-05T10:00:00Z", None, status="in-progress"),  # 31 days: no
            _stay("c", "2025-03-03T10:00:00Z", "2025-03-04T10:00:00Z", cls="AMB"),  # not inpatient
            _stay("d", "2025-03-03T10:00:00Z", "2025-03-04T10:00:00Z", status="cancelled"),
        ],
        tz=NY,
    )
    assert [(r.month, r.discharges, r.readmissions) for r in rows] == [("2025-03", 3, 1)]
    assert round(rows[0].rate or 0, 1) == 33.3


def _task(code: str, status: str, due: str, done: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "id": f"{code}-{status}-{due}-{done}",
        "status": status,
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code}]},
        "restriction": {"period": {"end": due}},
    }
    if done:
        body["executionPeriod"] = {"end": done}
    return body


def test_contact_compliance_counts_done_by_the_deadline_and_overdue_open_items() -> None:
    now = datetime(2025, 7, 20, 12, tzinfo=NY)
    code = "tcm-interactive-contact"
    tasks = [
        _task(code, "completed", "2025-07-07", "2025-07-07T20:00:00-04:00"),  # on time (evening)
        _task(code, "completed", "2025-07-07", "2025-07-08T09:00:00-04:00"),  # late
        _task(code, "in-progress", "2025-07-10"),  # overdue, still open: not met
        _task(code, "requested", "2025-07-30"),  # not due yet: not counted
        _task(code, "cancelled", "2025-07-09"),  # cancelled: not counted
        _task("tcm-face-to-face-visit", "completed", "2025-07-09", "2025-07-09T10:00:00Z"),
    ]
    rows = deadline_compliance(tasks, code, now=now, tz=NY)
    assert [(r.month, r.due, r.met) for r in rows] == [("2025-07", 3, 1)]


def test_checklist_completion_leaves_cancelled_items_out() -> None:
    plan = {
        "resourceType": "CarePlan",
        "period": {"start": "2025-07-02T15:00:00Z"},
        "activity": [{"reference": {"reference": f"Task/t{i}"}} for i in range(4)],
    }
    tasks = [
        {"id": "t0", "status": "completed"},
        {"id": "t1", "status": "completed"},
        {"id": "t2", "status": "cancelled"},
        {"id": "t3", "status": "ready"},
    ]
    rows = checklist_completion([plan], tasks, tz=NY)
    assert [(r.month, r.checklists, r.items, r.completed) for r in rows] == [("2025-07", 1, 3, 2)]


def test_caseloads_are_compared_with_the_cap_of_the_model_carried_most() -> None:
    def episode(manager: str, model: str, status: str = "active") -> dict[str, Any]:
        return {
            "status": status,
            "careManager": {"reference": manager},
            "type": [{"coding": [{"code": model}]}],
        }

    episodes = [episode("Practitioner/n1", "intensive") for _ in range(3)]
    episodes += [episode("Practitioner/n1", "brokerage"), episode("Practitioner/n2", "brokerage")]
    episodes.append(episode("Practitioner/n2", "brokerage", status="finished"))
    rows = caseloads(
        episodes, caps={"intensive": 2, "brokerage": 75}, names={"Practitioner/n1": "Nurse One"}
    )
    assert [(r.name, r.active, r.cap, r.over) for r in rows] == [
        ("Nurse One", 4, 2, True),
        ("Practitioner/n2", 1, 75, False),
    ]
