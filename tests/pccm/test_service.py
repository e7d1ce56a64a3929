"""PCCM services over the FHIR store: batch, outputs, choice, re-enrolment, PCP leaving."""

from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from carecoord.db import RetryableConflict
from carecoord.fhir.errors import BusinessRule
from carecoord.fhir.store import FhirStore
from carecoord.pccm import service as service_module
from carecoord.pccm.program import PanelCaps
from carecoord.pccm.resources import ASSIGNMENT_RULE_SYSTEM, member_notice, resource_id
from carecoord.pccm.service import PccmService
from carecoord.pccm.tables import pccm_assignments
from carecoord.transitions.codes import CARE_ROLE_SYSTEM, COMMUNICATION_CATEGORY_SYSTEM
from tests.pccm import world
from tests.pccm.helpers import default_program, second_program


class Clock:
    def __init__(self) -> None:
        self.now = world.NOW

    def __call__(self) -> datetime:
        return self.now


def _service(store: FhirStore, clock: Clock | None = None, **changes: Any) -> PccmService:
    programs = {"default": default_program(**changes), "language-first": second_program()}
    return PccmService(store, programs, clock=clock or Clock())


def _all(store: FhirStore, res_type: str, params: list[tuple[str, str]] | None = None) -> list[Any]:
    page = store.search(store.parse(res_type, [*(params or []), ("_count", "1000")]))
    return [orjson.loads(c) for _, _, c in page.matches]


def _read(store: FhirStore, res_type: str, res_id: str) -> Any:
    return orjson.loads(store.read(res_type, res_id).content or b"{}")


def _count(store: FhirStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(pccm_assignments)).scalar() or 0)


@pytest.fixture
def p1(store: FhirStore) -> FhirStore:
    """rules.md §8 P1 in FHIR: the child's history PCP is full, the sibling's PCP is open."""
    items: list[Any] = [
        *world.role("hist", miles=2),
        *world.role("sib", miles=12),
        *world.role("near", miles=1),
    ]
    for pid in ("a1", "a2"):  # fill hist's panel (cap 2) through their own history
        items += [world.patient(pid, line=f"{pid} Oak Ave"), world.coverage(pid)]
        items += [world.visit(pid, "hist", "2026-01-05")]
    items += [
        world.patient("s2", birth="2014-01-01", gender="male"),
        world.coverage("s2", subscriber="RelatedPerson/mom"),
        world.visit("s2", "sib", "2025-11-20"),
        world.patient("zz-child", birth="2016-05-01"),
        world.coverage("zz-child", subscriber="RelatedPerson/mom"),
        *(world.visit("zz-child", "hist", f"2026-0{m}-10") for m in (1, 2, 3)),
        world.visit("zz-child", "hist", "2023-01-10"),  # outside the look-back
    ]
    world.put_all(store, items)
    return store


