"""A small constructed program with known metrics (see test_compute.py for the answers)."""

from __future__ import annotations

from typing import Any

from carecoord.transitions.codes import (
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_CODE_SYSTEM,
    TRANSITION_OF_CARE,
    TaskCode,
)
from carecoord.transitions.risk.resources import RISK_BAND_SYSTEM, RISK_METHOD_SYSTEM
from tests.transitions.risk.builders import encounter, patient


def _plan(eid: str, pid: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": f"plan-{eid}",
        "status": status,
        "intent": "plan",
        "identifier": [{"system": CAREPLAN_IDENTIFIER_SYSTEM, "value": eid}],
        "category": [
            {"coding": [{"system": CAREPLAN_CATEGORY_SYSTEM, "code": TRANSITION_OF_CARE}]}
        ],
        "subject": {"reference": f"Patient/{pid}"},
    }


def _task(
    tid: str, eid: str, pid: str, code: TaskCode, status: str, done: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "resourceType": "Task",
        "id": tid,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code.value}]},
        "for": {"reference": f"Patient/{pid}"},
        "basedOn": [{"reference": f"CarePlan/plan-{eid}"}],
    }
    if done:
        body["executionPeriod"] = {"end": done}
    if owner:
        body["owner"] = {"reference": f"Practitioner/{owner}"}
    return body


def _attempt(cid: str, tid: str, pid: str, status: str, sent: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "id": cid,
        "status": status,
        "category": [
            {"coding": [{"system": COMMUNICATION_CATEGORY_SYSTEM, "code": "contact-attempt"}]}
        ],
        "subject": {"reference": f"Patient/{pid}"},
        "basedOn": [{"reference": f"Task/{tid}"}],
        "sent": sent,
    }


def _risk(eid: str, pid: str, method: str, band: str) -> dict[str, Any]:
    return {
        "resourceType": "RiskAssessment",
        "id": f"risk-{eid}-{method}",
        "status": "final",
        "method": {"coding": [{"system": RISK_METHOD_SYSTEM, "code": method}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "prediction": [
            {"qualitativeRisk": {"coding": [{"system": RISK_BAND_SYSTEM, "code": band}]}}
        ],
    }


C, V, M = (
    TaskCode.TCM_INTERACTIVE_CONTACT,
    TaskCode.TCM_FACE_TO_FACE_VISIT,
    TaskCode.MEDICATION_RECONCILIATION,
)


def program() -> list[dict[str, Any]]:
    """Index discharges d1, r1, d4, r3 (hosp-a, July) and d2 (hosp-b, November); d3 left AMA."""
    return [
        patient("p1", gp="dr-a"),
        patient("p2", gp="dr-b"),
        patient("p3"),
        patient("p4", gp="dr-a"),
        # p1: d1 (Wed 2025-07-02; contact due Mon 07-07), readmitted 07-20 (r1).
        encounter(
            "d1", "p1", "2025-06-28T10:00:00-04:00", "2025-07-02T11:00:00-04:00", unit="ward-1"
        ),
        _plan("d1", "p1", "completed"),
        _task("d1-c", "d1", "p1", C, "completed", "2025-07-07T15:00:00-04:00", owner="nurse-1"),
        _attempt("d1-a1", "d1-c", "p1", "completed", "2025-07-07T15:00:00-04:00"),
        _task("d1-v", "d1", "p1", V, "completed", "2025-07-09T10:00:00-04:00"),
        _task("d1-m", "d1", "p1", M, "completed", "2025-07-09T10:30:00-04:00"),
        _risk("d1", "p1", "LACE", "high"),
        _risk("d1", "p1", "HOSPITAL", "low"),
        encounter(
            "r1", "p1", "2025-07-20T09:00:00-04:00", "2025-07-25T12:00:00-04:00", unit="ward-2"
        ),
        # p2: d2 (Fri 2025-11-07; contact due Wed 11-12 after Veterans Day): two failed attempts.
        encounter(
            "d2", "p2", "2025-11-03T10:00:00-05:00", "2025-11-07T16:00:00-05:00", facility="hosp-b"
        ),
        _plan("d2", "p2"),
        _task("d2-c", "d2", "p2", C, "completed", "2025-11-12T11:00:00-05:00", owner="nurse-2"),
        _attempt("d2-a1", "d2-c", "p2", "not-done", "2025-11-10T10:00:00-05:00"),
        _attempt("d2-a2", "d2-c", "p2", "not-done", "2025-11-12T11:00:00-05:00"),
        _task("d2-v", "d2", "p2", V, "completed", "2025-11-19T10:00:00-05:00"),
        _task("d2-m", "d2", "p2", M, "in-progress"),
        _risk("d2", "p2", "LACE", "low"),
        _risk("d2", "p2", "HOSPITAL", "intermediate"),
        # p3: left against medical advice: not an index discharge.
        encounter("d3", "p3", "2025-07-01", "2025-07-02T12:00:00-04:00", disposition="07"),
        encounter("r3", "p3", "2025-07-05", "2025-07-06"),
        # p4: contact reached a day late; visit not done; cancelled item left out.
        encounter("d4", "p4", "2025-06-30T10:00:00-04:00", "2025-07-02T09:00:00-04:00"),
        _plan("d4", "p4"),
        _task("d4-c", "d4", "p4", C, "completed", "2025-07-08T09:00:00-04:00"),
        _attempt("d4-a1", "d4-c", "p4", "completed", "2025-07-08T09:00:00-04:00"),
        _task("d4-v", "d4", "p4", V, "requested"),
        {
            **_task("d4-x", "d4", "p4", TaskCode.INTERPRETER, "cancelled"),
            "statusReason": {"text": "not needed"},
        },
    ]
