"""FHIR shapes of a case: identifier systems, extensions, and pure readers/builders of resources."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from carecoord.cases.config import CASE_MODEL_SYSTEM, CaseConfig, CaseModel
from carecoord.cases.phases import CLOSURE_REASONS, EPISODE_STATUS, Phase
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    TASK_CODE_SYSTEM,
    CareRole,
    TaskCode,
    role_display,
    task_display,
    task_identifier,
)

__all__ = [
    "ASSESSMENT_EXTENSION",
    "CASE_CAREPLAN_SYSTEM",
    "CASE_IDENTIFIER_SYSTEM",
    "CASE_MANAGEMENT_CATEGORY",
    "CASE_RESOURCE_SYSTEM",
    "CASE_TAG_SYSTEM",
    "CLOSURE_EXTENSION",
    "CLOSURE_REASON_SYSTEM",
    "OPEN_TASK_STATUSES",
    "PHASE_EXTENSION",
    "REQUIRED_EXTENSION",
    "assessments_of",
    "case_model",
    "case_tag",
    "closure_extension",
    "closure_of",
    "current_phase",
    "is_required",
    "model_concept",
    "phase_history",
    "ref_id",
    "task_code",
    "task_due",
    "with_phase",
    "work_task",
]

_BASE: Final = "https://carecoord.org/fhir"
#: EpisodeOfCare.identifier of a case: value = the id of the referral ServiceRequest.
CASE_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/case"
#: meta.tag on every resource CareCoord writes for a case: code = the case (EpisodeOfCare) id.
CASE_TAG_SYSTEM: Final = f"{_BASE}/CodeSystem/case"
#: CarePlan.identifier of a case's plan: value = the case id.
CASE_CAREPLAN_SYSTEM: Final = f"{_BASE}/sid/case-careplan"
#: Identifier of other generated resources (Goal, Condition, Communication ...): ``{case}:{key}``.
CASE_RESOURCE_SYSTEM: Final = f"{_BASE}/sid/case-resource"
#: CarePlan.category code (system CAREPLAN_CATEGORY_SYSTEM) of a case-management plan.
CASE_MANAGEMENT_CATEGORY: Final = "case-management"
CLOSURE_REASON_SYSTEM: Final = f"{_BASE}/CodeSystem/case-closure-reason"
#: EpisodeOfCare phase history: one complex extension per phase (``phase`` code, ``period``).
PHASE_EXTENSION: Final = f"{_BASE}/StructureDefinition/case-phase"
#: EpisodeOfCare: a completed assessment (valueReference to a QuestionnaireResponse).
ASSESSMENT_EXTENSION: Final = f"{_BASE}/StructureDefinition/case-assessment"
#: EpisodeOfCare closure: ``reason`` (Coding), ``evaluation`` (string), ``waiver`` (string).
CLOSURE_EXTENSION: Final = f"{_BASE}/StructureDefinition/case-closure"
#: Task: must be done (or waived) before the case closes (valueBoolean).
REQUIRED_EXTENSION: Final = f"{_BASE}/StructureDefinition/case-task-required"

OPEN_TASK_STATUSES: Final = (
    "draft",
    "requested",
    "received",
    "accepted",
    "ready",
    "in-progress",
    "on-hold",
)


def ref_id(reference: Mapping[str, Any] | None, res_type: str) -> str | None:
    """The id in a ``{"reference": "Type/id"}`` of ``res_type``, else None."""
    value = (reference or {}).get("reference")
    if isinstance(value, str) and value.startswith(res_type + "/"):
        return value[len(res_type) + 1 :].split("/_history", 1)[0]
    return None


def case_tag(case_id: str) -> dict[str, Any]:
    return {"tag": [{"system": CASE_TAG_SYSTEM, "code": case_id}]}


def _sub(ext: Mapping[str, Any], url: str) -> Any:
    for sub in ext.get("extension") or []:
        if sub.get("url") == url:
            for key, value in sub.items():
                if key.startswith("value"):
                    return value
    return None


def phase_history(episode: Mapping[str, Any]) -> list[tuple[Phase, str, str | None]]:
    """(phase, start, end) entries, oldest first; unknown codes are skipped."""
    out: list[tuple[Phase, str, str | None]] = []
    for ext in episode.get("extension") or []:
        if ext.get("url") != PHASE_EXTENSION:
            continue
        code, period = _sub(ext, "phase"), _sub(ext, "period") or {}
        try:
            phase = Phase(code)
        except ValueError:
            continue
        out.append((phase, str(period.get("start", "")), period.get("end")))
    return out


def current_phase(episode: Mapping[str, Any]) -> Phase | None:
    history = phase_history(episode)
    return history[-1][0] if history else None


def _phase_ext(phase: Phase, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "url": PHASE_EXTENSION,
        "extension": [
            {"url": "phase", "valueCode": phase.value},
            {"url": "period", "valuePeriod": period},
        ],
    }


def with_phase(episode: Mapping[str, Any], target: Phase, now: str) -> dict[str, Any]:
    """The episode moved to ``target`` at ``now``: history entry, status and statusHistory."""
    body = dict(episode)
    extensions: list[dict[str, Any]] = []
    for ext in body.get("extension") or []:
        if ext.get("url") == PHASE_EXTENSION and not (_sub(ext, "period") or {}).get("end"):
            start = str((_sub(ext, "period") or {}).get("start", now))
            ext = _phase_ext(Phase(_sub(ext, "phase")), start, now)
        extensions.append(ext)
    extensions.append(_phase_ext(target, now, now if target == Phase.CLOSURE else None))
    body["extension"] = extensions
    status = EPISODE_STATUS[target]
    if body.get("status") != status:
        history = [dict(h) for h in body.get("statusHistory") or []]
        if history and "end" not in history[-1].get("period", {}):
            history[-1]["period"] = {**history[-1]["period"], "end": now}
        history.append({"status": status, "period": {"start": now}})
        body["statusHistory"] = history
        body["status"] = status
    if target == Phase.CLOSURE:
        body["period"] = {**(body.get("period") or {}), "end": now}
    return body


def assessments_of(episode: Mapping[str, Any]) -> list[str]:
    """Ids of the QuestionnaireResponses recorded as the case's assessments."""
    out = []
    for ext in episode.get("extension") or []:
        if ext.get("url") == ASSESSMENT_EXTENSION:
            qr = ref_id(ext.get("valueReference"), "QuestionnaireResponse")
            if qr:
                out.append(qr)
    return out


