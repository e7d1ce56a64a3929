"""Transitional Care Management (CPT 99495 / 99496): eligibility, deadlines and billing code.

Rules (../shared/docs/rules.md §1-2): the discharge date is day 0; the interactive contact is due
within 2 business days after discharge; the face-to-face visit within 7 calendar days (high
complexity) or 14 (moderate); the service period runs through discharge + 29.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Final

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.dispositions import Destination, destination_of

__all__ = [
    "CONTACT_BUSINESS_DAYS",
    "HIGH_COMPLEXITY_CODE",
    "MODERATE_COMPLEXITY_CODE",
    "Complexity",
    "Destination",
    "TcmDeadlines",
    "TcmEligibility",
    "TcmPlan",
    "destination_of",
    "suggested_billing_code",
    "tcm_deadlines",
    "tcm_eligibility",
]

CONTACT_BUSINESS_DAYS: Final = 2
HIGH_VISIT_DAYS: Final = 7
MODERATE_VISIT_DAYS: Final = 14
PERIOD_DAYS: Final = 30
MODERATE_COMPLEXITY_CODE: Final = "99495"
HIGH_COMPLEXITY_CODE: Final = "99496"


class Complexity(StrEnum):
    """Medical decision making of the TCM service."""

    MODERATE = "moderate"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class TcmDeadlines:
    """The last day of each TCM requirement (dates in the organisation's time zone)."""

    contact: date
    visit_7: date
    visit_14: date
    period_end: date

    def visit_due(self, complexity: Complexity) -> date:
        return self.visit_7 if complexity is Complexity.HIGH else self.visit_14


def tcm_deadlines(discharge: date, calendar: BusinessCalendar) -> TcmDeadlines:
    """Deadlines for a discharge on local date ``discharge``."""
    return TcmDeadlines(
        contact=calendar.add_business_days(discharge, CONTACT_BUSINESS_DAYS),
        visit_7=discharge + timedelta(days=HIGH_VISIT_DAYS),
        visit_14=discharge + timedelta(days=MODERATE_VISIT_DAYS),
        period_end=discharge + timedelta(days=PERIOD_DAYS - 1),
    )


@dataclass(frozen=True, slots=True)
class TcmEligibility:
    """Whether the discharge qualifies for TCM, and why (or why not)."""

    eligible: bool
    reason: str


@dataclass(frozen=True, slots=True)
class TcmPlan:
    """TCM for one checklist: eligibility, the complexity chosen and the deadlines."""

    eligibility: TcmEligibility
    complexity: Complexity
    deadlines: TcmDeadlines

    @property
    def visit_due(self) -> date:
        return self.deadlines.visit_due(self.complexity)


# v3 ActCode encounter classes of a qualifying facility stay.
_QUALIFYING_SETTINGS: Final[dict[str, str]] = {
    "IMP": "inpatient stay",
    "ACUTE": "inpatient acute stay",
    "NONAC": "inpatient non-acute stay (rehabilitation, psychiatric, long-term care hospital)",
    "OBSENC": "observation stay",
}
_NOT_QUALIFYING_SETTINGS: Final[dict[str, str]] = {
    "EMER": "an emergency visit (treat and release) is not a qualifying stay",
    "AMB": "an ambulatory encounter is not a qualifying stay",
    "HH": "a home health encounter is not a qualifying stay",
    "VR": "a virtual encounter is not a qualifying stay",
    "FLD": "a field encounter is not a qualifying stay",
    "PRENC": "a pre-admission encounter is not a qualifying stay",
}
# Community settings a qualifying discharge goes to.
_COMMUNITY: Final = frozenset(
    {
        Destination.HOME,
        Destination.HOME_HEALTH,
        Destination.ASSISTED_LIVING,
        Destination.NURSING_FACILITY,
    }
)
_NOT_COMMUNITY: Final[dict[Destination, str]] = {
    Destination.SNF: "discharged to a skilled nursing facility, not to a community setting",
    Destination.ACUTE_TRANSFER: "transferred to another hospital; the transition starts there",
    Destination.AMA: "left against medical advice; outreach instead of TCM",
    Destination.EXPIRED: "the patient died",
    Destination.HOSPICE: "discharged to hospice care",
    Destination.REHAB: "transferred to inpatient rehabilitation, not to a community setting",
    Destination.PSYCH: "transferred to a psychiatric facility, not to a community setting",
    Destination.OTHER: "destination is not known to be a community setting",
}


def tcm_eligibility(*, encounter_class: str, destination: Destination) -> TcmEligibility:
    """Qualifying setting (inpatient, inpatient non-acute, observation) discharged to a
    community setting (home, home health, assisted living, nursing facility). An unrecorded
    destination is taken as home (most discharges; Synthea rarely records one)."""
    cls = encounter_class.strip().upper()
    setting = _QUALIFYING_SETTINGS.get(cls)
    if setting is None:
        why = _NOT_QUALIFYING_SETTINGS.get(cls, f"encounter class {cls!r} is not a qualifying stay")
        return TcmEligibility(False, why)
    if destination in _COMMUNITY:
        return TcmEligibility(True, f"{setting} discharged to {destination.value}")
    if destination is Destination.UNKNOWN:
        return TcmEligibility(True, f"{setting}; destination not recorded, taken as home")
    return TcmEligibility(False, _NOT_COMMUNITY[destination])


def suggested_billing_code(*, complexity: Complexity, discharge: date, visit: date) -> str | None:
    """99496 for high complexity with the visit on day 0-7; 99495 for a visit within 14 days
    (moderate, or high on day 8-14); None when the visit is after day 14 (or before discharge)."""
    day = (visit - discharge).days
    if day < 0 or day > MODERATE_VISIT_DAYS:
        return None
    if complexity is Complexity.HIGH and day <= HIGH_VISIT_DAYS:
        return HIGH_COMPLEXITY_CODE
    return MODERATE_COMPLEXITY_CODE
