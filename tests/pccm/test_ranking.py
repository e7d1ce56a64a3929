"""The assignment decision over plain values: criteria in order, hard constraints, ties."""

from __future__ import annotations

import random
from dataclasses import replace

from carecoord.pccm.geo import haversine_miles
from carecoord.pccm.model import Accepting, Panels, Relation
from carecoord.pccm.program import PanelCaps, RuleKind
from carecoord.pccm.ranking import Directory, decide, decide_choice
from carecoord.pccm.rules import exclusion
from tests.pccm.helpers import HOME, default_program, member, pcp, second_program


def _full(panels: Panels, pcp_id: str, n: int) -> None:
    for i in range(n):
        panels.seed(f"other-{pcp_id}-{i}", pcp_id, None)


def test_p1_history_pcp_full_sibling_pcp_open_within_distance() -> None:
    """rules.md §8 P1: no choice; the history PCP's panel is full; a sibling's PCP is open and
    within the distance standard -> the sibling's PCP, with the reason "history PCP at capacity"."""
    program = default_program(caps=PanelCaps(per_pcp=3))
    directory = Directory([pcp("hist", miles=2), pcp("sib", miles=12), pcp("near", miles=1)])
    panels = Panels()
    _full(panels, "hist", 3)
    panels.seed("sister", "sib", None)
    child = member("m1", history_pcp="hist", family=("sister",))
    d = decide(child, directory, panels, program)
    assert d.pcp == "sib"
    assert d.rule == "family-pcp"
    notes = {n.rule: n for n in d.notes}
    assert notes["own-history"].reason == "history PCP at capacity"
    assert notes["existing-assignment"].reason == "no previous assignment"
    assert not notes["own-history"].decided and notes["family-pcp"].decided
    assert "history PCP at capacity" in d.reason
    assert d.distance_miles is not None and d.distance_miles < program.distance_miles
    assert not d.outside_standard
    excluded = {c.pcp: c.excluded for c in d.candidates}
    assert excluded == {"hist": "at capacity", "sib": None}


def test_each_criterion_decides_in_turn() -> None:
    program = default_program()
    directory = Directory(
        [
            pcp("prev", miles=8),
            pcp("hist", miles=9),
            pcp("fam", miles=10),
            pcp("famhist", miles=11),
            pcp("close", miles=3),
            pcp("peds", miles=None, pcp_type="pediatrics", max_age=20),
            pcp("es", miles=None, languages=("es",)),
        ]
    )
    panels = Panels()
    panels.seed("brother", "fam", None)
    full = member(
        previous_pcp="prev",
        history_pcp="hist",
        family=("brother",),
        family_history_pcps=("famhist",),
    )
    assert decide(full, directory, panels, program).rule == "existing-assignment"
    m = member(history_pcp="hist", family=("brother",), family_history_pcps=("famhist",))
    assert (
        decide(m, directory, panels, program).rule,
        decide(m, directory, panels, program).pcp,
    ) == ("own-history", "hist")
    m = member(family=("brother",), family_history_pcps=("famhist",))
    assert decide(m, directory, panels, program).pcp == "fam"
    m = member(family=("cousin",), family_history_pcps=("famhist",))
    d = decide(m, directory, panels, program)
    assert (d.rule, d.pcp) == ("family-history", "famhist")
    assert d.notes[2].reason == "no family member has a PCP in the program"
    d = decide(member(), directory, panels, program)
    assert (d.rule, d.pcp) == ("distance", "close")
    # no coordinates: distance is skipped and says so; a child gets the paediatrician
    d = decide(member(age=6, location=None), directory, panels, program)
    assert (d.rule, d.pcp) == ("special-needs", "peds")
    assert d.notes[4].reason == "distance step skipped: the member's address has no coordinates"
    d = decide(member(location=None, languages=("es",)), directory, panels, program)
    assert (d.rule, d.pcp) == ("language", "es")
    d = decide(member(location=None), directory, panels, program)
    assert d.pcp is None and d.rule is None
    assert [n.rule for n in d.notes] == [k.value for k in program.rules]
    assert "no preferred language recorded" in d.reason


def test_hard_constraints_apply_at_every_step() -> None:
    program = default_program(caps=PanelCaps(per_pcp=2, per_practice=3))
    panels = Panels()
    cases = {
        "closed": (pcp("closed", accepting=Accepting.NONE), "not accepting new patients"),
        "full": (pcp("full"), "at capacity"),
        "adults": (pcp("adults", min_age=18), "does not serve age 7"),
        "women": (pcp("women", sexes=("female",)), "does not serve sex male"),
        "busy-practice": (pcp("busy-practice", practice="org-1"), "practice at capacity"),
    }
    _full(panels, "full", 2)
    panels.seed("x1", "p-a", "org-1")
    panels.seed("x2", "p-a", "org-1")
    panels.seed("x3", "p-b", "org-1")
    for pid, (role, why) in cases.items():
        directory = Directory([role])
        boy = member(age=7, sex="male", history_pcp=pid)
        d = decide(boy, directory, panels, program)
        assert d.notes[1].reason == f"history PCP {why}", pid
        assert d.pcp is None, pid  # and the distance step excludes it the same way
        assert d.notes[4].reason.endswith(f"({why})") or why in d.notes[4].reason, pid


def test_existing_patients_only_still_takes_history_but_not_new_or_family() -> None:
    program = default_program()
    directory = Directory([pcp("own", accepting=Accepting.EXISTING_ONLY)])
    panels = Panels()
    panels.seed("sib", "own", None)
    assert decide(member(history_pcp="own"), directory, panels, program).pcp == "own"
    d = decide(member(family=("sib",)), directory, panels, program)
    assert d.pcp is None
    assert d.notes[2].reason == "family member's PCP not accepting new patients"
    directory = Directory([pcp("fam", accepting=Accepting.EXISTING_AND_FAMILY)])
    panels.seed("sib", "fam", None)
    assert decide(member(family=("sib",)), directory, panels, program).pcp == "fam"