def test_p1_batch_assigns_the_siblings_pcp_and_writes_every_output(p1: FhirStore) -> None:
    service = _service(p1, caps=PanelCaps(per_pcp=2))
    outcomes = {o.decision.member: o for o in service.assign_all("default")}
    assert {m: o.decision.pcp for m, o in outcomes.items()} == {
        "a1": "hist",
        "a2": "hist",
        "s2": "sib",
        "zz-child": "sib",
    }
    child = outcomes["zz-child"].decision
    assert child.rule == "family-pcp"
    assert [(n.rule, n.reason) for n in child.notes] == [
        ("existing-assignment", "no previous assignment"),
        ("own-history", "history PCP at capacity"),
        ("family-pcp", "a family member's assigned PCP"),
    ]
    patient = _read(p1, "Patient", "zz-child")
    assert patient["generalPractitioner"][0]["reference"] == "PractitionerRole/sib"
    [team] = _all(p1, "CareTeam", [("patient", "Patient/zz-child")])
    [part] = team["participant"]
    assert part["member"]["reference"] == "PractitionerRole/sib"
    assert part["role"][0]["coding"][0] == {
        "system": CARE_ROLE_SYSTEM,
        "code": "pcp",
        "display": "Primary care provider",
    }
    assert part["period"] == {"start": "2026-07-01"}  # first of next month
    [task] = _all(p1, "Task", [("patient", "Patient/zz-child")])
    assert task["code"]["coding"][0]["code"] == "establish-care"
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["owner"]["reference"] == "PractitionerRole/sib"
    assert task["restriction"]["period"]["end"] == "2026-07-31"
    assert task["identifier"][0]["value"] == "pccm:default:zz-child:1:establish-care"
    [notice] = _all(p1, "Communication", [("patient", "Patient/zz-child")])
    assert notice["category"][0]["coding"][0] == {
        "system": COMMUNICATION_CATEGORY_SYSTEM,
        "code": "member-notice",
        "display": "Member notice",
    }
    text = notice["payload"][0]["contentString"]
    assert "Dr Sib" in text and "a family member's assigned PCP" in text
    assert "until 2026-09-08" in text
    # The PCP's Task carries the member's whole trail: the deciding rule and why earlier ones
    # did not decide.
    assert task["reasonCode"]["coding"][0] == {
        "system": ASSIGNMENT_RULE_SYSTEM,
        "code": "family-pcp",
    }
    assert task["reasonCode"]["text"] == (
        "PCCM assignment by family-pcp: a family member's assigned PCP (earlier rules: "
        "existing-assignment: no previous assignment; own-history: history PCP at capacity)"
    )
    # One Provenance for the transaction: every resource it wrote, the rules that decided.
    [prov] = _all(p1, "Provenance", [("patient", "Patient/zz-child")])
    targets = [t["reference"] for t in prov["target"]]
    assert len(targets) == 16  # 4 members x (Patient version, CareTeam, Task, notice)
    assert {
        "Patient/zz-child/_history/2",
        f"CareTeam/{team['id']}",
        f"Task/{task['id']}",
        f"Communication/{notice['id']}",
    } <= set(targets)
    assert prov["policy"] == ["https://carecoord.org/fhir/pccm/program/default"]
    assert {r["coding"][0]["code"]: r["text"] for r in prov["reason"]} == {
        "own-history": "own-history: 3 assignments",
        "family-pcp": "family-pcp: 1 assignment",
    }
    row = service.assignments_of("zz-child", current_only=True)[0]
    assert row["decision"]["rules"][1]["reason"] == "history PCP at capacity"
    assert row["changeUntil"] == "2026-09-08"


def test_rerun_assigns_nobody_twice_and_dry_run_writes_nothing(p1: FhirStore) -> None:
    service = _service(p1, caps=PanelCaps(per_pcp=2))
    dry = service.assign_all("default", dry_run=True)
    assert len(dry) == 4 and not any(o.written for o in dry)
    assert _count(p1) == 0 and _all(p1, "Task") == []
    assert "generalPractitioner" not in _read(p1, "Patient", "a1")
    first = service.assign_all("default")
    assert sum(o.written for o in first) == 4
    assert [o.decision.pcp for o in dry] == [o.decision.pcp for o in first]
    assert service.assign_all("default") == []
    assert _count(p1) == 4 and len(_all(p1, "Task")) == 4 and len(_all(p1, "Provenance")) == 1


def test_member_without_address_or_history_is_assigned_by_need_or_left_with_reasons(
    store: FhirStore,
) -> None:
    world.put_all(
        store,
        [
            *world.role("peds", miles=50, specialty=world.PEDIATRICS),
            world.patient("kid", birth="2020-01-01", miles=None),
            world.coverage("kid"),
            world.patient("adult", miles=None),
            world.coverage("adult"),
        ],
    )
    out = {o.decision.member: o.decision for o in _service(store).assign_all("default")}
    assert (out["kid"].rule, out["kid"].pcp) == ("special-needs", "peds")
    assert out["adult"].pcp is None
    rows = _service(store).assignments_of("adult", current_only=True)
    assert rows[0]["status"] == "unassigned"
    reasons = {n["rule"]: n["reason"] for n in rows[0]["decision"]["rules"]}
    assert reasons["distance"] == "distance step skipped: the member's address has no coordinates"
    assert reasons["own-history"] == "no primary care visits with a program PCP in the look-back"


