"""Scoring of QuestionnaireResponses into proposed needs (problems and client goals)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from carecoord.cases.config import Coding, NeedRule

__all__ = ["ProposedNeed", "answer_codes", "propose_needs"]


@dataclass(frozen=True, slots=True)
class ProposedNeed:
    """One need shown by the answers: a problem (when the rule has one) and a goal."""

    key: str  # unique within one response: rule key, or rule key + item for per_item rules
    rule: str
    items: tuple[str, ...]  # the linkIds whose answers showed it
    condition: Coding | None
    category: Coding | None
    sdoh: bool
    goal_text: str
    goal_due_days: int
    score: int | None = None


def _walk(items: Iterable[Mapping[str, Any]], out: dict[str, list[str]]) -> None:
    for item in items:
        link = item.get("linkId")
        for answer in item.get("answer") or []:
            coding = answer.get("valueCoding")
            if isinstance(coding, Mapping) and link and coding.get("code"):
                out.setdefault(str(link), []).append(str(coding["code"]))
            _walk(answer.get("item") or [], out)
        _walk(item.get("item") or [], out)


def answer_codes(response: Mapping[str, Any]) -> dict[str, list[str]]:
    """The coded answers of a QuestionnaireResponse by linkId (nested groups flattened)."""
    out: dict[str, list[str]] = {}
    _walk(response.get("item") or [], out)
    return out


def propose_needs(
    rules: Iterable[NeedRule],
    questionnaire: str,
    answers: Mapping[str, list[str]],
    item_texts: Mapping[str, tuple[str, str]] | None = None,
) -> list[ProposedNeed]:
    """The needs the answers to ``questionnaire`` (canonical url) show, in rule order."""
    texts = item_texts or {}
    url = questionnaire.split("|", 1)[0]
    found: list[ProposedNeed] = []
    for rule in rules:
        if rule.questionnaire != url:
            continue
        base = {
            "rule": rule.key,
            "condition": rule.condition,
            "category": rule.category,
            "sdoh": rule.sdoh,
            "goal_due_days": rule.goal.due_days,
        }
        if rule.kind == "sum_at_least":
            answered = [link for link in rule.items if answers.get(link)]
            score = sum(rule.scores.get(code, 0) for link in answered for code in answers[link])
            if answered and rule.threshold is not None and score >= rule.threshold:
                found.append(
                    ProposedNeed(
                        key=rule.key,
                        items=tuple(answered),
                        goal_text=rule.goal.text,
                        score=score,
                        **base,  # type: ignore[arg-type]
                    )
                )
            continue
        hits = [
            link
            for link in rule.items
            if any(code in rule.answers for code in answers.get(link, ()))
        ]
        if not hits:
            continue
        if rule.kind == "any_of":
            found.append(
                ProposedNeed(
                    key=rule.key,
                    items=tuple(hits),
                    goal_text=rule.goal.text,
                    **base,  # type: ignore[arg-type]
                )
            )
        else:  # per_item
            for link in hits:
                item_text, group_text = texts.get(link, (link, ""))
                label = group_text or item_text
                found.append(
                    ProposedNeed(
                        key=f"{rule.key}-{link}",
                        items=(link,),
                        goal_text=rule.goal.text.replace("{item}", label),
                        **base,  # type: ignore[arg-type]
                    )
                )
    return found
