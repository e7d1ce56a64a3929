"""RiskAssessment resources of a discharge's LACE and HOSPITAL scores, and reading them back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from carecoord.transitions.risk.scores import ScoreResult

__all__ = [
    "RISK_BAND_SYSTEM",
    "RISK_COMPONENT_EXTENSION",
    "RISK_IDENTIFIER_SYSTEM",
    "RISK_METHOD_SYSTEM",
    "RISK_MISSING_EXTENSION",
    "RISK_SCORE_EXTENSION",
    "risk_assessment",
    "risk_identifier",
    "score_json",
]

_BASE: Final = "https://carecoord.org/fhir"
#: RiskAssessment.identifier: value ``{encounter id}:{method}``.
RISK_IDENTIFIER_SYSTEM: Final = f"{_BASE}/sid/readmission-risk"
#: RiskAssessment.method: LACE | HOSPITAL.
RISK_METHOD_SYSTEM: Final = f"{_BASE}/CodeSystem/readmission-risk-method"
#: prediction.qualitativeRisk: low | moderate | intermediate | high (the score's own band).
RISK_BAND_SYSTEM: Final = f"{_BASE}/CodeSystem/readmission-risk-band"
RISK_SCORE_EXTENSION: Final = f"{_BASE}/StructureDefinition/risk-score"
RISK_COMPONENT_EXTENSION: Final = f"{_BASE}/StructureDefinition/risk-component"
RISK_MISSING_EXTENSION: Final = f"{_BASE}/StructureDefinition/risk-missing"
_HL7_PROBABILITY: Final = "http://terminology.hl7.org/CodeSystem/risk-probability"
_METHOD_DISPLAY: Final = {"LACE": "LACE index", "HOSPITAL": "HOSPITAL score"}


def risk_identifier(encounter_id: str, method: str) -> dict[str, str]:
    return {"system": RISK_IDENTIFIER_SYSTEM, "value": f"{encounter_id}:{method}"}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    return {} if value is None else {"valueString": str(value)}


def risk_assessment(
    result: ScoreResult,
    *,
    patient_id: str,
    encounter_id: str,
    occurrence: str,
    basis: Sequence[str] = (),
) -> dict[str, Any]:
    """The RiskAssessment of one score (deterministic: a replay writes the same body)."""
    band = result.band
    hl7 = "moderate" if band == "intermediate" else band
    extension: list[dict[str, Any]] = [{"url": RISK_SCORE_EXTENSION, "valueInteger": result.score}]
    for component in result.components:
        parts: list[dict[str, Any]] = [
            {"url": "code", "valueCode": component.code},
            {"url": "label", "valueString": component.label},
            {"url": "points", "valueInteger": component.points},
        ]
        if component.value is not None:
            parts.append({"url": "value", **_value(component.value)})
        extension.append({"url": RISK_COMPONENT_EXTENSION, "extension": parts})
    extension.extend({"url": RISK_MISSING_EXTENSION, "valueString": m} for m in result.missing)
    summary = ", ".join(f"{c.code} {c.points}" for c in result.components)
    body: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "extension": extension,
        "identifier": [risk_identifier(encounter_id, result.method)],
        "status": "final",
        "method": {
            "coding": [
                {
                    "system": RISK_METHOD_SYSTEM,
                    "code": result.method,
                    "display": _METHOD_DISPLAY.get(result.method, result.method),
                }
            ]
        },
        "code": {"text": "30-day readmission risk at discharge"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "occurrenceDateTime": occurrence,
        "prediction": [
            {
                "outcome": {"text": "Unplanned readmission within 30 days"},
                "qualitativeRisk": {
                    "coding": [
                        {"system": RISK_BAND_SYSTEM, "code": band},
                        {"system": _HL7_PROBABILITY, "code": hl7},
                    ]
                },
            }
        ],
        "note": [
            {
                "text": f"{result.method} {result.score} ({band}): {summary}"
                + (f"; missing: {'; '.join(result.missing)}" if result.missing else "")
            }
        ],
    }
    if basis:
        body["basis"] = [{"reference": ref} for ref in sorted(set(basis))]
    return body


def _extension_value(ext: Mapping[str, Any]) -> Any:
    for key in ("valueInteger", "valueDecimal", "valueBoolean", "valueString", "valueCode"):
        if key in ext:
            return ext[key]
    return None


def score_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """``{"score", "band", "components", "missing"}`` of a stored RiskAssessment."""
    score: Any = None
    components: dict[str, Any] = {}
    missing: list[str] = []
    for ext in body.get("extension") or ():
        url = ext.get("url")
        if url == RISK_SCORE_EXTENSION:
            score = ext.get("valueInteger")
        elif url == RISK_MISSING_EXTENSION:
            missing.append(str(ext.get("valueString")))
        elif url == RISK_COMPONENT_EXTENSION:
            parts = {p.get("url"): _extension_value(p) for p in ext.get("extension") or ()}
            components[str(parts.get("code"))] = {
                "label": parts.get("label"),
                "value": parts.get("value"),
                "points": parts.get("points"),
            }
    band = None
    for prediction in body.get("prediction") or ():
        for coding in (prediction.get("qualitativeRisk") or {}).get("coding") or ():
            if coding.get("system") == RISK_BAND_SYSTEM:
                band = coding.get("code")
    return {"score": score, "band": band, "components": components, "missing": missing}
