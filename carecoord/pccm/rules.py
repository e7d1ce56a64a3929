"""Hard constraints on a PCP, and the member's rights to change (choice window, annual, cause)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from carecoord.pccm.model import Accepting, Member, Panels, Pcp, Relation
from carecoord.pccm.program import PanelCaps, Program, months_after

__all__ = [
    "ChangeRight",
    "accepts",
    "age_on",
    "change_right",
    "change_window_end",
    "exclusion",
    "language_tag",
    "reenrolment_pcp",
]

_ACCEPTS: dict[Relation, frozenset[Accepting]] = {
    Relation.NEW: frozenset({Accepting.NEW}),
    Relation.EXISTING: frozenset(
        {Accepting.NEW, Accepting.EXISTING_ONLY, Accepting.EXISTING_AND_FAMILY}
    ),
    Relation.FAMILY: frozenset({Accepting.NEW, Accepting.EXISTING_AND_FAMILY}),
}


def accepts(accepting: Accepting, relation: Relation) -> bool:
    """Whether a PCP with this acceptance takes a member so related to them."""
    return accepting in _ACCEPTS[relation]


def age_on(birth: date, today: date) -> int:
    """Age in whole years on ``today``."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def language_tag(code: str) -> str:
    """The primary language subtag, lower case (``es-MX`` -> ``es``)."""
    return code.split("-", 1)[0].strip().lower()


def exclusion(
    pcp: Pcp, member: Member, relation: Relation, panels: Panels, caps: PanelCaps
) -> str | None:
    """Why the hard constraints exclude ``pcp`` for ``member`` (None: they do not)."""
    if not accepts(pcp.accepting, relation):
        return "not accepting new patients"
    if panels.load.get(pcp.id, 0) >= caps.per_pcp:
        return "at capacity"
    if (
        caps.per_practice is not None
        and pcp.practice
        and panels.practice_load.get(pcp.practice, 0) >= caps.per_practice
    ):
        return "practice at capacity"
    if member.age is not None and not pcp.min_age <= member.age <= pcp.max_age:
        return f"does not serve age {member.age}"
    if member.sex not in pcp.sexes:
        return f"does not serve sex {member.sex}"
    return None


def reenrolment_pcp(ended: list[tuple[str, date, str]], today: date, gap_months: int) -> str | None:
    """The PCP of the latest assignment ended by disenrolment at most ``gap_months`` ago.

    ``ended``: (pcp id, end date, end reason) of the member's ended assignments.
    """
    lapsed = [e for e in ended if e[2] == "disenrolled"]
    if not lapsed:
        return None
    pcp, ended_on, _ = max(lapsed, key=lambda e: (e[1], e[0]))
    return pcp if months_after(ended_on, gap_months) >= today else None


def change_window_end(program: Program, notice_date: date) -> date:
    """Last day on which the member may change PCP without cause after this notice."""
    return notice_date + timedelta(days=program.choice_window_days)


@dataclass(frozen=True, slots=True)
class ChangeRight:
    """Whether a member may change PCP now, the basis, and when they next may without cause."""

    allowed: bool
    basis: str
    next_opportunity: date | None = None


def change_right(
    program: Program,
    *,
    today: date,
    notice_date: date,
    assigned_since: date,
    last_change_without_cause: date | None,
    for_cause: bool,
) -> ChangeRight:
    """The member's right to change now.

    For cause: any time. Without cause: within the choice window after the assignment notice, or
    once the annual opportunity has come (12 months since the assignment began and since the
    last change without cause).
    """
    if for_cause:
        return ChangeRight(True, "for cause")
    if today <= change_window_end(program, notice_date):
        return ChangeRight(True, "within the choice window")
    since = max(assigned_since, last_change_without_cause or assigned_since)
    annual = months_after(since, program.annual_opportunity_months)
    if today >= annual:
        return ChangeRight(True, "annual opportunity")
    return ChangeRight(
        False,
        f"the choice window closed on {change_window_end(program, notice_date).isoformat()}; "
        f"the next annual opportunity opens on {annual.isoformat()}; a change for cause is "
        "possible at any time",
        annual,
    )
