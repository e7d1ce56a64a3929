"""The FHIR resources an assignment produces, built as plain dicts (no store access)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from carecoord.pccm.model import Decision, Pcp
from carecoord.pccm.program import Program
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
    TASK_CODE_SYSTEM,
    CareRole,
    TaskCode,
    role_display,
    task_display,
    task_identifier,
)

__all__ = [
    "ASSIGNMENT_RULE_SYSTEM",
    "CARETEAM_IDENTIFIER_SYSTEM",
    "MEMBER_NOTICE",
    "NOTICE_IDENTIFIER_SYSTEM",
    "PROGRAM_URL",
    "Assignment",
    "care_team",
    "establish_care_task",
    "member_notice",
    "provenance",
    "provenance_id",
    "resource_id",
    "source_id",
]

_BASE: Final = "https://carecoord.org/fhir"
#: CareTeam.identifier of a member's PCCM care team: value ``{program}:{patient id}``.
CARETEAM_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/pccm-careteam"
#: Communication.identifier of an assignment notice: value = the assignment's source id.
NOTICE_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/pccm-notice"
#: Provenance.reason coding: which assignment rule decided.
ASSIGNMENT_RULE_SYSTEM: Final = f"{_BASE}/CodeSystem/pccm-assignment-rule"
#: Provenance.policy: the program, ``{PROGRAM_URL}/{name}``.
PROGRAM_URL: Final = f"{_BASE}/pccm/program"
MEMBER_NOTICE: Final = "member-notice"


@dataclass(frozen=True, slots=True)
class Assignment:
    """One assignment being written: who, to whom, when, and the decision behind it."""

    program: Program
    patient_id: str
    seq: int
    pcp: Pcp
    decision: Decision
    kind: str
    decided_on: date
    effective_on: date
    change_until: date
    due_on: date
    recorded: str  # instant


def resource_id(kind: str, program: str, patient_id: str, seq: int | None = None) -> str:
    """The fixed id of a generated resource (``kind``: careteam, task, notice).

    ``pccm-{kind}-{program digest}-{patient id}[-{seq}]``: it sorts with the patient id, and a
    batch works in patient-id order, so its inserts land next to each other in the store's
    indexes. Past FHIR's 64 characters it is a digest of that instead.
    """
    tag = hashlib.blake2b(program.encode(), digest_size=4).hexdigest()
    rid = f"pccm-{kind}-{tag}-{patient_id}" + ("" if seq is None else f"-{seq}")
    if len(rid) <= 64:
        return rid
    return f"pccm-{kind}-{hashlib.blake2b(rid.encode(), digest_size=12).hexdigest()}"


def provenance_id(source_ids: Sequence[str]) -> str:
    """The fixed id of the Provenance of the assignments with these source ids."""
    digest = hashlib.blake2b("\n".join(source_ids).encode(), digest_size=12).hexdigest()
    return f"pccm-provenance-{digest}"


def source_id(program: str, patient_id: str, seq: int) -> str:
    """The deterministic key of a member's ``seq``-th assignment in ``program``."""
    return f"pccm:{program}:{patient_id}:{seq}"


def _pcp_ref(pcp: Pcp) -> dict[str, str]:
    ref = {"reference": f"PractitionerRole/{pcp.id}"}
    if pcp.name:
        ref["display"] = pcp.name
    return ref


