"""TCM: the worked examples of rules.md §8, eligibility, billing code, dispositions."""

from __future__ import annotations

from datetime import date

import pytest

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.tcm import (
    Complexity,
    Destination,
    TcmDeadlines,
    destination_of,
    suggested_billing_code,
    tcm_deadlines,
    tcm_eligibility,
)

US = BusinessCalendar.us_federal()


@pytest.mark.parametrize(
    ("discharge", "contact", "visit_7", "visit_14", "end"),
    [
        ("2025-07-02", "2025-07-07", "2025-07-09", "2025-07-16", "2025-07-31"),  # Jul 4 holiday
        ("2025-11-07", "2025-11-12", "2025-11-14", "2025-11-21", "2025-12-06"),  # Veterans Day
        ("2026-07-02", "2026-07-07", "2026-07-09", "2026-07-16", "2026-07-31"),  # Jul 4 on Sat
        ("2027-12-30", "2028-01-04", "2028-01-06", "2028-01-13", "2028-01-28"),  # New Year 2028
    ],
)
def test_rules_section_8_worked_examples(
    discharge: str, contact: str, visit_7: str, visit_14: str, end: str
) -> None:
    expected = TcmDeadlines(*(date.fromisoformat(d) for d in (contact, visit_7, visit_14, end)))
    assert tcm_deadlines(date.fromisoformat(discharge), US) == expected


def test_visit_due_by_complexity() -> None:
    d = tcm_deadlines(date(2025, 7, 2), US)
    assert d.visit_due(Complexity.HIGH) == date(2025, 7, 9)
    assert d.visit_due(Complexity.MODERATE) == date(2025, 7, 16)


def test_friday_and_saturday_discharges() -> None:
    assert tcm_deadlines(date(2025, 7, 11), US).contact == date(2025, 7, 15)  # Fri -> Tue
    assert tcm_deadlines(date(2025, 7, 12), US).contact == date(2025, 7, 15)  # Sat -> Tue


def test_a_closure_moves_the_contact_deadline() -> None:
    cal = BusinessCalendar.us_federal(closures=[date(2025, 7, 7)])
    assert tcm_deadlines(date(2025, 7, 2), cal).contact == date(2025, 7, 8)


@pytest.mark.parametrize(
    ("complexity", "day", "code"),
    [
        (Complexity.HIGH, 6, "99496"),
        (Complexity.HIGH, 10, "99495"),
        (Complexity.HIGH, 0, "99496"),
        (Complexity.HIGH, 7, "99496"),
        (Complexity.HIGH, 8, "99495"),
        (Complexity.MODERATE, 3, "99495"),
        (Complexity.MODERATE, 14, "99495"),
        (Complexity.MODERATE, 15, None),
        (Complexity.HIGH, 15, None),
        (Complexity.HIGH, -1, None),
    ],
)
def test_suggested_billing_code(complexity: Complexity, day: int, code: str | None) -> None:
    discharge = date(2025, 7, 2)
    visit = date.fromordinal(discharge.toordinal() + day)
    assert suggested_billing_code(complexity=complexity, discharge=discharge, visit=visit) == code


@pytest.mark.parametrize(
    ("cls", "destination", "eligible", "why"),
    [
        ("IMP", Destination.HOME, True, "inpatient"),
        ("ACUTE", Destination.HOME_HEALTH, True, "inpatient acute"),
        ("OBSENC", Destination.ASSISTED_LIVING, True, "observation"),
        ("NONAC", Destination.NURSING_FACILITY, True, "non-acute"),
        ("imp", Destination.UNKNOWN, True, "not recorded"),
        ("EMER", Destination.HOME, False, "emergency"),
        ("AMB", Destination.HOME, False, "ambulatory"),
        ("IMP", Destination.SNF, False, "skilled nursing"),
        ("IMP", Destination.EXPIRED, False, "died"),
        ("IMP", Destination.AMA, False, "against medical advice"),
        ("IMP", Destination.ACUTE_TRANSFER, False, "another hospital"),
        ("IMP", Destination.HOSPICE, False, "hospice"),
        ("XYZ", Destination.HOME, False, "'XYZ'"),
    ],
)
def test_tcm_eligibility(cls: str, destination: Destination, eligible: bool, why: str) -> None:
    result = tcm_eligibility(encounter_class=cls, destination=destination)
    assert result.eligible is eligible
    assert why in result.reason


NUBC = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
HL7 = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0112"
SYNTHEA = "http://www.nubc.org/patient-discharge"
SCT = "http://snomed.info/sct"


@pytest.mark.parametrize(
    ("codings", "destination"),
    [
        ([{"system": HL7, "code": "home"}], Destination.HOME),
        ([{"system": HL7, "code": "alt-home"}], Destination.HOME),
        ([{"system": HL7, "code": "snf"}], Destination.SNF),
        ([{"system": HL7, "code": "aadvice"}], Destination.AMA),
        ([{"system": HL7, "code": "exp"}], Destination.EXPIRED),
        ([{"system": HL7, "code": "hosp"}], Destination.HOSPICE),
        ([{"system": HL7, "code": "psy"}], Destination.PSYCH),
        ([{"system": HL7, "code": "rehab"}], Destination.REHAB),
        ([{"system": HL7, "code": "long"}], Destination.NURSING_FACILITY),
        ([{"system": NUBC, "code": "01"}], Destination.HOME),
        ([{"system": NUBC, "code": "06"}], Destination.HOME_HEALTH),
        ([{"system": NUBC, "code": "03"}], Destination.SNF),
        ([{"system": NUBC, "code": "02"}], Destination.ACUTE_TRANSFER),
        ([{"system": NUBC, "code": "07"}], Destination.AMA),
        ([{"system": NUBC, "code": "20"}], Destination.EXPIRED),
        ([{"system": NUBC, "code": "50"}], Destination.HOSPICE),
        ([{"system": NUBC, "code": "51"}], Destination.HOSPICE),
        ([{"system": NUBC, "code": "04"}], Destination.NURSING_FACILITY),
        ([{"system": NUBC, "code": "86"}], Destination.HOME_HEALTH),
        ([{"system": V2, "code": "6"}], Destination.HOME_HEALTH),
        ([{"system": SYNTHEA, "code": "01"}], Destination.HOME),
        ([{"system": SCT, "code": "306689006"}], Destination.HOME),
        ([{"system": SCT, "code": "306694006"}], Destination.NURSING_FACILITY),
        ([{"system": "urn:local", "code": "H"}, {"system": NUBC, "code": "03"}], Destination.SNF),
        ([{"coding": [{"system": HL7, "code": "exp"}], "text": "Died"}], Destination.EXPIRED),
        ([{"system": NUBC, "code": "99"}], Destination.UNKNOWN),
        ([{"code": "01"}], Destination.UNKNOWN),
        ([], Destination.UNKNOWN),
    ],
)  # fmt: skip
def test_destination_of_discharge_dispositions(
    codings: list[dict[str, object]], destination: Destination
) -> None:
    assert destination_of(codings) is destination


def test_destination_values_are_lower_case_hyphenated() -> None:
    assert Destination.HOME_HEALTH.value == "home-health"
    assert str(Destination.ACUTE_TRANSFER) == "acute-transfer"
