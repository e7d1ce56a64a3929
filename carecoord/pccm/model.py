"""Plain values of PCP assignment: PCPs, members, panels and the recorded decision."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from carecoord.pccm.geo import Point

__all__ = [
    "Accepting",
    "Candidate",
    "Decision",
    "Member",
    "Panels",
    "Pcp",
    "Relation",
    "RuleNote",
]


class Accepting(StrEnum):
    """Whom a PCP takes on (Da Vinci Plan-Net ``newpatients`` acceptingPatients codes)."""

    NEW = "newpt"
    NONE = "nopt"
    EXISTING_ONLY = "existptonly"
    EXISTING_AND_FAMILY = "existptfam"


class Relation(StrEnum):
    """How a member is related to a candidate PCP (decides which acceptance suffices)."""

    NEW = "new"
    EXISTING = "existing"
    FAMILY = "family"


@dataclass(frozen=True, slots=True)
class Pcp:
    """A primary-care PractitionerRole in the program's directory."""

    id: str
    pcp_type: str
    min_age: int
    max_age: int
    sexes: frozenset[str]
    accepting: Accepting
    practice: str | None = None
    practitioner: str | None = None
    location: Point | None = None
    languages: frozenset[str] = frozenset()
    name: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """An enrolled member, with what the criteria need to know about them."""

    id: str
    age: int | None
    sex: str
    location: Point | None = None
    languages: tuple[str, ...] = ()
    #: PCP of a still-active or recently ended (re-enrolment gap) assignment, with which.
    previous_pcp: str | None = None
    previous_kind: str = "active"
    #: PCP who was the main source of primary care in the look-back (visit history).
    history_pcp: str | None = None
    family: tuple[str, ...] = ()
    #: Main-source PCPs of family members' histories.
    family_history_pcps: tuple[str, ...] = ()


@dataclass
class Panels:
    """Current and pending assignments: load per PCP and practice, PCP per member."""

    load: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    practice_load: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    assigned: dict[str, str] = field(default_factory=dict)
    practice_of: dict[str, str | None] = field(default_factory=dict)

    def seed(self, member: str, pcp_id: str, practice: str | None) -> None:
        """Count an existing assignment (also of PCPs no longer in the directory)."""
        self.remove(member)
        self.assigned[member] = pcp_id
        self.practice_of[pcp_id] = practice
        self.load[pcp_id] += 1
        if practice:
            self.practice_load[practice] += 1

    def add(self, member: str, pcp: Pcp) -> None:
        self.seed(member, pcp.id, pcp.practice)

    def remove(self, member: str) -> None:
        pcp_id = self.assigned.pop(member, None)
        if pcp_id is None:
            return
        self.load[pcp_id] -= 1
        practice = self.practice_of.get(pcp_id)
        if practice:
            self.practice_load[practice] -= 1


@dataclass(frozen=True, slots=True)
class RuleNote:
    """What one criterion concluded for a member."""

    rule: str
    decided: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "decided": self.decided, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A PCP a criterion considered, and why it was excluded (None: eligible)."""

    pcp: str
    rule: str
    excluded: str | None
    load: int
    distance_miles: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "pcp": f"PractitionerRole/{self.pcp}",
            "rule": self.rule,
            "excluded": self.excluded,
            "load": self.load,
            "distanceMiles": None if self.distance_miles is None else round(self.distance_miles, 2),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one member: the PCP (or none), the deciding rule and the trail."""

    member: str
    pcp: str | None
    rule: str | None
    reason: str
    notes: tuple[RuleNote, ...]
    candidates: tuple[Candidate, ...]
    candidates_considered: int
    distance_miles: float | None = None
    outside_standard: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "member": f"Patient/{self.member}",
            "pcp": f"PractitionerRole/{self.pcp}" if self.pcp else None,
            "rule": self.rule,
            "reason": self.reason,
            "rules": [n.to_json() for n in self.notes],
            "candidates": [c.to_json() for c in self.candidates],
            "candidatesConsidered": self.candidates_considered,
            "distanceMiles": None if self.distance_miles is None else round(self.distance_miles, 2),
            "outsideStandard": self.outside_standard,
        }
