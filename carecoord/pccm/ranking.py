"""The assignment decision: the program's criteria in order over an indexed PCP directory."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat

from carecoord.pccm.geo import (
    Cell,
    GridIndex,
    GridItem,
    h_to_miles,
    haversine_h,
    haversine_miles,
    miles_to_h,
)
from carecoord.pccm.model import (
    Accepting,
    Candidate,
    Decision,
    Member,
    Panels,
    Pcp,
    Relation,
    RuleNote,
)
from carecoord.pccm.program import Program, RuleKind
from carecoord.pccm.rules import exclusion, language_tag

__all__ = ["MEMBER_CHOICE", "Directory", "decide", "decide_choice"]

#: The rule recorded when the member chose their PCP.
MEMBER_CHOICE = "member-choice"
#: Most candidates kept on a decision's record (the count of all considered is kept too).
_KEEP = 10


class Directory:
    """The program's PCPs, indexed by grid cell, practitioner, type and language."""

    def __init__(self, pcps: Iterable[Pcp], *, cell_deg: float = 0.25) -> None:
        self.pcps: dict[str, Pcp] = {}
        self.grid = GridIndex(cell_deg)
        self.by_practitioner: dict[str, str] = {}
        self.by_type: dict[str, list[str]] = defaultdict(list)
        self.by_language: dict[str, list[str]] = defaultdict(list)
        #: PCPs who take no new patients: the distance step passes them over unchecked.
        self.closed_to_new: set[str] = set()
        for pcp in sorted(pcps, key=lambda p: p.id):
            self.pcps[pcp.id] = pcp
            if pcp.location is not None:
                self.grid.add(pcp.id, pcp.location)
            if pcp.practitioner:
                self.by_practitioner.setdefault(pcp.practitioner, pcp.id)
            self.by_type[pcp.pcp_type].append(pcp.id)
            for lang in pcp.languages:
                self.by_language[lang].append(pcp.id)
            if pcp.accepting is not Accepting.NEW:
                self.closed_to_new.add(pcp.id)
        #: Per grid cell, the PCPs there who take new patients (in cell order) and their ids.
        self.open_cells: dict[Cell, tuple[list[GridItem], tuple[str, ...]]] = {}
        for cell, items in self.grid.cells():
            accepting = [item for item in items if item[0] not in self.closed_to_new]
            if accepting:
                self.open_cells[cell] = (accepting, tuple(item[0] for item in accepting))

    def __contains__(self, pcp_id: object) -> bool:
        return pcp_id in self.pcps

    def __len__(self) -> int:
        return len(self.pcps)

    def practice_of(self) -> dict[str, str | None]:
        return {p.id: p.practice for p in self.pcps.values()}


class _Trial:
    """Candidates of one criterion, checked against the hard constraints."""

    def __init__(
        self, rule: str, member: Member, directory: Directory, panels: Panels, program: Program
    ) -> None:
        self.rule = rule
        self.member = member
        self.directory = directory
        self.panels = panels
        self.program = program
        self.eligible: list[tuple[int, float, str]] = []
        self.excluded: list[tuple[str, str]] = []
        self.distance: dict[str, float | None] = {}
        #: PCPs passed over without a full check (busier than an eligible one already found).
        self.skipped = 0

    def _distance(self, pcp: Pcp) -> float | None:
        if self.member.location is None or pcp.location is None:
            return None
        return haversine_miles(self.member.location, pcp.location)

    def check(self, pcp_id: str, relation: Relation, distance: float | None = None) -> None:
        if pcp_id in self.distance:
            return
        pcp = self.directory.pcps[pcp_id]
        d = distance if distance is not None else self._distance(pcp)
        self.distance[pcp_id] = d
        why = exclusion(pcp, self.member, relation, self.panels, self.program.caps)
        if why is None:
            load = self.panels.load.get(pcp_id, 0)
            self.eligible.append((load, d if d is not None else float("inf"), pcp_id))
        else:
            self.excluded.append((pcp_id, why))

    def best(self) -> str | None:
        return min(self.eligible)[2] if self.eligible else None

    def candidates(self) -> list[Candidate]:
        ranked = sorted(self.eligible)[:_KEEP]
        out = [Candidate(p, self.rule, None, load, self.distance[p]) for load, _, p in ranked]
        for pcp_id, why in self.excluded[: max(0, _KEEP - len(out))]:
            load = self.panels.load.get(pcp_id, 0)
            out.append(Candidate(pcp_id, self.rule, why, load, self.distance[pcp_id]))
        return out

    def considered(self) -> int:
        return len(self.distance) + self.skipped

    def failure(self, label: str) -> str:
        """Why none of the candidates could take the member (``label``: who they were)."""
        if len(self.excluded) == 1:
            return f"{label} {self.excluded[0][1]}"
        reasons = sorted({why for _, why in self.excluded})
        return f"all {len(self.excluded)} {label}s excluded ({'; '.join(reasons)})"


