"""Checklists from discharges: variants, conditions, risk plans, relative due rules, overlays."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from carecoord.transitions.checklist import (
    Checklist,
    DischargeFacts,
    EscalationStep,
    build_checklist,
    escalation_due,
    starts_transition,
)
from carecoord.transitions.codes import CareRole, TaskCode
from carecoord.transitions.tcm import Complexity, Destination, destination_of
from carecoord.transitions.templates import OrganizationSetup, load_templates

CONFIG = Path(__file__).resolve().parents[2] / "config"
TEMPLATES = load_templates(CONFIG)
DEFAULT = TEMPLATES.default
# Wed 2025-07-02 11:00 in New York (rules.md §8, first example)
DISCHARGED = datetime(2025, 7, 2, 15, 0, tzinfo=UTC)
TCM_ITEMS = {"tcm-interactive-contact", "tcm-face-to-face-visit"}


def facts(**changes: Any) -> DischargeFacts:
    base = DischargeFacts(
        encounter_id="enc-1",
        patient_id="pat-1",
        encounter_class="IMP",
        discharged=DISCHARGED,
        admitted=DISCHARGED - timedelta(days=4),
        destination=Destination.HOME,
    )
    return dataclasses.replace(base, **changes)


def build(setup: OrganizationSetup = DEFAULT, **changes: Any) -> Checklist:
    checklist = build_checklist(facts(**changes), setup)
    assert checklist is not None
    return checklist


def keys(checklist: Checklist) -> list[str]:
    return [item.key for item in checklist.items]


def skipped(checklist: Checklist) -> dict[str, str]:
    return dict(checklist.skipped)


def overlay_setup(tmp_path: Path, body: dict[str, Any]) -> OrganizationSetup:
    shutil.copytree(CONFIG / "transitions", tmp_path / "transitions")
    path = tmp_path / "transitions" / "organizations" / "acme.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return load_templates(tmp_path).for_organization("acme")


# -- which discharges start a transition, and which variant ----------------------------------------


@pytest.mark.parametrize(
    ("cls", "starts"),
    [("IMP", True), ("ACUTE", True), ("NONAC", True), ("OBSENC", True), ("EMER", True),
     ("imp", True), ("AMB", False), ("HH", False), ("VR", False), ("SS", False)],
)  # fmt: skip
def test_starts_transition(cls: str, starts: bool) -> None:
    assert starts_transition(cls) is starts


@pytest.mark.parametrize(
    ("cls", "destination"),
    [
        ("AMB", Destination.HOME),  # ambulatory visit
        ("IMP", Destination.EXPIRED),
        ("EMER", Destination.EXPIRED),
        ("IMP", Destination.ACUTE_TRANSFER),  # the next hospital discharges later
        ("EMER", Destination.ACUTE_TRANSFER),  # admitted from the ED
        ("IMP", Destination.REHAB),
        ("IMP", Destination.PSYCH),
        ("IMP", Destination.HOSPICE),
    ],
)
def test_no_checklist(cls: str, destination: Destination) -> None:
    assert build_checklist(facts(encounter_class=cls, destination=destination), DEFAULT) is None


def test_home_discharge_worked_example() -> None:
    checklist = build(risk_band="high")
    assert checklist.variant == "home"
    assert checklist.tcm is not None
    assert checklist.tcm.complexity is Complexity.HIGH
    assert checklist.tcm.eligibility.eligible
    contact = checklist.item("tcm-interactive-contact")
    assert contact.due == date(2025, 7, 7)  # Jul 4 holiday
    assert contact.code is TaskCode.TCM_INTERACTIVE_CONTACT
    assert contact.owner is CareRole.NURSE_CASE_MANAGER
    assert contact.priority == "urgent"
    assert contact.required
    visit = checklist.item("tcm-face-to-face-visit")
    assert (visit.due, visit.owner) == (date(2025, 7, 9), CareRole.PCP)
    assert checklist.item("discharge-summary-to-pcp").due == date(2025, 7, 3)
    assert checklist.item("medication-access").due == datetime(2025, 7, 3, 15, tzinfo=UTC)
    assert {"teach-back-education", "red-flags-education", "follow-up-appointment"} <= set(
        keys(checklist)
    )
    assert skipped(checklist) == {
        "home-services-equipment": "condition not met: equipment_ordered",
        "pending-results-follow-up": "condition not met: pending_results",
        "interpreter": "condition not met: language_differs",
    }


@pytest.mark.parametrize(
    ("discharge_utc", "contact", "visit_7", "visit_14", "period_end"),
    [
        # Wed 2025-07-02 evening in New York (already Jul 3 in UTC)
        (datetime(2025, 7, 3, 1, 30, tzinfo=UTC), "2025-07-07", "2025-07-09", "2025-07-16",
         "2025-07-31"),
        (datetime(2025, 11, 7, 18, tzinfo=UTC), "2025-11-12", "2025-11-14", "2025-11-21",
         "2025-12-06"),
        (datetime(2026, 7, 2, 18, tzinfo=UTC), "2026-07-07", "2026-07-09", "2026-07-16",
         "2026-07-31"),
        # Thu 2027-12-30 21:00 in New York (Dec 31 in UTC)
        (datetime(2027, 12, 31, 2, tzinfo=UTC), "2028-01-04", "2028-01-06", "2028-01-13",
         "2028-01-28"),
    ],
)  # fmt: skip
def test_checklist_tcm_dates_follow_rules_section_8(
    discharge_utc: datetime, contact: str, visit_7: str, visit_14: str, period_end: str
) -> None:
    high = build(discharged=discharge_utc, risk_band="high")
    moderate = build(discharged=discharge_utc, risk_band="moderate")
    assert high.item("tcm-interactive-contact").due == date.fromisoformat(contact)
    assert high.item("tcm-face-to-face-visit").due == date.fromisoformat(visit_7)
    assert moderate.item("tcm-face-to-face-visit").due == date.fromisoformat(visit_14)
    assert high.tcm is not None
    assert high.tcm.deadlines.period_end == date.fromisoformat(period_end)


def test_day_rules_use_the_organisation_time_zone(tmp_path: Path) -> None:
    late = datetime(2025, 7, 3, 2, 0, tzinfo=UTC)  # Jul 2 in New York, Jul 3 in UTC
    assert build(discharged=late).item("tcm-interactive-contact").due == date(2025, 7, 7)
    utc_org = overlay_setup(tmp_path, {"timezone": "UTC"})
    in_utc = build(utc_org, discharged=late)
    assert in_utc.item("tcm-interactive-contact").due == date(2025, 7, 8)  # Jul 3 -> (4) 7, 8


@pytest.mark.parametrize(
    ("local_day", "contact"),
    [
        (date(2025, 7, 11), date(2025, 7, 15)),  # Friday -> Tuesday
        (date(2025, 7, 12), date(2025, 7, 15)),  # Saturday -> Tuesday
        (date(2025, 11, 26), date(2025, 12, 1)),  # day before Thanksgiving -> Monday
    ],
)
def test_friday_saturday_and_holiday_discharges(local_day: date, contact: date) -> None:
    discharged = datetime.combine(local_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=17)
    assert build(discharged=discharged).item("tcm-interactive-contact").due == contact


def test_home_with_home_health_by_disposition_or_by_flag() -> None:
    by_destination = build(destination=Destination.HOME_HEALTH)
    by_flag = build(destination=Destination.HOME, home_health=True)
    for checklist in (by_destination, by_flag):
        assert checklist.variant == "home-with-home-health"
        assert checklist.item("home-health-start-of-care").code is TaskCode.HOME_SERVICES_EQUIPMENT
        assert checklist.item("home-health-start-of-care").due == date(2025, 7, 7)
        assert set(keys(checklist)) >= TCM_ITEMS
    assert "home-health-start-of-care" not in keys(build())


def test_snf_discharge_has_no_tcm_items() -> None:
    checklist = build(destination=Destination.SNF)
    assert checklist.variant == "skilled-nursing-facility"
    assert checklist.tcm is None
    assert not checklist.tcm_eligibility.eligible
    assert "skilled nursing facility" in checklist.tcm_eligibility.reason
    assert not TCM_ITEMS & set(keys(checklist))
    assert keys(checklist) == ["discharge-summary-to-facility", "facility-handoff-call"]
    # the hand-off call is due no later than the summary it follows
    assert (
        checklist.item("facility-handoff-call").due
        == checklist.item("discharge-summary-to-facility").due
    )
    assert checklist.item("discharge-summary-to-facility").due == datetime(
        2025, 7, 3, 15, tzinfo=UTC
    )


def test_against_medical_advice() -> None:
    checklist = build(destination=Destination.AMA, risk_band="low")
    assert checklist.variant == "against-medical-advice"
    assert checklist.tcm is None
    assert "against medical advice" in checklist.tcm_eligibility.reason
    outreach = checklist.item("ama-outreach-call")
    assert (outreach.code, outreach.priority) == (TaskCode.FOLLOW_UP_CALL, "asap")
    assert outreach.due == datetime(2025, 7, 3, 15, tzinfo=UTC)
    assert not TCM_ITEMS & set(keys(checklist))
    assert "follow-up-call-72h" in keys(checklist)


def test_ed_treat_and_release() -> None:
    checklist = build(encounter_class="EMER", risk_band="high")
    assert checklist.variant == "ed-treat-and-release"
    assert checklist.tcm is None
    assert "emergency" in checklist.tcm_eligibility.reason
    assert not TCM_ITEMS & set(keys(checklist))
    call = checklist.item("ed-follow-up-call")
    assert call.due == datetime(2025, 7, 5, 15, tzinfo=UTC)
    assert call.not_before == datetime(2025, 7, 3, 15, tzinfo=UTC)
    # no follow-up plan for ED visits, whatever the risk band
    assert not [k for k in keys(checklist) if k.startswith("follow-up-call-")]
    # an ED visit that left against advice stays an ED checklist (variants are tried in order)
    assert build(encounter_class="EMER", destination=Destination.AMA).variant == (
        "ed-treat-and-release"
    )


def test_observation_stay_qualifies_for_tcm() -> None:
    checklist = build(encounter_class="OBSENC")
    assert checklist.variant == "home"
    assert checklist.tcm is not None


def test_unrecorded_destination_is_taken_as_home() -> None:
    checklist = build(destination=Destination.UNKNOWN)
    assert checklist.variant == "home"
    assert checklist.tcm is not None
    assert "not recorded" in checklist.tcm.eligibility.reason


# -- conditions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "interpreter"),
    [("es", True), ("es-MX", True), ("zh-Hant-TW", True), ("en", False), ("en-US", False),
     ("EN-gb", False), (None, False)],
)  # fmt: skip
def test_interpreter_only_when_the_language_differs(
    language: str | None, interpreter: bool
) -> None:
    checklist = build(patient_language=language)
    assert ("interpreter" in keys(checklist)) is interpreter
    if interpreter:
        item = checklist.item("interpreter")
        assert item.code is TaskCode.INTERPRETER
        # needed before the contact call: business day 1 (no later than the contact)
        assert item.due == date(2025, 7, 3)


def test_interpreter_compares_with_the_organisation_language(tmp_path: Path) -> None:
    spanish_org = overlay_setup(tmp_path, {"language": "es"})
    assert "interpreter" not in keys(build(spanish_org, patient_language="es-MX"))
    assert "interpreter" in keys(build(spanish_org, patient_language="en"))


def test_equipment_only_when_ordered() -> None:
    assert "home-services-equipment" not in keys(build())
    item = build(equipment_ordered=True).item("home-services-equipment")
    assert (item.owner, item.due) == (CareRole.SOCIAL_WORKER, date(2025, 7, 3))


def test_pending_results_only_when_pending() -> None:
    assert "pending-results-follow-up" not in keys(build())
    item = build(pending_results=True).item("pending-results-follow-up")
    assert (item.owner, item.due) == (CareRole.PCP, date(2025, 7, 10))  # 5 business days, Jul 4


@pytest.mark.parametrize(
    ("band", "calls", "visit", "complexity"),
    [
        ("high", ["72h", "d7", "d14", "d30"], date(2025, 7, 9), Complexity.HIGH),
        ("moderate", ["72h", "d14"], date(2025, 7, 16), Complexity.MODERATE),
        ("intermediate", ["72h", "d14"], date(2025, 7, 16), Complexity.MODERATE),
        ("low", ["72h"], date(2025, 7, 16), Complexity.MODERATE),
        (None, ["72h"], date(2025, 7, 16), Complexity.MODERATE),
    ],
)
def test_risk_band_sets_complexity_and_follow_up_calls(
    band: str | None, calls: list[str], visit: date, complexity: Complexity
) -> None:
    checklist = build(risk_band=band)
    assert checklist.complexity is complexity
    assert checklist.item("tcm-face-to-face-visit").due == visit
    found = [k.removeprefix("follow-up-call-") for k in keys(checklist) if "follow-up-call-" in k]
    assert found == calls
    first = checklist.item("follow-up-call-72h")
    assert first.not_before == DISCHARGED + timedelta(hours=48)
    assert first.due == DISCHARGED + timedelta(hours=72)


def test_follow_up_call_days() -> None:
    checklist = build(risk_band="high")
    assert checklist.item("follow-up-call-d7").due == date(2025, 7, 9)
    assert checklist.item("follow-up-call-d14").due == date(2025, 7, 16)
    d30 = checklist.item("follow-up-call-d30")
    assert (d30.due, d30.required) == (date(2025, 8, 1), False)


# -- relative due rules ----------------------------------------------------------------------------


def test_medication_reconciliation_no_later_than_the_visit(tmp_path: Path) -> None:
    assert build(risk_band="high").item("medication-reconciliation").due == date(2025, 7, 8)
    late = overlay_setup(
        tmp_path,
        {"items": [{"key": "medication-reconciliation",
                    "due": {"business_days": 10, "no_later_than": "tcm-face-to-face-visit"}}]},
    )  # fmt: skip
    assert build(late, risk_band="high").item("medication-reconciliation").due == date(2025, 7, 9)
    assert build(late, risk_band="moderate").item("medication-reconciliation").due == date(
        2025, 7, 16
    )
    # without a visit (destination not known to be a community setting: no TCM) no bound
    other = build(late, destination=Destination.OTHER)
    assert "tcm-face-to-face-visit" not in keys(other)
    assert other.item("medication-reconciliation").due == date(2025, 7, 17)


def test_rules_relative_to_another_item(tmp_path: Path) -> None:
    setup = overlay_setup(
        tmp_path,
        {"items": [
            {"key": "after-contact-days", "code": "follow-up-call", "owner": "nurse-case-manager",
             "due": {"after": "tcm-interactive-contact", "calendar_days": 3}, "variants": "home"},
            {"key": "after-contact-bdays", "code": "follow-up-call", "owner": "nurse-case-manager",
             "due": {"after": "tcm-interactive-contact", "business_days": 1}, "variants": "home"},
            {"key": "after-contact-hours", "code": "follow-up-call", "owner": "nurse-case-manager",
             "due": {"after": "tcm-interactive-contact", "hours": 6}, "variants": "home"},
            {"key": "after-access-bdays", "code": "follow-up-call", "owner": "pharmacist",
             "due": {"after": "medication-access", "business_days": 1}, "variants": "home"},
        ]},
    )  # fmt: skip
    checklist = build(setup)
    assert checklist.item("after-contact-days").due == date(2025, 7, 10)
    assert checklist.item("after-contact-bdays").due == date(2025, 7, 8)
    # end of Mon Jul 7 in New York (04:00 UTC on Jul 8) + 6 hours
    assert checklist.item("after-contact-hours").due == datetime(2025, 7, 8, 10, tzinfo=UTC)
    # Thu Jul 3 11:00 local + 1 business day (Jul 4 holiday) = Mon Jul 7 11:00 local
    assert checklist.item("after-access-bdays").due == datetime(2025, 7, 7, 15, tzinfo=UTC)
    # the item it follows is not in an SNF checklist, so neither is it
    snf = overlay_setup(
        tmp_path / "snf",
        {"items": [{"key": "x", "code": "follow-up-call", "owner": "pcp",
                    "due": {"after": "tcm-interactive-contact", "hours": 1}}]},
    )  # fmt: skip
    without = build(snf, destination=Destination.SNF)
    assert "x" not in keys(without)
    assert (
        skipped(without)["x"] == "depends on tcm-interactive-contact, which is not in the checklist"
    )


# -- organisation overlays -------------------------------------------------------------------------


def test_overlay_add_override_and_switch_off(tmp_path: Path) -> None:
    shutil.copytree(CONFIG / "transitions", tmp_path / "transitions")
    orgs = tmp_path / "transitions" / "organizations"
    shutil.copy(orgs / "example-org.yaml.example", orgs / "acme.yaml")
    templates = load_templates(tmp_path)
    acme = build(templates.for_organization("acme"), organization="acme", risk_band="high")
    default = build(templates.for_organization(None), risk_band="high")
    # switched off, with the reason
    assert "teach-back-education" in keys(default)
    assert "teach-back-education" not in keys(acme)
    assert skipped(acme)["teach-back-education"] == "switched off by the organisation"
    # added, only when its condition holds
    added = acme.item("social-needs-follow-up")
    assert (added.owner, added.code) == (CareRole.SOCIAL_WORKER, TaskCode.HOME_SERVICES_EQUIPMENT)
    low = build(templates.for_organization("acme"), risk_band="low")
    assert skipped(low)["social-needs-follow-up"] == "condition not met: risk_band"
    # overridden: owner and due rule (2 days after the contact, Chicago time)
    medrec = acme.item("medication-reconciliation")
    assert medrec.owner is CareRole.NURSE_CASE_MANAGER
    assert medrec.due == date(2025, 7, 9)
    # the organisation's moderate band gets the high (7-day) visit and its own call plan
    moderate = build(templates.for_organization("acme"), risk_band="moderate")
    assert moderate.item("tcm-face-to-face-visit").due == date(2025, 7, 9)
    assert [k for k in keys(moderate) if k.startswith("follow-up-call-")] == [
        "follow-up-call-72h", "follow-up-call-d7", "follow-up-call-d14"
    ]  # fmt: skip


def test_overlay_holidays_change_deadlines(tmp_path: Path) -> None:
    closed = overlay_setup(tmp_path, {"holidays": {"closures": ["2025-07-07"]}})
    assert build(closed).item("tcm-interactive-contact").due == date(2025, 7, 8)
    texas = overlay_setup(tmp_path / "tx", {"timezone": "America/Chicago",
                                            "holidays": {"subdivision": "TX"}})  # fmt: skip
    # Wed before Thanksgiving: Texas also closes the Friday after
    wednesday = datetime(2025, 11, 26, 18, tzinfo=UTC)
    assert build(texas, discharged=wednesday).item("tcm-interactive-contact").due == date(
        2025, 12, 2
    )
    assert build(discharged=wednesday).item("tcm-interactive-contact").due == date(2025, 12, 1)


# -- escalation ------------------------------------------------------------------------------------


def test_escalation_due_for_day_and_hour_items() -> None:
    checklist = build()
    contact = checklist.item("tcm-interactive-contact")  # due Mon Jul 7 (end of day in New York)
    steps = {s.name: s for s in contact.escalation}
    end_of_day = datetime(2025, 7, 8, 4, tzinfo=UTC)
    assert escalation_due(steps["due-soon"], contact.due, DEFAULT.calendar) == end_of_day - (
        timedelta(hours=8)
    )
    assert escalation_due(steps["overdue"], contact.due, DEFAULT.calendar) == end_of_day
    assert escalation_due(
        steps["overdue-supervisor"], contact.due, DEFAULT.calendar
    ) == end_of_day + timedelta(hours=4)
    assert steps["overdue-supervisor"].notify == (CareRole.SUPERVISOR,)
    access = checklist.item("medication-access")  # due 24 h after discharge
    step = EscalationStep("overdue", "overdue", timedelta(hours=2), ("owner",))
    assert escalation_due(step, access.due, DEFAULT.calendar) == datetime(
        2025, 7, 3, 17, tzinfo=UTC
    )


# -- determinism and input checks ------------------------------------------------------------------


def test_same_facts_same_checklist() -> None:
    one = build(risk_band="high", patient_language="es", equipment_ordered=True)
    two = build(risk_band="high", patient_language="es", equipment_ordered=True)
    assert one == two
    assert len({item.key for item in one.items}) == len(one.items)


def test_naive_discharge_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        build_checklist(facts(discharged=datetime(2025, 7, 2, 11)), DEFAULT)


def test_hour_rules_count_real_hours_across_a_dst_change() -> None:
    # Sat 2025-11-01 12:00 in New York (EDT); clocks go back on Sunday
    local = datetime(2025, 11, 1, 12, tzinfo=ZoneInfo("America/New_York"))
    call = build(discharged=local).item("follow-up-call-72h")
    assert call.due == datetime(2025, 11, 4, 16, tzinfo=UTC)  # 72 h later, 11:00 EST
    assert call.not_before == datetime(2025, 11, 3, 16, tzinfo=UTC)
    assert isinstance(call.due, datetime)
    assert call.due.tzinfo is UTC  # stored as UTC, whatever zone the discharge came in


SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-r4"


def synthea_encounter(patient_file: str, encounter_id: str) -> dict[str, Any]:
    path = SYNTHEA / patient_file
    if not path.is_file():
        pytest.skip("shared Synthea data not present")
    bundle = json.loads(path.read_bytes())
    for entry in bundle["entry"]:
        if entry["resource"].get("id") == encounter_id:
            return dict(entry["resource"])
    raise AssertionError(f"{encounter_id} not in {patient_file}")


@pytest.mark.parametrize(
    ("patient_file", "encounter_id", "contact", "visit_14"),
    [
        # ends 2020-06-19 00:54 UTC = Thu Jun 18 in New York; Juneteenth was not yet a federal
        # holiday in 2020, so Fri Jun 19 counts
        ("patient-01.json", "e1ac5b9a-132a-4689-be6d-f1ae08006be8", "2020-06-22", "2020-07-02"),
        # NUBC 01 (Synthea's system URL): home; Thu 1947-08-14 -> Mon 08-18
        ("patient-06.json", "706e8981-b8d4-4392-90f3-fe423a74411a", "1947-08-18", "1947-08-28"),
    ],
)
def test_synthea_inpatient_encounters(
    patient_file: str, encounter_id: str, contact: str, visit_14: str
) -> None:
    encounter = synthea_encounter(patient_file, encounter_id)
    disposition = encounter.get("hospitalization", {}).get("dischargeDisposition")
    checklist = build(
        encounter_id=encounter["id"],
        encounter_class=encounter["class"]["code"],
        discharged=datetime.fromisoformat(encounter["period"]["end"]),
        admitted=datetime.fromisoformat(encounter["period"]["start"]),
        destination=destination_of([disposition] if disposition else []),
    )
    assert checklist.variant == "home"
    assert checklist.tcm is not None
    assert checklist.item("tcm-interactive-contact").due == date.fromisoformat(contact)
    assert checklist.item("tcm-face-to-face-visit").due == date.fromisoformat(visit_14)
