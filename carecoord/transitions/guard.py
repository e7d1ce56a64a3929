"""The store write hook for Tasks: the state machine on every write, and what follows a move.

:func:`task_guard` runs inside every write transaction (REST API, bundles, services). For a Task it
works out who the writer is to the Task (owner, requester, case manager, system) and refuses what
:mod:`carecoord.transitions.taskflow` forbids with a 422 naming the move. After an allowed move it
keeps the Task's CarePlan in step (completed when every required item is done or waived with a
reason) and, when a TCM face-to-face visit completes, records the suggested billing code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Final

import orjson

from carecoord.fhir.access import AccessPolicy, relative_reference
from carecoord.fhir.errors import BusinessRule
from carecoord.fhir.store import StoredResource, Writer
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CPT_SYSTEM,
    TASK_CODE_SYSTEM,
    TASK_OUTPUT_SYSTEM,
    CareRole,
    TaskCode,
)
from carecoord.transitions.resources import read_reference, reference_of
from carecoord.transitions.taskflow import FINAL, Actor, TaskRuleError, check_create, check_move

__all__ = [
    "REQUIRED_EXTENSION",
    "TCM_EXTENSION",
    "actors_for",
    "task_code",
    "task_guard",
]

#: Task extension (valueBoolean): the item must be done (or waived with a reason) to close the plan.
REQUIRED_EXTENSION: Final = "https://carecoord.org/fhir/StructureDefinition/checklist-item-required"
#: CarePlan extension: TCM facts of the discharge (complexity, discharge date, eligibility).
TCM_EXTENSION: Final = "https://carecoord.org/fhir/StructureDefinition/tcm"

_SUPERVISING: Final = frozenset({CareRole.NURSE_CASE_MANAGER.value, CareRole.SUPERVISOR.value})

#: Suggests the TCM billing code from (complexity, discharge date, visit date); set by the service.
BillingRule = Callable[[str, date, date], str | None]


def task_code(task: dict[str, Any]) -> str | None:
    """The CareCoord code of a Task (None for a Task of another system)."""
    for coding in (task.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == TASK_CODE_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def _is_user(w: Writer, reference: str | None, user: str) -> bool:
    """Whether ``reference`` (owner/requester) is the user, or a role or organisation of theirs."""
    if reference is None:
        return False
    if reference == user:
        return True
    if reference.startswith("PractitionerRole/"):
        role = read_reference(w, reference)
        return role is not None and reference_of(role.get("practitioner")) == user
    if reference.startswith("Organization/") and user.startswith("Practitioner/"):
        return bool(
            w.find(
                "PractitionerRole", [("practitioner", user), ("organization", reference)], limit=1
            )
        )
    return False


def _has_role_code(resource: dict[str, Any], key: str, codes: frozenset[str]) -> bool:
    for concept in resource.get(key) or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == CARE_ROLE_SYSTEM and coding.get("code") in codes:
                return True
    return False


def _is_case_manager(w: Writer, task: dict[str, Any], user: str) -> bool:
    """The user manages the patient's care (CareTeam role) or supervises case managers."""
    patient = reference_of(task.get("for"))
    if patient and patient.startswith("Patient/"):
        for team_id in w.find("CareTeam", [("patient", patient), ("status", "active")], limit=20):
            team = read_reference(w, f"CareTeam/{team_id}")
            for member in (team or {}).get("participant") or []:
                who = reference_of(member.get("member"))
                if who and _is_user(w, who, user) and _has_role_code(member, "role", _SUPERVISING):
                    return True
    for role_id in w.find("PractitionerRole", [("practitioner", user)], limit=20):
        role = read_reference(w, f"PractitionerRole/{role_id}")
        if role and _has_role_code(role, "code", frozenset({CareRole.SUPERVISOR.value})):
            return True
    return False


def actors_for(
    w: Writer, policy: AccessPolicy | None, tasks: list[dict[str, Any]]
) -> frozenset[Actor]:
    """What the writer is to the Task (given as its versions before and after the write)."""
    if policy is None or w.internal:
        return frozenset({Actor.SYSTEM})
    agent = policy.agent
    if agent.kind != "user":
        system = any(s.context == "system" for s in policy.scopes)
        return frozenset({Actor.SYSTEM}) if system else frozenset()
    user = relative_reference(agent.who) or agent.who
    actors: set[Actor] = set()
    for task in tasks:
        if _is_user(w, reference_of(task.get("owner")), user):
            actors.add(Actor.OWNER)
        if _is_user(w, reference_of(task.get("requester")), user):
            actors.add(Actor.REQUESTER)
    if _is_case_manager(w, tasks[-1], user):
        actors.add(Actor.CASE_MANAGER)
    return frozenset(actors)


