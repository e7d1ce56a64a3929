"""QuestionnaireResponses for the shipped Questionnaires (config/cases/questionnaires)."""

from __future__ import annotations

from typing import Any

SOCIAL = "https://carecoord.org/fhir/Questionnaire/social-needs"
FUNCTIONAL = "https://carecoord.org/fhir/Questionnaire/functional-status"
STRENGTHS = "https://carecoord.org/fhir/Questionnaire/strengths-assessment"
LOINC = "http://loinc.org"
CC = "https://carecoord.org/fhir/CodeSystem/assessment-answer"

NO_NEEDS = {
    "housing-status": "LA31993-1",
    "food-worry": "LA28398-8",
    "food-last": "LA28398-8",
    "transportation-lack": "LA32-8",
    "utilities-shutoff": "LA32-8",
    "safety-hurt": "LA6270-8",
    "safety-insult": "LA6270-8",
    "safety-threaten": "LA6270-8",
    "safety-scream": "LA6270-8",
}
_GROUP = {
    "housing-status": "housing",
    "food-worry": "food",
    "food-last": "food",
    "transportation-lack": "transportation",
    "utilities-shutoff": "utilities",
    "safety-hurt": "safety",
    "safety-insult": "safety",
    "safety-threaten": "safety",
    "safety-scream": "safety",
}


def social_needs(patient: str, **changes: str) -> dict[str, Any]:
    """A completed social-needs screen: no needs, except the answers in ``changes``."""
    answers = {**NO_NEEDS, **{k.replace("_", "-"): v for k, v in changes.items()}}
    groups: dict[str, list[dict[str, Any]]] = {}
    for link, code in answers.items():
        groups.setdefault(_GROUP[link], []).append(
            {"linkId": link, "answer": [{"valueCoding": {"system": LOINC, "code": code}}]}
        )
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": SOCIAL,
        "status": "completed",
        "subject": {"reference": patient},
        "item": [{"linkId": g, "item": items} for g, items in groups.items()],
    }


def coded(questionnaire: str, patient: str, answers: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire,
        "status": "completed",
        "subject": {"reference": patient},
        "item": [
            {"linkId": link, "answer": [{"valueCoding": {"system": CC, "code": code}}]}
            for link, code in answers.items()
        ],
    }