def _nearby(member: Member, directory: Directory, miles: float) -> Iterator[tuple[str, float]]:
    assert member.location is not None
    return directory.grid.within(member.location, miles)


def _pool(
    trial: _Trial, ids: Iterable[str], member: Member, directory: Directory, program: Program
) -> str:
    """Check ``ids`` (within the standard when the member is located); a note on the scope."""
    wanted = set(ids)
    if member.location is not None:
        for pcp_id, d in _nearby(member, directory, program.distance_miles):
            if pcp_id in wanted:
                trial.check(pcp_id, Relation.NEW, d)
        return f"within {program.distance_miles:g} miles"
    for pcp_id in sorted(wanted):
        trial.check(pcp_id, Relation.NEW)
    return "distance not checked: the member's address has no coordinates"


def _existing(member: Member, directory: Directory, t: _Trial) -> tuple[str | None, str]:
    if member.previous_pcp is None:
        return None, "no previous assignment"
    label = "previous PCP" if member.previous_kind == "active" else "PCP before re-enrolment"
    if member.previous_pcp not in directory:
        return None, f"{label} no longer in the program"
    t.check(member.previous_pcp, Relation.EXISTING)
    best = t.best()
    if best is None:
        return None, t.failure(label)
    if member.previous_kind == "active":
        return best, "previous PCP assignment still active"
    return best, "re-enrolled within the re-enrolment gap with the previous PCP"


def _history(member: Member, directory: Directory, t: _Trial) -> tuple[str | None, str]:
    if member.history_pcp is None:
        return None, "no primary care visits with a program PCP in the look-back"
    if member.history_pcp not in directory:
        return None, "history PCP not in the program"
    t.check(member.history_pcp, Relation.EXISTING)
    best = t.best()
    if best is None:
        return None, t.failure("history PCP")
    return best, "main source of primary care in the look-back"


def _family_pcp(
    member: Member, directory: Directory, t: _Trial, panels: Panels
) -> tuple[str | None, str]:
    pcps = sorted(
        {panels.assigned[f] for f in member.family if f in panels.assigned} & directory.pcps.keys()
    )
    if not member.family:
        return None, "no family members known"
    if not pcps:
        return None, "no family member has a PCP in the program"
    for pcp_id in pcps:
        t.check(pcp_id, Relation.FAMILY)
    best = t.best()
    if best is None:
        return None, t.failure("family member's PCP")
    return best, "a family member's assigned PCP"


def _family_history(member: Member, directory: Directory, t: _Trial) -> tuple[str | None, str]:
    pcps = sorted(set(member.family_history_pcps) & directory.pcps.keys())
    if not member.family:
        return None, "no family members known"
    if not pcps:
        return None, "no family member has a history with a program PCP"
    for pcp_id in pcps:
        t.check(pcp_id, Relation.FAMILY)
    best = t.best()
    if best is None:
        return None, t.failure("family member's history PCP")
    return best, "a family member's main source of primary care"


