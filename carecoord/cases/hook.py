"""Store write hook: a plain FHIR write of a case's EpisodeOfCare obeys the phase rules too."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, select

from carecoord.cases.phases import MoveRefused, Phase, check_move
from carecoord.cases.resources import current_phase, phase_history
from carecoord.cases.service import gather_facts
from carecoord.fhir.errors import BusinessRule
from carecoord.fhir.store import StoredResource, Writer
from carecoord.fhir.tables import resource_versions

__all__ = ["case_phase_guard"]


def _previous(w: Writer, stored: StoredResource) -> dict[str, Any] | None:
    if stored.version_id <= 1:
        return None
    w.flush()
    v = resource_versions
    content = w.conn.execute(
        select(v.c.content).where(
            and_(
                v.c.res_type == stored.res_type,
                v.c.res_id == stored.res_id,
                v.c.version_id == stored.version_id - 1,
            )
        )
    ).scalar()
    if not content:
        return None
    body: dict[str, Any] = orjson.loads(content)
    return body


def case_phase_guard(
    w: Writer, res_type: str, stored: StoredResource, previous_status: str | None
) -> None:
    """Refuse (422) an EpisodeOfCare write that moves a case's phase against the rules, starts a
    case elsewhere than intake, or rewrites its phase history."""
    if res_type != "EpisodeOfCare" or stored.content is None:
        return
    episode: dict[str, Any] = orjson.loads(stored.content)
    history = phase_history(episode)
    previous = _previous(w, stored)
    before = phase_history(previous) if previous is not None else []
    if not history:
        if before:
            raise BusinessRule("The phase history of a case cannot be removed")
        return  # not a case
    if not before:
        if [p for p, _, _ in history] != [Phase.INTAKE]:
            raise BusinessRule("A case starts in intake")
        return
    if [p for p, _, _ in history[: len(before)]] != [p for p, _, _ in before]:
        raise BusinessRule("The phase history of a case cannot be rewritten")
    if len(history) == len(before):
        return
    if len(history) != len(before) + 1:
        raise BusinessRule("A case moves one phase at a time")
    current, target = current_phase(previous or {}), current_phase(episode)
    assert current is not None and target is not None
    try:
        check_move(current, target, gather_facts(w, episode))
    except MoveRefused as exc:
        raise BusinessRule(str(exc)) from exc
