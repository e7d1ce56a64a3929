"""Discharge → checklist: load the facts, build the checklist, write the CarePlan and its Tasks.

One call per Encounter event, inside one write transaction:

- :func:`plan_transition` (discharge, or an update of a discharged encounter): the CarePlan and
  one Task per item, each with a deterministic identifier written with conditional create, so the
  same discharge seen twice makes one checklist; a later update recomputes deadlines of the open
  items, adds items that now apply and cancels (with a reason) open items that no longer do;
- :func:`cancel_transition` (A13 cancel discharge, ``entered-in-error``): revokes the CarePlan and
  cancels its open Tasks with the reason.

Escalation steps are queued as delayed ``transitions.escalate`` jobs in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from carecoord.fhir.store import Writer, new_id
from carecoord.jobs import JobSpec, enqueue_many
from carecoord.transitions.assignment import Assigner
from carecoord.transitions.checklist import (
    Checklist,
    DischargeFacts,
    PlannedItem,
    build_checklist,
    escalation_due,
    starts_transition,
)
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    TASK_IDENTIFIER_SYSTEM,
    TRANSITION_OF_CARE,
    role_display,
    task_identifier,
)
from carecoord.transitions.guard import REQUIRED_EXTENSION, TCM_EXTENSION
from carecoord.transitions.resources import read_json, reference_of
from carecoord.transitions.taskflow import OPEN
from carecoord.transitions.tcm import Complexity, destination_of, suggested_billing_code
from carecoord.transitions.templates import OrganizationSetup, TemplateSet

__all__ = [
    "ESCALATE_KIND",
    "RiskHook",
    "TransitionResult",
    "cancel_transition",
    "discharge_facts",
    "format_due",
    "plan_transition",
    "tcm_billing",
]

#: The job kind of one escalation step of one Task.
ESCALATE_KIND: Final = "transitions.escalate"

#: Scores the discharge inside the transaction and returns its risk band (or None).
RiskHook = Callable[[Writer, str, datetime], str | None]

_SNOMED: Final = "http://snomed.info/sct"
_EQUIPMENT: Final = frozenset({"49062001", "home-services-equipment", "equipment"})
_RESULTS: Final = frozenset({"108252007", "363679005", "laboratory", "imaging"})


@dataclass
class TransitionResult:
    """What one call did (counts only: no patient data)."""

    careplan_id: str | None = None
    created: int = 0
    updated: int = 0
    cancelled: int = 0
    unchanged: int = 0
    skipped: str | None = None  # why no checklist applies
    items: dict[str, str] = field(default_factory=dict)  # item key -> Task id


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    if "T" not in value:
        return datetime.fromisoformat(value[:10]).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_due(due: date | datetime) -> str:
    """A deadline as FHIR dateTime: a date (by the end of that local day) or a UTC instant."""
    if isinstance(due, datetime):
        return due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return due.isoformat()


def tcm_billing(complexity: str, discharge: date, visit: date) -> str | None:
    """The suggested TCM code (99495/99496) for a visit on ``visit`` (the guard's billing rule)."""
    return suggested_billing_code(
        complexity=Complexity(complexity), discharge=discharge, visit=visit
    )


def _codes(concepts: Iterable[Any]) -> set[str]:
    return {
        str(c.get("code"))
        for concept in concepts
        if isinstance(concept, dict)
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("code")
    }


def _open_orders(w: Writer, encounter_id: str) -> list[dict[str, Any]]:
    ids = w.find(
        "ServiceRequest",
        [("encounter", f"Encounter/{encounter_id}"), ("status", "active,draft,on-hold")],
        limit=200,
    )
    return [o for o in (read_json(w, "ServiceRequest", i) for i in ids) if o]


def _pending_results(w: Writer, encounter_id: str, orders: list[dict[str, Any]]) -> bool:
    if any(_codes(o.get("category") or []) & _RESULTS for o in orders):
        return True
    return bool(
        w.find(
            "Observation",
            [("encounter", f"Encounter/{encounter_id}"), ("status", "registered,preliminary")],
            limit=1,
        )
    )


def _language(patient: dict[str, Any]) -> str | None:
    entries = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    preferred = [c for c in entries if c.get("preferred")] or entries
    for entry in preferred:
        for coding in (entry.get("language") or {}).get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def _class_code(encounter: dict[str, Any]) -> str:
    cls = encounter.get("class")
    code = cls.get("code") if isinstance(cls, dict) else None
    return code if isinstance(code, str) else ""


def discharge_facts(
    w: Writer,
    encounter: dict[str, Any],
    patient: dict[str, Any],
    *,
    now: datetime,
    risk_band: str | None = None,
) -> DischargeFacts:
    """The facts the checklist rules need, read from the Encounter and what hangs off it."""
    encounter_id = str(encounter["id"])
    period = encounter.get("period") or {}
    discharged = _instant(period.get("end")) or now
    hospitalization = encounter.get("hospitalization") or {}
    disposition = hospitalization.get("dischargeDisposition")
    orders = _open_orders(w, encounter_id)
    provider = reference_of(encounter.get("serviceProvider"))
    return DischargeFacts(
        encounter_id=encounter_id,
        patient_id=str(patient["id"]),
        encounter_class=_class_code(encounter),
        discharged=discharged,
        admitted=_instant(period.get("start")),
        destination=destination_of([disposition] if isinstance(disposition, dict) else []),
        organization=provider.partition("/")[2] if provider else None,
        patient_language=_language(patient),
        equipment_ordered=any(
            _codes([*(o.get("category") or []), o.get("code") or {}]) & _EQUIPMENT for o in orders
        ),
        pending_results=_pending_results(w, encounter_id, orders),
        risk_band=risk_band,
    )


def _find_plan(w: Writer, encounter_id: str) -> tuple[str, dict[str, Any]] | None:
    ids = w.find("CarePlan", [("identifier", f"{CAREPLAN_IDENTIFIER_SYSTEM}|{encounter_id}")])
    for plan_id in ids:
        plan = read_json(w, "CarePlan", plan_id)
        if plan is not None:
            return plan_id, plan
    return None


def _find_tasks(w: Writer, plan_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The plan's generated Tasks by item key."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for task_id in w.find("Task", [("based-on", f"CarePlan/{plan_id}")], limit=1000):
        task = read_json(w, "Task", task_id)
        for ident in (task or {}).get("identifier") or []:
            if task and ident.get("system") == TASK_IDENTIFIER_SYSTEM:
                found[str(ident.get("value", "")).partition(":")[2]] = (task_id, task)
    return found


def _plan_body(
    encounter: dict[str, Any],
    facts: DischargeFacts,
    checklist: Checklist,
    setup: OrganizationSetup,
    task_ids: list[str],
    now: datetime,
    existing: dict[str, Any] | None,
) -> dict[str, Any]:
    discharge_day = setup.calendar.local_date(facts.discharged)
    tcm = checklist.tcm
    end = tcm.deadlines.period_end if tcm is not None else discharge_day + timedelta(days=29)
    addresses = [
        {"reference": ref}
        for ref in (
            reference_of(d.get("condition"))
            for d in encounter.get("diagnosis") or []
            if isinstance(d, dict)
        )
        if ref and ref.startswith("Condition/")
    ] + [
        {"reference": ref}
        for ref in (reference_of(r) for r in encounter.get("reasonReference") or [])
        if ref and ref.startswith("Condition/")
    ]
    unique = list({a["reference"]: a for a in addresses}.values())
    eligibility = checklist.tcm_eligibility
    tcm_parts: list[dict[str, Any]] = [
        {"url": "variant", "valueCode": checklist.variant},
        {"url": "discharge", "valueDate": discharge_day.isoformat()},
        {"url": "eligible", "valueBoolean": eligibility.eligible},
        {"url": "reason", "valueString": eligibility.reason},
        {"url": "complexity", "valueCode": checklist.complexity.value},
    ]
    if tcm is not None:
        tcm_parts += [
            {"url": "contactDue", "valueDate": tcm.deadlines.contact.isoformat()},
            {"url": "visitDue", "valueDate": tcm.visit_due.isoformat()},
        ]
    if facts.risk_band:
        tcm_parts.append({"url": "riskBand", "valueCode": facts.risk_band})
    body: dict[str, Any] = {
        "resourceType": "CarePlan",
        "identifier": [{"system": CAREPLAN_IDENTIFIER_SYSTEM, "value": facts.encounter_id}],
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {
                        "system": CAREPLAN_CATEGORY_SYSTEM,
                        "code": TRANSITION_OF_CARE,
                        "display": "Transition of care",
                    }
                ]
            }
        ],
        "title": f"Transition of care after discharge on {discharge_day.isoformat()}",
        "subject": {"reference": f"Patient/{facts.patient_id}"},
        "encounter": {"reference": f"Encounter/{facts.encounter_id}"},
        "period": {"start": format_due(facts.discharged), "end": end.isoformat()},
        "created": format_due(now),
        "activity": [{"reference": {"reference": f"Task/{t}"}} for t in task_ids],
        "extension": [{"url": TCM_EXTENSION, "extension": tcm_parts}],
    }
    if unique:
        body["addresses"] = unique
    provider = reference_of(encounter.get("serviceProvider"))
    if provider:
        body["author"] = {"reference": provider}
    if existing is not None:
        body["created"] = existing.get("created", body["created"])
        if existing.get("status") in ("completed", "revoked"):
            body["status"] = existing["status"] if existing["status"] == "completed" else "active"
    return body


