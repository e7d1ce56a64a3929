"""The case state machine: every allowed move and every refused one (pure, no fixtures)."""

from __future__ import annotations

import itertools

import pytest

from carecoord.cases.phases import ALLOWED_MOVES, MoveFacts, MoveRefused, Phase, check_move

READY = MoveFacts(
    has_care_manager=True,
    completed_assessments=1,
    plan_goals=1,
    open_required_tasks=0,
    closure_reason="goals-met",
)
ALL_MOVES = [(a, b) for a in Phase for b in Phase]


@pytest.mark.parametrize(("current", "target"), ALL_MOVES)
def test_every_move_is_allowed_exactly_when_the_table_says(current: Phase, target: Phase) -> None:
    if target in ALLOWED_MOVES[current]:
        check_move(current, target, READY)
    else:
        with pytest.raises(MoveRefused) as err:
            check_move(current, target, READY)
        assert f"{current.value} -> {target.value}" in str(err.value)


def test_the_forward_path_is_allowed() -> None:
    path = list(Phase)
    for a, b in itertools.pairwise(path):
        check_move(a, b, READY)


def test_no_planning_before_an_assessment() -> None:
    with pytest.raises(MoveRefused, match="no planning before an assessment"):
        check_move(Phase.INTAKE, Phase.PLANNING, READY)
    with pytest.raises(MoveRefused, match="no completed assessment"):
        check_move(Phase.ASSESSMENT, Phase.PLANNING, MoveFacts(has_care_manager=True))


def test_assessment_needs_a_care_manager() -> None:
    with pytest.raises(MoveRefused, match="no care manager"):
        check_move(Phase.INTAKE, Phase.ASSESSMENT, MoveFacts())


def test_implementation_needs_a_confirmed_goal() -> None:
    with pytest.raises(MoveRefused, match="no confirmed goal"):
        check_move(Phase.PLANNING, Phase.IMPLEMENTATION, MoveFacts(completed_assessments=1))


def test_closure_needs_a_reason() -> None:
    with pytest.raises(MoveRefused, match="closure reason is required"):
        check_move(Phase.MONITORING, Phase.CLOSURE, MoveFacts())
    with pytest.raises(MoveRefused, match="closure reason is required"):
        check_move(Phase.MONITORING, Phase.CLOSURE, MoveFacts(closure_reason="bored"))


def test_closure_with_open_required_tasks_needs_a_waiver_with_a_reason() -> None:
    facts = MoveFacts(closure_reason="moved", open_required_tasks=2)
    with pytest.raises(MoveRefused, match="2 required task"):
        check_move(Phase.IMPLEMENTATION, Phase.CLOSURE, facts)
    blank = MoveFacts(closure_reason="moved", open_required_tasks=2, waiver_reason="  ")
    with pytest.raises(MoveRefused):
        check_move(Phase.IMPLEMENTATION, Phase.CLOSURE, blank)
    waived = MoveFacts(closure_reason="moved", open_required_tasks=2, waiver_reason="moved away")
    check_move(Phase.IMPLEMENTATION, Phase.CLOSURE, waived)


def test_a_closed_case_stays_closed() -> None:
    for target in Phase:
        with pytest.raises(MoveRefused):
            check_move(Phase.CLOSURE, target, READY)


def test_several_reasons_are_all_reported() -> None:
    with pytest.raises(MoveRefused) as err:
        check_move(Phase.MONITORING, Phase.CLOSURE, MoveFacts(open_required_tasks=1))
    assert len(err.value.reasons) == 2