def test_choice_window_open_then_closed_and_for_cause(store: FhirStore) -> None:
    world.put_all(
        store,
        [
            *world.role("near", miles=1),
            *world.role("other", miles=9),
            *world.role("third", miles=4),
            world.patient("m"),
            world.coverage("m"),
        ],
    )
    clock = Clock()
    service = _service(store, clock)
    assert service.assign_all("default")[0].decision.pcp == "near"
    clock.now = world.NOW + timedelta(days=30)
    changed = service.choose("default", "m", "other")
    assert changed.decision.rule == "member-choice" and changed.written
    clock.now = world.NOW + timedelta(days=140)  # 110 days after the change notice
    with pytest.raises(BusinessRule, match="choice window closed on 2026-10-08"):
        service.choose("default", "m", "third")
    service.choose("default", "m", "third", cause="moved across town")
    history = service.assignments_of("m", current_only=False)
    assert [(h["pcp"], h["status"], h["kind"], h["endReason"]) for h in history] == [
        ("PractitionerRole/third", "active", "change-for-cause", None),
        ("PractitionerRole/other", "ended", "choice", "changed"),
        ("PractitionerRole/near", "ended", "auto", "changed"),
    ]
    assert _read(store, "Patient", "m")["generalPractitioner"][0]["reference"] == (
        "PractitionerRole/third"
    )
    tasks = {t["owner"]["reference"]: t for t in _all(store, "Task")}
    assert tasks["PractitionerRole/near"]["status"] == "cancelled"
    assert tasks["PractitionerRole/near"]["statusReason"]["text"] == (
        "PCCM assignment ended (changed)"
    )
    assert tasks["PractitionerRole/third"]["status"] == "requested"
    [team] = _all(store, "CareTeam")
    assert [(p["member"]["reference"], "end" in p["period"]) for p in team["participant"]] == [
        ("PractitionerRole/near", True),
        ("PractitionerRole/other", True),
        ("PractitionerRole/third", False),
    ]
    with pytest.raises(BusinessRule, match="not enrolled"):
        service.choose("default", "nobody", "near")


def test_reenrolment_after_a_short_gap_returns_to_the_previous_pcp(store: FhirStore) -> None:
    world.put_all(store, [*world.role("mine", miles=20), world.patient("m"), world.coverage("m")])
    clock = Clock()
    service = _service(store, clock)
    service.assign_all("default")
    world.put_all(store, [*world.role("closer", miles=1), world.coverage("m", end="2026-06-30")])
    clock.now = datetime(2026, 7, 5, tzinfo=UTC)
    assert service.assign_all("default") == []  # lost eligibility: assignment ended
    assert service.assignments_of("m", current_only=False)[0]["endReason"] == "disenrolled"
    world.put_all(store, [world.coverage("m", start="2026-08-01")])
    clock.now = datetime(2026, 8, 20, tzinfo=UTC)
    [back] = service.assign_all("default")
    assert (back.decision.rule, back.decision.pcp) == ("existing-assignment", "mine")
    assert "re-enrolled" in back.decision.reason


def test_reenrolment_after_a_long_gap_is_a_new_assignment(store: FhirStore) -> None:
    world.put_all(store, [*world.role("mine", miles=20), world.patient("m"), world.coverage("m")])
    clock = Clock()
    service = _service(store, clock)
    service.assign_all("default")
    world.put_all(store, [*world.role("closer", miles=1), world.coverage("m", end="2026-06-30")])
    clock.now = datetime(2026, 7, 5, tzinfo=UTC)
    service.assign_all("default")
    world.put_all(store, [world.coverage("m", start="2026-11-01")])
    clock.now = datetime(2026, 11, 2, tzinfo=UTC)
    [again] = service.assign_all("default")
    assert (again.decision.rule, again.decision.pcp) == ("distance", "closer")