def _task_body(
    item: PlannedItem,
    *,
    facts: DischargeFacts,
    plan_id: str,
    owner: str | None,
    requester: str | None,
    now: datetime,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [task_identifier(facts.encounter_id, item.key)],
        "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
        "status": "ready" if owner and item.owner.value != "pcp" else "requested",
        "intent": "order",
        "priority": item.priority,
        "code": {
            "coding": [
                {"system": TASK_CODE_SYSTEM, "code": item.code.value, "display": item.title}
            ],
            "text": item.title,
        },
        "description": item.title,
        "for": {"reference": f"Patient/{facts.patient_id}"},
        "encounter": {"reference": f"Encounter/{facts.encounter_id}"},
        "authoredOn": format_due(now),
        "performerType": [
            {
                "coding": [
                    {
                        "system": CARE_ROLE_SYSTEM,
                        "code": item.owner.value,
                        "display": role_display(item.owner),
                    }
                ]
            }
        ],
        "restriction": {"period": {"end": format_due(item.due)}},
        "extension": [{"url": REQUIRED_EXTENSION, "valueBoolean": item.required}],
    }
    if owner:
        body["owner"] = {"reference": owner}
    if requester:
        body["requester"] = {"reference": requester}
    return body


def _escalations(
    task_id: str, item: PlannedItem, setup: OrganizationSetup, now: datetime
) -> list[JobSpec]:
    """The delayed jobs of an item's escalation steps (keyed by task, step and deadline)."""
    due = format_due(item.due)
    return [
        JobSpec(
            kind=ESCALATE_KIND,
            payload={
                "task_id": task_id,
                "step": step.name,
                "when": step.when,
                "due": due,
                "notify": [str(n) for n in step.notify],
            },
            key=f"escalate:{task_id}:{step.name}:{due}",
            run_at=max(escalation_due(step, item.due, setup.calendar), now),
        )
        for step in item.escalation
    ]


