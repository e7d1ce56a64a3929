"""The Task state machine: which status moves exist and who may make each one.

One table, :data:`MOVES`, states every allowed ``(from, to)`` move of a FHIR R4 Task and the
actors who may make it. It is checked on every Task write (REST API, bundles, services), so a
screen, an integration engine and a background job all follow the same rules::

    draft ─► requested ─► accepted ─► in-progress ─► completed
      │        │   ╲         │     ╲        │    ╲
      │        │    ╲        │      ╲       │     ► failed
      │        │     ► rejected      ► completed / failed
      └─► ready ─► in-progress / completed / failed
    any open status ◄─► on-hold;  any open status ─► cancelled;  anything ─► entered-in-error

Actors: the Task's ``owner``, its ``requester``, the patient's case manager, and the system
(internal services and system-level clients), which may make any move in the table. ``statusReason``
is required when a Task becomes rejected, cancelled, on-hold or failed. Completed, failed,
cancelled, rejected and entered-in-error are final.

Errors::

    TaskRuleError(ValueError)   a write the state machine forbids (the message names the move)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "FINAL",
    "INITIAL",
    "MOVES",
    "OPEN",
    "REASON_REQUIRED",
    "Actor",
    "TaskRuleError",
    "allowed_targets",
    "check_create",
    "check_move",
    "has_status_reason",
]


class Actor(StrEnum):
    """Who is writing, relative to the Task."""

    OWNER = "owner"
    REQUESTER = "requester"
    CASE_MANAGER = "case-manager"
    SYSTEM = "system"


class TaskRuleError(ValueError):
    """A Task write the state machine forbids; the message names the move and the rule."""


_STEER: Final = frozenset({Actor.REQUESTER, Actor.CASE_MANAGER})  # they steer the work
_DO: Final = frozenset({Actor.OWNER, Actor.CASE_MANAGER})  # the case manager may act for the owner
_OWNER: Final = frozenset({Actor.OWNER})

#: Statuses a Task may be created in (by anyone but the system, which may record any status).
INITIAL: Final = frozenset({"draft", "requested", "ready"})
#: Statuses from which no move is possible (but a correction to entered-in-error).
FINAL: Final = frozenset({"completed", "failed", "cancelled", "rejected", "entered-in-error"})
#: Statuses of work still to do.
OPEN: Final = frozenset(
    {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)
#: Moving into these needs a ``statusReason``.
REASON_REQUIRED: Final = frozenset({"rejected", "cancelled", "on-hold", "failed"})


def _moves() -> dict[tuple[str, str], frozenset[Actor]]:
    moves: dict[tuple[str, str], frozenset[Actor]] = {
        ("draft", "requested"): _STEER,
        ("draft", "ready"): _STEER,
        ("requested", "received"): _DO,
        ("requested", "accepted"): _DO,
        ("requested", "rejected"): _OWNER,
        ("received", "accepted"): _DO,
        ("received", "rejected"): _OWNER,
        ("accepted", "in-progress"): _DO,
        ("accepted", "completed"): _DO,
        ("accepted", "failed"): _DO,
        ("ready", "in-progress"): _DO,
        ("ready", "completed"): _DO,
        ("ready", "failed"): _DO,
        ("in-progress", "completed"): _DO,
        ("in-progress", "failed"): _DO,
    }
    for status in ("requested", "received", "accepted", "ready", "in-progress"):
        moves[(status, "on-hold")] = _DO | _STEER
        moves[("on-hold", status)] = _DO | _STEER
    for status in OPEN:
        moves[(status, "cancelled")] = _STEER
        moves[(status, "entered-in-error")] = _STEER
    for status in FINAL - {"entered-in-error"}:
        moves[(status, "entered-in-error")] = frozenset({Actor.CASE_MANAGER})
    return moves


#: ``(from, to)`` → the actors who may make that move (the system may make them all).
MOVES: Final[Mapping[tuple[str, str], frozenset[Actor]]] = _moves()


def allowed_targets(status: str, actors: frozenset[Actor]) -> list[str]:
    """The statuses ``actors`` may move a Task in ``status`` to (for screens: the buttons)."""
    system = Actor.SYSTEM in actors
    return sorted(
        to for (frm, to), who in MOVES.items() if frm == status and (system or who & actors)
    )


def has_status_reason(task: Mapping[str, Any]) -> bool:
    reason = task.get("statusReason")
    if not isinstance(reason, dict):
        return False
    if isinstance(reason.get("text"), str) and reason["text"].strip():
        return True
    return any(
        isinstance(c, dict) and (c.get("code") or c.get("display"))
        for c in reason.get("coding") or []
    )


def _require_reason(task: Mapping[str, Any], status: str) -> None:
    if status in REASON_REQUIRED and not has_status_reason(task):
        raise TaskRuleError(f"A Task cannot become {status} without a statusReason")


def check_create(task: Mapping[str, Any], actors: frozenset[Actor]) -> None:
    """Refuse a new Task in a status other than draft/requested/ready (but for the system)."""
    status = task.get("status")
    if not isinstance(status, str):
        raise TaskRuleError("A Task needs a status")
    if Actor.SYSTEM not in actors and status not in INITIAL:
        raise TaskRuleError(
            f"A Task cannot be created as {status}: start it as draft, requested or ready"
        )
    _require_reason(task, status)


def check_move(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    actors: frozenset[Actor],
) -> None:
    """Refuse a Task update that the table or the actor's rights forbid."""
    before, after = previous.get("status"), current.get("status")
    if not isinstance(after, str):
        raise TaskRuleError("A Task needs a status")
    system = Actor.SYSTEM in actors
    if before == after:
        if after in FINAL and not system and _work_changed(previous, current):
            raise TaskRuleError(f"A {after} Task cannot be changed")
        if _owner(previous) != _owner(current) and not (system or actors & _STEER):
            raise TaskRuleError(
                "Only the requester or the case manager may reassign a Task to another owner"
            )
        return
    move = (str(before), after)
    who = MOVES.get(move)
    if who is None:
        if before in FINAL:
            raise TaskRuleError(f"Task status cannot move from {before} (final) to {after}")
        raise TaskRuleError(f"Task status cannot move from {before} to {after}")
    if not system and not who & actors:
        names = " or ".join(sorted(a.value for a in who))
        raise TaskRuleError(f"Only the {names} may move a Task from {before} to {after}")
    if _owner(previous) != _owner(current) and not (system or actors & _STEER):
        raise TaskRuleError(
            "Only the requester or the case manager may reassign a Task to another owner"
        )
    _require_reason(current, after)


def _owner(task: Mapping[str, Any]) -> str | None:
    owner = task.get("owner")
    ref = owner.get("reference") if isinstance(owner, dict) else None
    return ref if isinstance(ref, str) else None


_BOOKKEEPING: Final = frozenset(
    {"meta", "text", "note", "output", "businessStatus", "lastModified"}
)


def _work_changed(previous: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether an update of a final Task changes more than notes, outputs and bookkeeping."""
    keys = (set(previous) | set(current)) - _BOOKKEEPING
    return any(previous.get(k) != current.get(k) for k in keys)
