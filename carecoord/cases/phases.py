"""The case lifecycle as a pure state machine: phases, allowed moves and their guards."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "ALLOWED_MOVES",
    "CLOSURE_REASONS",
    "EPISODE_STATUS",
    "MoveFacts",
    "MoveRefused",
    "Phase",
    "check_move",
]


class Phase(StrEnum):
    """CMSA process phases of a case."""

    INTAKE = "intake"
    ASSESSMENT = "assessment"
    PLANNING = "planning"
    IMPLEMENTATION = "implementation"
    MONITORING = "monitoring"
    CLOSURE = "closure"


#: EpisodeOfCare.status while a case is in each phase.
EPISODE_STATUS: Final[dict[Phase, str]] = {
    Phase.INTAKE: "planned",
    Phase.ASSESSMENT: "active",
    Phase.PLANNING: "active",
    Phase.IMPLEMENTATION: "active",
    Phase.MONITORING: "active",
    Phase.CLOSURE: "finished",
}

#: Closure reasons (code -> display), system ``.../CodeSystem/case-closure-reason``.
CLOSURE_REASONS: Final[dict[str, str]] = {
    "goals-met": "Goals met",
    "client-declined": "Client declined further services",
    "moved": "Client moved out of the service area",
    "died": "Client died",
    "transferred": "Transferred to another program or provider",
}

#: Moves between phases; closure is reachable from every open phase and ends the case.
ALLOWED_MOVES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.INTAKE: frozenset({Phase.ASSESSMENT, Phase.CLOSURE}),
    Phase.ASSESSMENT: frozenset({Phase.PLANNING, Phase.CLOSURE}),
    Phase.PLANNING: frozenset({Phase.IMPLEMENTATION, Phase.ASSESSMENT, Phase.CLOSURE}),
    Phase.IMPLEMENTATION: frozenset(
        {Phase.MONITORING, Phase.PLANNING, Phase.ASSESSMENT, Phase.CLOSURE}
    ),
    Phase.MONITORING: frozenset(
        {Phase.IMPLEMENTATION, Phase.PLANNING, Phase.ASSESSMENT, Phase.CLOSURE}
    ),
    Phase.CLOSURE: frozenset(),
}


class MoveRefused(ValueError):
    """A phase move that the rules do not allow; ``reasons`` say why (no patient data)."""

    def __init__(self, current: Phase, target: Phase, reasons: list[str]) -> None:
        self.current = current
        self.target = target
        self.reasons = reasons
        super().__init__(f"Refused move {current.value} -> {target.value}: " + "; ".join(reasons))


@dataclass(frozen=True, slots=True)
class MoveFacts:
    """What the guards look at, gathered by the service (or the write hook) from the store."""

    has_care_manager: bool = False
    completed_assessments: int = 0
    plan_goals: int = 0  # active or accepted Goals on the case's CarePlan
    open_required_tasks: int = 0
    closure_reason: str | None = None
    waiver_reason: str | None = None


def check_move(current: Phase, target: Phase, facts: MoveFacts) -> None:
    """Raise :class:`MoveRefused` unless the case may move from ``current`` to ``target``."""
    if target == current:
        raise MoveRefused(current, target, ["the case is already in this phase"])
    if target not in ALLOWED_MOVES[current]:
        if current == Phase.CLOSURE:
            reason = "a closed case cannot be reopened (a new referral opens a new case)"
        elif target == Phase.PLANNING:
            reason = "no planning before an assessment"
        else:
            reason = f"{target.value} cannot follow {current.value}"
        raise MoveRefused(current, target, [reason])
    reasons: list[str] = []
    if target == Phase.ASSESSMENT and not facts.has_care_manager:
        reasons.append("the case has no care manager")
    if target == Phase.PLANNING and facts.completed_assessments < 1:
        reasons.append("no planning before an assessment: no completed assessment on the case")
    if target == Phase.IMPLEMENTATION and facts.plan_goals < 1:
        reasons.append("the care plan has no confirmed goal")
    if target == Phase.CLOSURE:
        if facts.closure_reason not in CLOSURE_REASONS:
            reasons.append(
                "a closure reason is required (" + ", ".join(sorted(CLOSURE_REASONS)) + ")"
            )
        waived = bool(facts.waiver_reason and facts.waiver_reason.strip())
        if facts.open_required_tasks and not waived:
            reasons.append(
                f"{facts.open_required_tasks} required task(s) still open; "
                "complete them or waive them with a reason"
            )
    if reasons:
        raise MoveRefused(current, target, reasons)