def test_pcp_leaving_reassigns_the_panel_by_the_same_rules(store: FhirStore) -> None:
    world.put_all(
        store,
        [
            *world.role("leaving", miles=1),
            *world.role("stay", miles=6),
            world.patient("m1"),
            world.coverage("m1"),
            world.visit("m1", "leaving", "2026-02-01"),
            world.patient("m2", miles=None),
            world.coverage("m2"),
            world.visit("m2", "leaving", "2026-02-01"),
        ],
    )
    service = _service(store)
    assert {o.decision.pcp for o in service.assign_all("default")} == {"leaving"}
    out = {o.decision.member: o.decision for o in service.pcp_leaves("default", "leaving")}
    assert (out["m1"].rule, out["m1"].pcp) == ("distance", "stay")
    assert out["m1"].notes[0].reason == "previous PCP no longer in the program"
    assert out["m1"].notes[1].reason == (
        "no primary care visits with a program PCP in the look-back"
    )
    assert out["m2"].pcp is None  # no coordinates, no other criterion fits
    rows = service.assignments_of("m2", current_only=False)
    assert rows[0]["endReason"] == "pcp-left"
    assert service.assignments_of("m2", current_only=True)[0]["status"] == "unassigned"
    [again] = service.assign_all("default")  # still nobody for m2, and nothing written
    assert again.decision.member == "m2" and again.decision.pcp is None and not again.written
    cancelled = [t for t in _all(store, "Task") if t["status"] == "cancelled"]
    assert len(cancelled) == 2


def test_family_links_from_related_person_and_patient_link(store: FhirStore) -> None:
    world.put_all(
        store,
        [
            *world.role("fam", miles=25),
            *world.role("near", miles=1),
            world.patient("a-parent", line="9 Elm"),
            world.coverage("a-parent"),
            world.visit("a-parent", "fam", "2026-03-03"),
            {
                "resourceType": "RelatedPerson",
                "id": "rp-1",
                "patient": {"reference": "Patient/b-kid"},
                "relationship": [{"coding": [{"code": "MTH"}]}],
            },
            world.patient("b-kid", line="3 Pine", links=()),
            world.coverage("b-kid"),
        ],
    )
    parent = world.patient("a-parent", line="9 Elm", links=("RelatedPerson/rp-1",))
    world.put_all(store, [parent])
    out = {o.decision.member: o.decision for o in _service(store).assign_all("default")}
    assert (out["b-kid"].rule, out["b-kid"].pcp) == ("family-pcp", "fam")


def test_second_program_uses_its_own_members_and_order(store: FhirStore) -> None:
    world.put_all(
        store,
        [
            *world.role("hist", miles=3),
            *world.role("es", miles=15, languages=("es",)),
            world.patient("m", language="es"),
            world.coverage("m", plan="PCCM-LANG"),
            world.visit("m", "hist", "2026-04-01"),
            world.patient("d", language="es"),
            world.coverage("d"),
            world.visit("d", "hist", "2026-04-01"),
        ],
    )
    service = _service(store)
    [lang] = service.assign_all("language-first")
    assert (lang.decision.member, lang.decision.rule, lang.decision.pcp) == ("m", "language", "es")
    [default] = service.assign_all("default")
    assert (default.decision.member, default.decision.rule) == ("d", "own-history")
    team = _all(store, "CareTeam", [("patient", "Patient/m")])[0]
    assert team["participant"][0]["period"]["start"] == "2026-06-11"  # next-day rule


# -- the batch: transactions, re-runs, failures, concurrent changes -------------------------------


@pytest.fixture
def five(store: FhirStore) -> FhirStore:
    """Two PCPs and five members m1..m5, all assignable by distance."""
    items: list[Any] = [*world.role("near", miles=1), *world.role("far", miles=9)]
    for i in range(1, 6):
        items += [world.patient(f"m{i}", line=f"{i} Oak Ave"), world.coverage(f"m{i}")]
    world.put_all(store, items)
    return store


def _pcp_of(store: FhirStore, pid: str) -> str | None:
    gps = _read(store, "Patient", pid).get("generalPractitioner", [])
    return str(gps[0]["reference"]) if gps else None