def closure_of(episode: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(reason code, final evaluation, waiver reason) of the closure extension."""
    for ext in episode.get("extension") or []:
        if ext.get("url") == CLOSURE_EXTENSION:
            reason = _sub(ext, "reason") or {}
            return reason.get("code"), _sub(ext, "evaluation"), _sub(ext, "waiver")
    return None, None, None


def closure_extension(reason: str, evaluation: str, waiver: str | None) -> dict[str, Any]:
    subs: list[dict[str, Any]] = [
        {
            "url": "reason",
            "valueCoding": {
                "system": CLOSURE_REASON_SYSTEM,
                "code": reason,
                "display": CLOSURE_REASONS.get(reason, reason),
            },
        },
        {"url": "evaluation", "valueString": evaluation},
    ]
    if waiver:
        subs.append({"url": "waiver", "valueString": waiver})
    return {"url": CLOSURE_EXTENSION, "extension": subs}


def case_model(episode: Mapping[str, Any]) -> CaseModel | None:
    for concept in episode.get("type") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == CASE_MODEL_SYSTEM:
                try:
                    return CaseModel(coding.get("code"))
                except ValueError:
                    return None
    return None


def model_concept(config: CaseConfig, model: CaseModel) -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": CASE_MODEL_SYSTEM,
                "code": model.value,
                "display": config.models[model].display,
            }
        ]
    }


def is_required(task: Mapping[str, Any]) -> bool:
    return any(
        e.get("url") == REQUIRED_EXTENSION and e.get("valueBoolean") is True
        for e in task.get("extension") or []
    )


def task_due(task: Mapping[str, Any]) -> date | None:
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    try:
        return date.fromisoformat(str(end)[:10]) if end else None
    except ValueError:
        return None


def work_task(
    *,
    case_id: str,
    key: str,
    patient: str,
    manager: str | None,
    code: dict[str, Any],
    description: str,
    due: date,
    authored: str,
    role: CareRole,
    required: bool,
    focus: str | None = None,
) -> dict[str, Any]:
    """A Task of the case (monitoring, plan intervention, follow-up) owned by the case manager."""
    body: dict[str, Any] = {
        "resourceType": "Task",
        "meta": case_tag(case_id),
        "identifier": [task_identifier(case_id, key)],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": code,
        "description": description,
        "for": {"reference": patient},
        "focus": {"reference": focus or f"EpisodeOfCare/{case_id}"},
        "authoredOn": authored,
        "performerType": [
            {"coding": [{"system": CARE_ROLE_SYSTEM, "code": role, "display": role_display(role)}]}
        ],
        "restriction": {"period": {"end": due.isoformat()}},
        "extension": [{"url": REQUIRED_EXTENSION, "valueBoolean": required}],
    }
    if manager:
        body["owner"] = {"reference": manager}
        body["requester"] = {"reference": manager}
    return body


def task_code(code: TaskCode) -> dict[str, Any]:
    return {"coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": task_display(code)}]}