def test_ties_break_by_load_then_distance_then_id() -> None:
    program = default_program()
    panels = Panels()
    directory = Directory([pcp("b", miles=5), pcp("a", miles=5), pcp("c", miles=2)])
    _full(panels, "c", 1)
    assert decide(member(), directory, panels, program).pcp == "a"  # c busier; a < b by id
    _full(panels, "a", 1)
    _full(panels, "b", 1)
    assert decide(member(), directory, panels, program).pcp == "c"  # equal load: nearest


def test_same_input_in_any_order_gives_the_same_output() -> None:
    program = default_program(caps=PanelCaps(per_pcp=4))
    roles = [pcp(f"p{i}", miles=float(i % 7), practice=f"o{i % 3}") for i in range(12)]
    members = [member(f"m{i:02d}", family=(f"m{(i + 1) % 30:02d}",)) for i in range(30)]

    def run(order_seed: int) -> dict[str, tuple[str | None, str]]:
        rng = random.Random(order_seed)
        shuffled_roles = roles[:]
        rng.shuffle(shuffled_roles)
        directory = Directory(shuffled_roles)
        panels = Panels()
        out = {}
        for m in sorted(rng.sample(members, len(members)), key=lambda m: m.id):
            d = decide(m, directory, panels, program)
            if d.pcp:
                panels.add(m.id, directory.pcps[d.pcp])
            out[m.id] = (d.pcp, d.reason)
        return out

    first = run(1)
    assert all(run(seed) == first for seed in range(2, 6))
    assert sum(1 for p, _ in first.values() if p) == 30


def test_missing_address_and_history() -> None:
    program = default_program()
    directory = Directory([pcp("p1", miles=3)])
    d = decide(member(location=None), directory, Panels(), program)
    reasons = {n.rule: n.reason for n in d.notes}
    assert reasons["own-history"] == "no primary care visits with a program PCP in the look-back"
    assert reasons["distance"] == "distance step skipped: the member's address has no coordinates"
    assert d.pcp is None
    # a PCP without coordinates is never "within the standard"
    d = decide(member(), Directory([pcp("nowhere", miles=None)]), Panels(), program)
    assert d.notes[4].reason == "no PCP within 30 miles"


def test_far_history_pcp_is_flagged_outside_the_standard() -> None:
    d = decide(
        member(history_pcp="far"), Directory([pcp("far", miles=80)]), Panels(), default_program()
    )
    assert d.pcp == "far" and d.outside_standard and d.distance_miles is not None
    assert 79 < d.distance_miles < 81


def test_a_program_with_a_different_order_decides_differently() -> None:
    first, second = default_program(), second_program()
    assert second.rules[:3] == [
        RuleKind.EXISTING_ASSIGNMENT,
        RuleKind.LANGUAGE,
        RuleKind.SPECIAL_NEEDS,
    ]
    directory = Directory([pcp("hist", miles=4), pcp("es", miles=15, languages=("es",))])
    m = member(history_pcp="hist", languages=("es-MX",))
    assert decide(m, directory, Panels(), first).pcp == "hist"
    d = decide(m, directory, Panels(), second)
    assert (d.rule, d.pcp) == ("language", "es")
    assert d.reason.startswith("PCP speaks the member's language es (within 20 miles)")


def test_member_choice_wins_when_accepting() -> None:
    program = default_program()
    directory = Directory(
        [pcp("near", miles=1), pcp("chosen", miles=25), pcp("closed", accepting=Accepting.NONE)]
    )
    d = decide_choice(member(), "chosen", directory, Panels(), program)
    assert (d.pcp, d.rule) == ("chosen", "member-choice")
    d = decide_choice(member(), "closed", directory, Panels(), program)
    assert d.pcp is None and d.reason.endswith("chosen PCP not accepting new patients")
    assert decide_choice(member(), "gone", directory, Panels(), program).pcp is None


def test_indexed_distance_step_equals_a_brute_force_ranking() -> None:
    """The grid search picks exactly what scanning every PCP would: lowest load, then the
    nearest, then the lowest id, among eligible PCPs within the standard."""
    rng = random.Random(5)
    program = default_program(caps=PanelCaps(per_pcp=6))
    roles = [
        pcp(
            f"p{i:03d}",
            miles=rng.uniform(-40, 40),
            accepting=rng.choice([Accepting.NEW] * 5 + [Accepting.NONE]),
            min_age=rng.choice([0, 0, 18]),
        )
        for i in range(150)
    ]
    roles = [replace(r, location=(r.location[0] + rng.uniform(-0.4, 0.4), r.location[1]))
             for r in roles if r.location is not None]  # fmt: skip
    directory = Directory(roles)
    panels = Panels()
    for i in range(400):
        m = member(
            f"m{i:03d}",
            age=rng.choice([5, 40]),
            location=(HOME[0] + rng.uniform(-0.5, 0.5), HOME[1] + rng.uniform(-0.7, 0.7)),
        )
        expected = min(
            (
                (panels.load.get(r.id, 0), haversine_miles(m.location, r.location), r.id)
                for r in roles
                if r.location is not None
                and haversine_miles(m.location, r.location) <= program.distance_miles
                and exclusion(r, m, Relation.NEW, panels, program.caps) is None
            ),
            default=None,
        )
        d = decide(m, directory, panels, program)
        assert d.pcp == (expected[2] if expected else None), m.id
        if d.pcp:
            panels.add(m.id, directory.pcps[d.pcp])
    assert sum(panels.load.values()) > 300