def _required(task: dict[str, Any]) -> bool:
    for ext in task.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == REQUIRED_EXTENSION:
            return bool(ext.get("valueBoolean"))
    return False


def _plan_done(w: Writer, plan: dict[str, Any]) -> bool:
    """Every required item completed, or cancelled/failed with a reason (waived)."""
    seen = False
    for activity in plan.get("activity") or []:
        ref = reference_of(activity.get("reference"))
        if not ref or not ref.startswith("Task/"):
            continue
        task = read_reference(w, ref)
        if task is None or not _required(task):
            continue
        seen = True
        if task.get("status") not in FINAL - {"entered-in-error"}:
            return False
    return seen


def _follow_plan(w: Writer, task: dict[str, Any]) -> None:
    """Complete the Task's active CarePlan when its required items are all closed."""
    for based_on in task.get("basedOn") or []:
        ref = reference_of(based_on)
        if not ref or not ref.startswith("CarePlan/"):
            continue
        plan = read_reference(w, ref)
        if plan is None or plan.get("status") != "active" or not _plan_done(w, plan):
            continue
        with w.as_system():
            w.update("CarePlan", ref.partition("/")[2], {**plan, "status": "completed"})


def _tcm_facts(plan: dict[str, Any]) -> tuple[str, date] | None:
    for ext in plan.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != TCM_EXTENSION:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or [] if isinstance(e, dict)}
        complexity = (parts.get("complexity") or {}).get("valueCode")
        discharged = (parts.get("discharge") or {}).get("valueDate")
        eligible = (parts.get("eligible") or {}).get("valueBoolean")
        if eligible and isinstance(complexity, str) and isinstance(discharged, str):
            return complexity, date.fromisoformat(discharged)
    return None


def _visit_day(task: dict[str, Any], fallback: str) -> date:
    end = (task.get("executionPeriod") or {}).get("end") or fallback
    return (
        datetime.fromisoformat(str(end).replace("Z", "+00:00")).date()
        if "T" in str(end)
        else date.fromisoformat(str(end)[:10])
    )


def _record_billing(
    w: Writer, stored: StoredResource, task: dict[str, Any], rule: BillingRule
) -> None:
    """On a completed TCM visit, add the suggested CPT code (99495/99496) as a Task output."""
    outputs = task.get("output") or []
    if any(
        c.get("system") == TASK_OUTPUT_SYSTEM and c.get("code") == "tcm-billing-code"
        for o in outputs
        for c in (o.get("type") or {}).get("coding") or []
    ):
        return
    for based_on in task.get("basedOn") or []:
        ref = reference_of(based_on)
        plan = read_reference(w, ref) if ref and ref.startswith("CarePlan/") else None
        facts = _tcm_facts(plan) if plan else None
        if facts is None:
            continue
        complexity, discharged = facts
        last_updated = orjson.loads(stored.content or b"{}").get("meta", {}).get("lastUpdated", "")
        code = rule(complexity, discharged, _visit_day(task, last_updated))
        if code is None:
            return
        output = {
            "type": {
                "coding": [{"system": TASK_OUTPUT_SYSTEM, "code": "tcm-billing-code"}],
                "text": "Suggested TCM billing code",
            },
            "valueCodeableConcept": {"coding": [{"system": CPT_SYSTEM, "code": code}]},
        }
        with w.as_system():
            w.update("Task", stored.res_id, {**task, "output": [*outputs, output]})
        return


def task_guard(
    billing: BillingRule | None = None,
) -> Callable[[Writer, str, StoredResource, str | None], None]:
    """The write hook enforcing the Task state machine (``billing``: the TCM code rule)."""

    def hook(w: Writer, res_type: str, stored: StoredResource, previous_status: str | None) -> None:
        if res_type != "Task" or stored.content is None:
            return
        task = orjson.loads(stored.content)
        before = w.previous_version(stored)
        try:
            if before is None:
                check_create(task, actors_for(w, w.policy, [task]))
            else:
                check_move(before, task, actors_for(w, w.policy, [before, task]))
        except TaskRuleError as exc:
            raise BusinessRule(str(exc)) from exc
        status = task.get("status")
        if before is not None and before.get("status") == status:
            return
        if (
            status == "completed"
            and billing is not None
            and task_code(task) == TaskCode.TCM_FACE_TO_FACE_VISIT
        ):
            _record_billing(w, stored, task, billing)
        if status in FINAL:
            _follow_plan(w, task)

    return hook