def _distance(
    member: Member, directory: Directory, t: _Trial, program: Program
) -> tuple[str | None, str]:
    if member.location is None:
        return None, "distance step skipped: the member's address has no coordinates"
    miles = program.distance_miles
    center = member.location
    lat_r, lon_r = math.radians(center[0]), math.radians(center[1])
    cos_lat = math.cos(lat_r)
    limit = miles_to_h(miles)
    sin = math.sin
    # Indexed: only the grid cells around the member, nearest cell first. The panel loads of the
    # PCPs there who take new patients are read per cell in one pass (their distinct values are
    # the levels); then the lowest level is searched, cell by cell, stopping once a cell's lower
    # bound passes the best PCP found. Distances are compared as the haversine term h
    # (monotonic in distance).
    near = [cell for cell in directory.grid.nearest_cells(center, miles) if cell[0] <= limit]
    load_of = t.panels.load.get
    open_cells = directory.open_cells
    cells: list[tuple[float, list[GridItem], list[int]]] = []
    levels: set[int] = set()
    in_box = 0
    for bound, cell, bucket in near:
        in_box += len(bucket)
        found = open_cells.get(cell)
        if found is not None:
            loads = list(map(load_of, found[1], repeat(0)))
            levels.update(loads)
            cells.append((bound, found[0], loads))
    best: tuple[float, str] | None = None
    for level in sorted(levels):
        for bound, items, loads in cells:
            if best is not None and bound > best[0]:
                break
            k = -1
            for _ in range(loads.count(level)):
                k = loads.index(level, k + 1)
                item = items[k]
                pcp_id = item[0]
                h = (
                    sin((item[2] - lat_r) / 2) ** 2
                    + cos_lat * item[4] * sin((item[3] - lon_r) / 2) ** 2
                )
                if h > limit or (best is not None and (h, pcp_id) >= best):
                    continue
                t.check(pcp_id, Relation.NEW, h_to_miles(h))
                if t.eligible and t.eligible[-1][2] == pcp_id:
                    best = (h, pcp_id)
        if best is not None:
            break
    if best is None:  # check everyone in range, for the reasons on the record
        for _, _, bucket in near:
            for item in bucket:
                h = haversine_h(lat_r, lon_r, cos_lat, item)
                if h <= limit:
                    t.check(item[0], Relation.NEW, h_to_miles(h))
    t.skipped = in_box - t.considered()
    if best is None:
        if not t.excluded:
            return None, f"no PCP within {miles:g} miles"
        return None, t.failure(f"PCP within {miles:g} mile")
    return best[1], f"nearest available within {miles:g} miles (lowest panel load)"


def _special_needs(
    member: Member, directory: Directory, t: _Trial, program: Program
) -> tuple[str | None, str]:
    groups = [
        g
        for g in program.special_needs
        if member.age is not None
        and g.min_age <= member.age <= g.max_age
        and (g.sexes is None or member.sex in g.sexes)
    ]
    if not groups:
        return None, "no special need or PCP type applies to the member"
    types = sorted({t for g in groups for t in g.prefer_types})
    ids = [pcp_id for typ in types for pcp_id in directory.by_type.get(typ, ())]
    scope = _pool(t, ids, member, directory, program)
    best = t.best()
    names = ", ".join(g.name for g in groups)
    if best is None:
        if not t.considered():
            return None, f"no {'/'.join(types)} PCP for {names} ({scope})"
        return None, t.failure(f"{'/'.join(types)} PCP")
    return best, f"PCP type {'/'.join(types)} for {names} ({scope})"


def _language(
    member: Member, directory: Directory, t: _Trial, program: Program
) -> tuple[str | None, str]:
    if not member.languages:
        return None, "no preferred language recorded"
    lang = language_tag(member.languages[0])
    scope = _pool(t, directory.by_language.get(lang, ()), member, directory, program)
    best = t.best()
    if best is None:
        if not t.considered():
            return None, f"no PCP speaks the member's language {lang} ({scope})"
        return None, t.failure(f"PCP speaking {lang}")
    return best, f"PCP speaks the member's language {lang} ({scope})"


