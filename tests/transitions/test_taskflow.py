"""The Task state machine: every move of every status, for every actor."""

from __future__ import annotations

from typing import Any

import pytest

from carecoord.transitions.taskflow import (
    Actor,
    TaskRuleError,
    allowed_targets,
    check_create,
    check_move,
)

STATUSES = (
    "draft",
    "requested",
    "received",
    "accepted",
    "ready",
    "in-progress",
    "on-hold",
    "completed",
    "failed",
    "cancelled",
    "rejected",
    "entered-in-error",
)
OPEN = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
OWN, REQ, CM = "owner", "requester", "case-manager"

# The table as the product promises it, written out by hand: (from, to) -> who may.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("draft", "requested"): {REQ, CM},
    ("draft", "ready"): {REQ, CM},
    ("requested", "received"): {OWN, CM},
    ("requested", "accepted"): {OWN, CM},
    ("requested", "rejected"): {OWN},
    ("received", "accepted"): {OWN, CM},
    ("received", "rejected"): {OWN},
    ("accepted", "in-progress"): {OWN, CM},
    ("accepted", "completed"): {OWN, CM},
    ("accepted", "failed"): {OWN, CM},
    ("ready", "in-progress"): {OWN, CM},
    ("ready", "completed"): {OWN, CM},
    ("ready", "failed"): {OWN, CM},
    ("in-progress", "completed"): {OWN, CM},
    ("in-progress", "failed"): {OWN, CM},
    **{
        (s, "on-hold"): {OWN, REQ, CM}
        for s in ("requested", "received", "accepted", "ready", "in-progress")
    },
    **{
        ("on-hold", s): {OWN, REQ, CM}
        for s in ("requested", "received", "accepted", "ready", "in-progress")
    },
    **{(s, "cancelled"): {REQ, CM} for s in OPEN},
    **{(s, "entered-in-error"): {REQ, CM} for s in OPEN},
    **{(s, "entered-in-error"): {CM} for s in ("completed", "failed", "cancelled", "rejected")},
}


def task(status: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "owner": {"reference": "Practitioner/nurse"},
    }
    if status in ("rejected", "cancelled", "on-hold", "failed"):
        body["statusReason"] = {"text": "patient asked to call back next week"}
    return {**body, **extra}


@pytest.mark.parametrize("before", STATUSES)
@pytest.mark.parametrize("after", STATUSES)
@pytest.mark.parametrize("actor", [Actor.OWNER, Actor.REQUESTER, Actor.CASE_MANAGER])
def test_every_move_for_every_actor(before: str, after: str, actor: Actor) -> None:
    if before == after:
        return  # same-status edits are tested below
    allowed = actor.value in EXPECTED.get((before, after), set())
    if allowed:
        check_move(task(before), task(after), frozenset({actor}))
    else:
        with pytest.raises(TaskRuleError) as refused:
            check_move(task(before), task(after), frozenset({actor}))
        assert before in str(refused.value) and after in str(refused.value)


@pytest.mark.parametrize("before", STATUSES)
@pytest.mark.parametrize("after", STATUSES)
def test_the_system_makes_exactly_the_moves_of_the_table(before: str, after: str) -> None:
    if before == after:
        return
    if (before, after) in EXPECTED:
        check_move(task(before), task(after), frozenset({Actor.SYSTEM}))
    else:
        with pytest.raises(TaskRuleError, match="cannot move"):
            check_move(task(before), task(after), frozenset({Actor.SYSTEM}))


def test_nobody_at_all_may_move_anything() -> None:
    with pytest.raises(TaskRuleError, match="Only the"):
        check_move(task("ready"), task("completed"), frozenset())


@pytest.mark.parametrize("status", ["rejected", "cancelled", "on-hold", "failed"])
def test_a_reason_is_required(status: str) -> None:
    before = "requested" if status == "rejected" else "in-progress"
    bare = {k: v for k, v in task(status).items() if k != "statusReason"}
    with pytest.raises(TaskRuleError, match=f"cannot become {status} without a statusReason"):
        check_move(task(before), bare, frozenset({Actor.SYSTEM}))
    blank = {**bare, "statusReason": {"text": "  "}}
    with pytest.raises(TaskRuleError, match="statusReason"):
        check_move(task(before), blank, frozenset({Actor.SYSTEM}))
    coded = {**bare, "statusReason": {"coding": [{"code": "no-answer"}]}}
    check_move(task(before), coded, frozenset({Actor.SYSTEM}))


def test_creation_starts_in_an_initial_status() -> None:
    for status in ("draft", "requested", "ready"):
        check_create(task(status), frozenset({Actor.REQUESTER}))
    with pytest.raises(TaskRuleError, match="cannot be created as completed"):
        check_create(task("completed"), frozenset({Actor.REQUESTER}))
    check_create(task("completed"), frozenset({Actor.SYSTEM}))  # records history from an EHR


def test_reassignment_is_for_requester_and_case_manager() -> None:
    other = task("ready", owner={"reference": "Practitioner/other"})
    for actor in (Actor.REQUESTER, Actor.CASE_MANAGER, Actor.SYSTEM):
        check_move(task("ready"), other, frozenset({actor}))
    with pytest.raises(TaskRuleError, match="reassign"):
        check_move(task("ready"), other, frozenset({Actor.OWNER}))


def test_a_final_task_keeps_its_work_but_takes_notes() -> None:
    done = task("completed")
    check_move(done, {**done, "note": [{"text": "called again"}]}, frozenset({Actor.OWNER}))
    with pytest.raises(TaskRuleError, match="completed Task cannot be changed"):
        check_move(done, {**done, "priority": "stat"}, frozenset({Actor.OWNER}))


def test_allowed_targets_are_the_buttons_of_a_screen() -> None:
    assert allowed_targets("ready", frozenset({Actor.OWNER})) == [
        "completed",
        "failed",
        "in-progress",
        "on-hold",
    ]
    assert allowed_targets("completed", frozenset({Actor.OWNER})) == []
    assert "cancelled" in allowed_targets("ready", frozenset({Actor.SYSTEM}))