def test_batch_writes_chunk_by_chunk_with_one_provenance_per_transaction(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_CHUNK", 2)
    seen: list[tuple[int, int]] = []
    outcomes = _service(five).assign_all(
        "default", progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert [o.decision.member for o in outcomes] == ["m1", "m2", "m3", "m4", "m5"]
    assert all(o.written for o in outcomes)
    provenances = _all(five, "Provenance")
    assert sorted(len(p["target"]) for p in provenances) == [4, 8, 8]
    targets = [t["reference"] for p in provenances for t in p["target"]]
    for pid in ("m1", "m2", "m3", "m4", "m5"):
        [task] = _all(five, "Task", [("patient", f"Patient/{pid}")])
        [notice] = _all(five, "Communication", [("patient", f"Patient/{pid}")])
        [team] = _all(five, "CareTeam", [("patient", f"Patient/{pid}")])
        version = _read(five, "Patient", pid)["meta"]["versionId"]
        mine = {
            f"Patient/{pid}/_history/{version}",
            f"CareTeam/{team['id']}",
            f"Task/{task['id']}",
            f"Communication/{notice['id']}",
        }
        assert sorted(t for t in targets if t in mine) == sorted(mine)  # each listed once
        assert task["owner"]["reference"] == _pcp_of(five, pid)


def test_a_failure_inside_a_transaction_leaves_nothing_half_written_and_a_rerun_finishes(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_CHUNK", 2)

    def failing_notice(a: Any) -> dict[str, Any]:
        if a.patient_id == "m4":
            raise RuntimeError("notice service down")
        return member_notice(a)

    monkeypatch.setattr(service_module, "member_notice", failing_notice)
    service = _service(five)
    with pytest.raises(RuntimeError, match="notice service down"):
        service.assign_all("default")
    # m1 and m2 were committed; the transaction of m3 and m4 was rolled back whole
    assert _count(five) == 2
    assert _pcp_of(five, "m3") is None and _all(five, "Task", [("patient", "Patient/m3")]) == []
    monkeypatch.setattr(service_module, "member_notice", member_notice)
    rest = service.assign_all("default")
    assert [(o.decision.member, o.written) for o in rest] == [
        ("m3", True),
        ("m4", True),
        ("m5", True),
    ]
    assert _count(five) == 5
    assert len(_all(five, "Task")) == 5 and len(_all(five, "Communication")) == 5
    assert len(_all(five, "CareTeam")) == 5


def test_a_member_assigned_while_the_batch_runs_keeps_that_assignment(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_CHUNK", 1)
    service = _service(five)

    def m3_chooses(done: int, total: int) -> None:
        if done == 1:
            service.choose("default", "m3", "far")

    outcomes = {o.decision.member: o for o in service.assign_all("default", progress=m3_chooses)}
    assert not outcomes["m3"].written and outcomes["m4"].written
    [row] = service.assignments_of("m3", current_only=False)
    assert (row["pcp"], row["kind"], row["status"]) == ("PractitionerRole/far", "choice", "active")
    assert len(_all(five, "Task", [("patient", "Patient/m3")])) == 1
    assert _pcp_of(five, "m3") == "PractitionerRole/far"


def test_a_patient_edited_while_the_batch_runs_keeps_the_edit(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_CHUNK", 1)
    phone = [{"system": "phone", "value": "555-0100"}]

    def edit_m3(done: int, total: int) -> None:
        if done == 1:
            five.update("Patient", "m3", {**_read(five, "Patient", "m3"), "telecom": phone})

    _service(five).assign_all("default", progress=edit_m3)
    m3 = _read(five, "Patient", "m3")
    assert m3["telecom"] == phone
    assert m3["generalPractitioner"][0]["reference"].startswith("PractitionerRole/")
    assert m3["meta"]["versionId"] == "3"


def test_a_rerun_over_unchanged_data_writes_nothing(store: FhirStore) -> None:
    world.put_all(
        store,
        [
            *world.role("near", miles=1),
            world.patient("m1"),
            world.coverage("m1"),
            world.patient("m2", miles=None),  # no coordinates: left unassigned
            world.coverage("m2"),
        ],
    )
    clock = Clock()
    service = _service(store, clock)
    first = service.assign_all("default")
    assert [(o.decision.member, o.written) for o in first] == [("m1", True), ("m2", False)]
    versions = len(store.history(count=1000).entries)
    unassigned = service.assignments_of("m2", current_only=True)
    clock.now = world.NOW + timedelta(days=1)
    again = service.assign_all("default")
    assert [(o.decision.member, o.written) for o in again] == [("m2", False)]
    assert len(store.history(count=1000).entries) == versions
    assert service.assignments_of("m2", current_only=True) == unassigned


def test_only_primary_care_visits_make_a_history(store: FhirStore) -> None:
    inpatient = {
        **world.visit("m", "ward", "2026-03-01"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    }
    world.put_all(
        store,
        [
            *world.role("ward", miles=20),
            *world.role("clinic", miles=25),
            *world.role("near", miles=1),
            world.patient("m"),
            world.coverage("m"),
            inpatient,
            {**inpatient, "id": "enc-ward-2"},
            world.visit("m", "clinic", "2026-02-01"),
        ],
    )
    [out] = _service(store).assign_all("default")
    assert (out.decision.rule, out.decision.pcp) == ("own-history", "clinic")


def test_two_batches_at_once_assign_each_member_once(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_CHUNK", 2)
    results: list[list[Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_service(five).assign_all("default"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(results) == 2
    assert sum(o.written for outcomes in results for o in outcomes) == 5
    assert _count(five) == 5
    assert len(_all(five, "Task")) == 5 and len(_all(five, "Communication")) == 5
    assert len(_all(five, "CareTeam")) == 5


def test_a_deleted_care_team_is_brought_back_when_the_member_changes_pcp(
    five: FhirStore,
) -> None:
    service = _service(five)
    service.assign_all("default")
    [team] = _all(five, "CareTeam", [("patient", "Patient/m1")])
    five.delete("CareTeam", team["id"])
    assert _all(five, "CareTeam", [("patient", "Patient/m1")]) == []
    first = _pcp_of(five, "m1")
    other = "far" if first == "PractitionerRole/near" else "near"
    assert service.choose("default", "m1", other).written
    [again] = _all(five, "CareTeam", [("patient", "Patient/m1")])
    assert again["id"] == team["id"] and again["meta"]["versionId"] == "3"
    assert [p["member"]["reference"] for p in again["participant"]] == [f"PractitionerRole/{other}"]


def test_a_resource_already_holding_a_batch_id_stops_the_batch_before_it_writes(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch creates its Tasks and notices without looking each id up first (the
    assignment rows make them new); an id taken anyway still fails the insert, and the
    transaction of that chunk writes nothing."""
    monkeypatch.setattr(service_module, "_CHUNK", 2)
    program = default_program().name
    squatter = {"resourceType": "Task", "status": "draft", "intent": "order"}
    five.update("Task", resource_id("task", program, "m3", 1), squatter)
    with pytest.raises(RetryableConflict):
        _service(five).assign_all("default")
    assert _count(five) == 2  # m1 and m2; the chunk of m3 and m4 was rolled back whole
    assert _pcp_of(five, "m3") is None and _pcp_of(five, "m4") is None
    assert len(_all(five, "Task")) == 3 and len(_all(five, "Communication")) == 2


def test_a_batch_leaves_the_garbage_collector_as_it_found_it(
    five: FhirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(five)
    assert gc.isenabled()
    seen: list[bool] = []
    service.assign_all("default", progress=lambda done, total: seen.append(gc.isenabled()))
    assert seen == [False] and gc.isenabled()  # paused while the batch ran, then resumed
    gc.disable()
    try:
        service.assign_all("default")
        assert not gc.isenabled()  # not switched on behind the process's back
    finally:
        gc.enable()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("store down")

    monkeypatch.setattr(service, "load", boom)
    with pytest.raises(RuntimeError, match="store down"):
        service.assign_all("default")
    assert gc.isenabled()