def _pcp_role() -> list[dict[str, Any]]:
    code = CareRole.PCP
    return [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": code, "display": role_display(code)}]}]


def care_team(a: Assignment, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The member's PCCM CareTeam with ``a.pcp`` as the current primary care participant.

    Earlier PCP participants stay, their period ended the day before the new one starts.
    """
    start = a.effective_on.isoformat()
    participants: list[dict[str, Any]] = []
    for p in (existing or {}).get("participant", ()):
        if p.get("member", {}).get("reference") == f"PractitionerRole/{a.pcp.id}" and not (
            p.get("period") or {}
        ).get("end"):
            continue  # replaced below
        period = dict(p.get("period") or {})
        if not period.get("end"):
            period["end"] = start
        participants.append({**p, "period": period})
    participants.append(
        {"role": _pcp_role(), "member": _pcp_ref(a.pcp), "period": {"start": start}}
    )
    return {
        "resourceType": "CareTeam",
        "identifier": [
            {"system": CARETEAM_IDENTIFIER_SYSTEM, "value": f"{a.program.name}:{a.patient_id}"}
        ],
        "status": "active",
        "name": f"PCCM primary care ({a.program.title or a.program.name})",
        "subject": {"reference": f"Patient/{a.patient_id}"},
        "participant": participants,
        **(
            {"managingOrganization": [{"reference": f"Organization/{a.pcp.practice}"}]}
            if a.pcp.practice
            else {}
        ),
    }


def establish_care_task(a: Assignment) -> dict[str, Any]:
    """The Task to the PCP: new member assigned, establish care (due per program)."""
    code = TaskCode.ESTABLISH_CARE
    return {
        "resourceType": "Task",
        "identifier": [task_identifier(source_id(a.program.name, a.patient_id, a.seq), code)],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": task_display(code)}]
        },
        "description": "New PCCM member assigned to you: reach out and establish care.",
        "for": {"reference": f"Patient/{a.patient_id}"},
        "authoredOn": a.recorded,
        "owner": _pcp_ref(a.pcp),
        "performerType": _pcp_role(),
        "restriction": {
            "period": {"start": a.effective_on.isoformat(), "end": a.due_on.isoformat()}
        },
        "reasonCode": {
            "coding": [{"system": ASSIGNMENT_RULE_SYSTEM, "code": _rule(a)}],
            "text": f"PCCM assignment by {_rule(a)}: {a.decision.reason}",
        },
    }


def _rule(a: Assignment) -> str:
    return a.decision.rule or a.kind


def _notice_text(a: Assignment) -> str:
    who = a.pcp.name or f"PractitionerRole/{a.pcp.id}"
    why = next((n.reason for n in a.decision.notes if n.decided), a.decision.reason)
    return (
        f"Your primary care provider in {a.program.title or a.program.name} is {who}, "
        f"from {a.effective_on.isoformat()}. Why: {why}. You may change your primary care "
        f"provider without giving a reason until {a.change_until.isoformat()}, once a year after "
        "that, and at any time for cause."
    )


def member_notice(a: Assignment) -> dict[str, Any]:
    """The member notice: the PCP, why, and until when they may change without cause."""
    return {
        "resourceType": "Communication",
        "identifier": [
            {
                "system": NOTICE_IDENTIFIER_SYSTEM,
                "value": source_id(a.program.name, a.patient_id, a.seq),
            }
        ],
        "status": "preparation",
        "category": [
            {
                "coding": [
                    {
                        "system": COMMUNICATION_CATEGORY_SYSTEM,
                        "code": MEMBER_NOTICE,
                        "display": "Member notice",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{a.patient_id}"},
        "recipient": [{"reference": f"Patient/{a.patient_id}"}],
        "about": [_pcp_ref(a.pcp)],
        "payload": [{"contentString": _notice_text(a)}],
    }


def provenance(assignments: Sequence[Assignment], targets: Sequence[str]) -> dict[str, Any]:
    """One Provenance for the assignments written in one transaction: every resource they wrote
    (``targets``), the program, and per deciding rule how many assignments it made.

    Each member's own trail (every rule tried and why it did not decide) is on their
    establish-care Task (``reasonCode``), in the member notice (why) and in the assignment row.
    """
    first = assignments[0]
    rules = Counter(_rule(a) for a in assignments)
    kinds = ", ".join(sorted({a.kind for a in assignments}))
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": first.recorded,
        "policy": [f"{PROGRAM_URL}/{first.program.name}"],
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": f"CareCoord PCCM assignment ({kinds})"},
            }
        ],
        "reason": [
            {
                "coding": [{"system": ASSIGNMENT_RULE_SYSTEM, "code": rule}],
                "text": f"{rule}: {n} assignment{'s' if n != 1 else ''}",
            }
            for rule, n in rules.items()
        ],
    }