_Criterion = Callable[[Member, Directory, _Trial, Panels, Program], tuple[str | None, str]]

_CRITERIA: dict[RuleKind, _Criterion] = {
    RuleKind.EXISTING_ASSIGNMENT: lambda m, d, t, p, g: _existing(m, d, t),
    RuleKind.OWN_HISTORY: lambda m, d, t, p, g: _history(m, d, t),
    RuleKind.FAMILY_PCP: lambda m, d, t, p, g: _family_pcp(m, d, t, p),
    RuleKind.FAMILY_HISTORY: lambda m, d, t, p, g: _family_history(m, d, t),
    RuleKind.DISTANCE: lambda m, d, t, p, g: _distance(m, d, t, g),
    RuleKind.SPECIAL_NEEDS: lambda m, d, t, p, g: _special_needs(m, d, t, g),
    RuleKind.LANGUAGE: lambda m, d, t, p, g: _language(m, d, t, g),
}


def _finish(
    member: Member,
    directory: Directory,
    program: Program,
    pcp_id: str | None,
    rule: str | None,
    notes: list[RuleNote],
    candidates: list[Candidate],
    considered: int,
) -> Decision:
    distance = None
    if pcp_id is not None and member.location is not None:
        loc = directory.pcps[pcp_id].location
        if loc is not None:
            distance = haversine_miles(member.location, loc)
    if pcp_id is None:
        reason = "no criterion found an available PCP: " + "; ".join(
            f"{n.rule}: {n.reason}" for n in notes
        )
    else:
        reason = notes[-1].reason
        earlier = [f"{n.rule}: {n.reason}" for n in notes[:-1]]
        if earlier:
            reason += " (earlier rules: " + "; ".join(earlier) + ")"
    return Decision(
        member=member.id,
        pcp=pcp_id,
        rule=rule,
        reason=reason,
        notes=tuple(notes),
        candidates=tuple(candidates),
        candidates_considered=considered,
        distance_miles=distance,
        outside_standard=distance is not None and distance > program.distance_miles,
    )


def decide(member: Member, directory: Directory, panels: Panels, program: Program) -> Decision:
    """Apply the program's criteria in order; the first with an eligible PCP decides.

    Ties within a criterion break by lowest panel load, then distance, then PractitionerRole id.
    The decision records every criterion tried and why it did not decide.
    """
    notes: list[RuleNote] = []
    candidates: list[Candidate] = []
    considered = 0
    for kind in program.rules:
        trial = _Trial(kind.value, member, directory, panels, program)
        pcp_id, why = _CRITERIA[kind](member, directory, trial, panels, program)
        candidates.extend(trial.candidates())
        considered += trial.considered()
        notes.append(RuleNote(kind.value, pcp_id is not None, why))
        if pcp_id is not None:
            return _finish(
                member, directory, program, pcp_id, kind.value, notes, candidates, considered
            )
    return _finish(member, directory, program, None, None, notes, candidates, considered)


def decide_choice(
    member: Member, pcp_id: str, directory: Directory, panels: Panels, program: Program
) -> Decision:
    """The member's own choice: it wins when the PCP is in the program and available."""
    trial = _Trial(MEMBER_CHOICE, member, directory, panels, program)
    if pcp_id not in directory:
        note = RuleNote(MEMBER_CHOICE, False, "chosen PCP is not in the program")
        return _finish(member, directory, program, None, None, [note], [], 0)
    relation = Relation.EXISTING if pcp_id == member.history_pcp else Relation.NEW
    trial.check(pcp_id, relation)
    best = trial.best()
    why = "chosen by the member" if best else trial.failure("chosen PCP")
    note = RuleNote(MEMBER_CHOICE, best is not None, why)
    return _finish(
        member,
        directory,
        program,
        best,
        MEMBER_CHOICE if best else None,
        [note],
        trial.candidates(),
        trial.considered(),
    )