def _cancel(w: Writer, task_id: str, task: dict[str, Any], reason: str) -> bool:
    if task.get("status") not in OPEN:
        return False
    w.update("Task", task_id, {**task, "status": "cancelled", "statusReason": {"text": reason}})
    return True


def plan_transition(
    w: Writer,
    *,
    encounter_id: str,
    templates: TemplateSet,
    now: datetime,
    risk: RiskHook | None = None,
) -> TransitionResult:
    """Create the checklist of a discharge, or bring an existing one up to date."""
    result = TransitionResult()
    encounter = read_json(w, "Encounter", encounter_id)
    if encounter is None:
        result.skipped = "encounter not found"
        return result
    if encounter.get("status") in ("cancelled", "entered-in-error"):
        result.skipped = "encounter cancelled"
        return result
    if not starts_transition(_class_code(encounter)):
        result.skipped = "encounter class does not start a transition"
        return result
    patient_ref = reference_of(encounter.get("subject")) or ""
    patient = read_json(w, "Patient", patient_ref.partition("/")[2]) if patient_ref else None
    if patient is None or not patient_ref.startswith("Patient/"):
        result.skipped = "no patient"
        return result
    band = risk(w, encounter_id, now) if risk is not None else None
    facts = discharge_facts(w, encounter, patient, now=now, risk_band=band)
    provider = reference_of(encounter.get("serviceProvider"))
    setup = templates.for_organization(facts.organization)
    checklist = build_checklist(facts, setup)
    if checklist is None:
        result.skipped = "no transition for this discharge destination"
        return result
    assigner = Assigner(w, patient, encounter)
    found = _find_plan(w, encounter_id)
    existing_tasks = _find_tasks(w, found[0]) if found else {}
    plan_id = found[0] if found else new_id()
    task_ids = {
        item.key: existing_tasks[item.key][0] if item.key in existing_tasks else new_id()
        for item in checklist.items
    }
    all_ids = list(task_ids.values()) + [
        tid for key, (tid, _) in sorted(existing_tasks.items()) if key not in task_ids
    ]
    plan = _plan_body(encounter, facts, checklist, setup, all_ids, now, found[1] if found else None)
    fresh = found is None
    if found is None:
        written = w.create(
            "CarePlan",
            plan,
            if_none_exist=[("identifier", f"{CAREPLAN_IDENTIFIER_SYSTEM}|{encounter_id}")],
            res_id=plan_id,
        )
        if not written.created:  # made meanwhile by a concurrent run: bring that one up to date
            return plan_transition(w, encounter_id=encounter_id, templates=templates, now=now)
    else:
        w.update("CarePlan", plan_id, plan)
    result.careplan_id = plan_id
    identifiers = ",".join(
        f"{TASK_IDENTIFIER_SYSTEM}|{encounter_id}:{item.key}" for item in checklist.items
    )
    strays = fresh and bool(w.find("Task", [("identifier", identifiers)], limit=1))
    escalations: list[JobSpec] = []
    for item in checklist.items:
        task_id = task_ids[item.key]
        result.items[item.key] = task_id
        if item.key in existing_tasks:
            _, task = existing_tasks[item.key]
            due = format_due(item.due)
            current_due = (task.get("restriction") or {}).get("period", {}).get("end")
            if task.get("status") not in OPEN or (
                current_due == due and task.get("priority") == item.priority
            ):
                result.unchanged += 1
                continue
            task = {**task, "priority": item.priority}
            task["restriction"] = {**(task.get("restriction") or {}), "period": {"end": due}}
            w.update("Task", task_id, task)
            result.updated += 1
        else:
            body = _task_body(
                item,
                facts=facts,
                plan_id=plan_id,
                owner=assigner.owner(item.owner),
                requester=provider,
                now=now,
            )
            ident = f"{TASK_IDENTIFIER_SYSTEM}|{encounter_id}:{item.key}"
            # A fresh plan was created under the lock of its identifier, and its Tasks are only
            # ever made with it: none can exist (checked once for all, below).
            condition = None if fresh and not strays else [("identifier", ident)]
            w.create("Task", body, if_none_exist=condition, res_id=task_id)
            result.created += 1
        escalations += _escalations(task_id, item, setup, now)
    enqueue_many(w.conn, escalations, clock=w.store.clock)
    for key, (task_id, task) in existing_tasks.items():
        if key not in task_ids and _cancel(
            w, task_id, task, "No longer applies after the discharge was updated"
        ):
            result.cancelled += 1
    return result


def cancel_transition(w: Writer, *, encounter_id: str, reason: str) -> TransitionResult:
    """Revoke the checklist of a discharge that did not happen, cancelling its open items."""
    result = TransitionResult()
    found = _find_plan(w, encounter_id)
    if found is None:
        result.skipped = "no checklist"
        return result
    plan_id, plan = found
    result.careplan_id = plan_id
    if plan.get("status") != "revoked":  # first, so that cancelling its items does not close it
        note = [*(plan.get("note") or []), {"text": reason}]
        w.update("CarePlan", plan_id, {**plan, "status": "revoked", "note": note})
    for task_id, task in _find_tasks(w, plan_id).values():
        if _cancel(w, task_id, task, reason):
            result.cancelled += 1
    return result
