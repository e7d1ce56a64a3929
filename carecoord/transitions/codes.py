"""Codes and identifier systems that CareCoord publishes for care transitions and coordination.

Every generated resource is found again by these: Tasks by ``code`` (system
:data:`TASK_CODE_SYSTEM`) and by their deterministic identifier, CarePlans by category and
identifier, owner roles by ``Task.performerType``. Other packages (risk, readmissions, PCCM, cases,
web) read and write the same codes; the CodeSystem resources are published from
:func:`code_systems`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

__all__ = [
    "CAREPLAN_CATEGORY_SYSTEM",
    "CAREPLAN_IDENTIFIER_SYSTEM",
    "CARE_ROLE_SYSTEM",
    "CASE_MANAGEMENT",
    "COMMUNICATION_CATEGORY_SYSTEM",
    "CPT_SYSTEM",
    "ESCALATION_IDENTIFIER_SYSTEM",
    "TASK_BUSINESS_STATUS_SYSTEM",
    "TASK_CODE_SYSTEM",
    "TASK_IDENTIFIER_SYSTEM",
    "TASK_OUTPUT_SYSTEM",
    "TRANSITION_OF_CARE",
    "CareRole",
    "TaskCode",
    "code_systems",
    "role_display",
    "task_display",
    "task_identifier",
]

_BASE: Final = "https://carecoord.org/fhir"

#: Task.code of every generated work item.
TASK_CODE_SYSTEM: Final = f"{_BASE}/CodeSystem/care-transition-task"
#: Task.identifier of a generated item: value ``{source id}:{item key}`` (source: the discharge
#: Encounter's id for checklists; the item key is unique in its checklist, often the code).
TASK_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/transition-task"
#: CarePlan.identifier of a transition checklist: value = the discharge Encounter's id.
CAREPLAN_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/transition-careplan"
#: CarePlan.category of a transition checklist.
CAREPLAN_CATEGORY_SYSTEM: Final = f"{_BASE}/CodeSystem/care-plan-category"
TRANSITION_OF_CARE: Final = "transition-of-care"
CASE_MANAGEMENT: Final = "case-management"
#: Task.performerType / CareTeam.participant.role: who does the work.
CARE_ROLE_SYSTEM: Final = f"{_BASE}/CodeSystem/care-role"
#: Communication.category: contact attempts, escalation notices, member notices.
COMMUNICATION_CATEGORY_SYSTEM: Final = f"{_BASE}/CodeSystem/communication-category"
#: Communication.identifier of an escalation notice: value ``{task id}:{step}``.
ESCALATION_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/escalation"
#: Task.businessStatus (e.g. ``contact-attempts-satisfied``).
TASK_BUSINESS_STATUS_SYSTEM: Final = f"{_BASE}/CodeSystem/task-business-status"
#: Task.output[].type (e.g. ``tcm-billing-code``, ``contact-attempt``).
TASK_OUTPUT_SYSTEM: Final = f"{_BASE}/CodeSystem/task-output"
CPT_SYSTEM: Final = "http://www.ama-assn.org/go/cpt"


class TaskCode(StrEnum):
    """Task.code values (system :data:`TASK_CODE_SYSTEM`)."""

    TCM_INTERACTIVE_CONTACT = "tcm-interactive-contact"
    TCM_FACE_TO_FACE_VISIT = "tcm-face-to-face-visit"
    MEDICATION_RECONCILIATION = "medication-reconciliation"
    DISCHARGE_SUMMARY_TO_PCP = "discharge-summary-to-pcp"
    FOLLOW_UP_APPOINTMENT = "follow-up-appointment"
    FOLLOW_UP_CALL = "follow-up-call"
    TEACH_BACK_EDUCATION = "teach-back-education"
    RED_FLAGS_EDUCATION = "red-flags-education"
    PENDING_RESULTS_FOLLOW_UP = "pending-results-follow-up"
    HOME_SERVICES_EQUIPMENT = "home-services-equipment"
    INTERPRETER = "interpreter"
    MEDICATION_ACCESS = "medication-access"
    AFTER_HOSPITAL_CARE_PLAN = "after-hospital-care-plan"
    READMISSION_REVIEW = "readmission-review"
    ESTABLISH_CARE = "establish-care"
    CASE_CONTACT = "case-contact"
    CASE_REASSESSMENT = "case-reassessment"
    CASE_FOLLOW_UP = "case-follow-up"


_TASK_DISPLAY: Final[dict[TaskCode, tuple[str, str]]] = {
    TaskCode.TCM_INTERACTIVE_CONTACT: (
        "TCM interactive contact",
        "Interactive contact with the patient or caregiver (phone, direct or electronic) "
        "within 2 business days after discharge, addressing status and needs.",
    ),
    TaskCode.TCM_FACE_TO_FACE_VISIT: (
        "TCM face-to-face visit",
        "Face-to-face visit within 7 (high complexity) or 14 (moderate) days of discharge.",
    ),
    TaskCode.MEDICATION_RECONCILIATION: (
        "Medication reconciliation",
        "Reconcile discharge medicines, no later than the face-to-face visit.",
    ),
    TaskCode.DISCHARGE_SUMMARY_TO_PCP: (
        "Discharge summary to PCP",
        "Send the discharge summary to the clinicians taking over care.",
    ),
    TaskCode.FOLLOW_UP_APPOINTMENT: (
        "Follow-up appointment",
        "Book the follow-up appointment (and find a PCP when there is none).",
    ),
    TaskCode.FOLLOW_UP_CALL: (
        "Follow-up call",
        "Phone reinforcement of the after-hospital plan.",
    ),
    TaskCode.TEACH_BACK_EDUCATION: (
        "Teach-back education",
        "Educate on diagnosis and medicines and confirm understanding by teach-back.",
    ),
    TaskCode.RED_FLAGS_EDUCATION: (
        "Red-flags education",
        "Teach what to do and whom to call if a problem arises.",
    ),
    TaskCode.PENDING_RESULTS_FOLLOW_UP: (
        "Pending results follow-up",
        "Follow up the tests still pending at discharge.",
    ),
    TaskCode.HOME_SERVICES_EQUIPMENT: (
        "Home services and equipment",
        "Arrange post-discharge services and the equipment ordered.",
    ),
    TaskCode.INTERPRETER: (
        "Interpreter",
        "Language assistance for a patient whose preferred language is not the organisation's.",
    ),
    TaskCode.MEDICATION_ACCESS: (
        "Medicines obtained",
        "Make sure the patient has the correct medicines and a plan to obtain them.",
    ),
    TaskCode.AFTER_HOSPITAL_CARE_PLAN: (
        "After-hospital care plan",
        "Give and explain a written after-hospital care plan.",
    ),
    TaskCode.READMISSION_REVIEW: (
        "Readmission review",
        "Review what went wrong with the last transition after a 30-day readmission.",
    ),
    TaskCode.ESTABLISH_CARE: (
        "New member assigned: establish care",
        "A PCCM member was assigned to this PCP: reach out and establish care.",
    ),
    TaskCode.CASE_CONTACT: ("Case contact", "Contact due under the case model's frequency."),
    TaskCode.CASE_REASSESSMENT: ("Case reassessment", "Reassessment due under the case model."),
    TaskCode.CASE_FOLLOW_UP: ("Case follow-up", "Follow-up check after a case is closed."),
}


class CareRole(StrEnum):
    """Who owns an item (Task.performerType, CareTeam.participant.role)."""

    NURSE_CASE_MANAGER = "nurse-case-manager"
    PCP = "pcp"
    PHARMACIST = "pharmacist"
    SCHEDULER = "scheduler"
    SOCIAL_WORKER = "social-worker"
    SUPERVISOR = "supervisor"


_ROLE_DISPLAY: Final[dict[CareRole, str]] = {
    CareRole.NURSE_CASE_MANAGER: "Nurse case manager",
    CareRole.PCP: "Primary care provider",
    CareRole.PHARMACIST: "Pharmacist",
    CareRole.SCHEDULER: "Scheduler",
    CareRole.SOCIAL_WORKER: "Social worker",
    CareRole.SUPERVISOR: "Case management supervisor",
}


_COMMUNICATION_CATEGORIES: Final = {
    "contact-attempt": "Contact attempt",
    "escalation": "Escalation notice",
    "member-notice": "Member notice",
    "case-contact": "Case contact",
    "referral-declined": "Referral declined",
}
_BUSINESS_STATUSES: Final = {
    "contact-made": "Patient or caregiver reached",
    "contact-attempts-satisfied": "Documented unsuccessful attempts satisfy the contact",
    "overdue": "Overdue",
}
_TASK_OUTPUTS: Final = {
    "tcm-billing-code": "Suggested TCM billing code",
    "contact-attempt": "Contact attempt",
    "contact": "Contact",
    "assessment": "Assessment",
}


def task_identifier(source_id: str, item: str) -> dict[str, str]:
    """The deterministic identifier of the item keyed ``item`` generated for ``source_id``."""
    return {"system": TASK_IDENTIFIER_SYSTEM, "value": f"{source_id}:{item}"}


def _code_system(url: str, name: str, title: str, concepts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "id": name,
        "url": url,
        "name": name.replace("-", "_").title().replace("_", ""),
        "title": title,
        "status": "active",
        "content": "complete",
        "caseSensitive": True,
        "publisher": "CareCoord",
        "concept": concepts,
    }


def code_systems() -> list[dict[str, Any]]:
    """The CodeSystem resources CareCoord publishes (served read-only, loaded at start)."""
    return [
        _code_system(
            TASK_CODE_SYSTEM,
            "care-transition-task",
            "CareCoord care-coordination task codes",
            [
                {"code": c.value, "display": d, "definition": text}
                for c, (d, text) in _TASK_DISPLAY.items()
            ],
        ),
        _code_system(
            CARE_ROLE_SYSTEM,
            "care-role",
            "CareCoord care roles",
            [{"code": r.value, "display": d} for r, d in _ROLE_DISPLAY.items()],
        ),
        _code_system(
            CAREPLAN_CATEGORY_SYSTEM,
            "care-plan-category",
            "CareCoord care plan categories",
            [
                {"code": TRANSITION_OF_CARE, "display": "Transition of care"},
                {"code": CASE_MANAGEMENT, "display": "Case management plan"},
            ],
        ),
        _code_system(
            COMMUNICATION_CATEGORY_SYSTEM,
            "communication-category",
            "CareCoord communication categories",
            [{"code": c, "display": d} for c, d in _COMMUNICATION_CATEGORIES.items()],
        ),
        _code_system(
            TASK_BUSINESS_STATUS_SYSTEM,
            "task-business-status",
            "CareCoord task business statuses",
            [{"code": c, "display": d} for c, d in _BUSINESS_STATUSES.items()],
        ),
        _code_system(
            TASK_OUTPUT_SYSTEM,
            "task-output",
            "CareCoord task output types",
            [{"code": c, "display": d} for c, d in _TASK_OUTPUTS.items()],
        ),
    ]


def task_display(code: TaskCode) -> str:
    return _TASK_DISPLAY[code][0]


def role_display(role: CareRole) -> str:
    return _ROLE_DISPLAY[role]
