"""A discharge becomes a checklist: variant, items with owners, due times and escalation steps.

Pure and deterministic: the same facts and setup give the same checklist. Day rules give a local
date (the item is due by the end of that day in the organisation's time zone); hour rules give an
aware UTC instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal, TypeAlias

from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.codes import CareRole, TaskCode
from carecoord.transitions.dispositions import Destination
from carecoord.transitions.tcm import (
    Complexity,
    TcmEligibility,
    TcmPlan,
    tcm_deadlines,
    tcm_eligibility,
)
from carecoord.transitions.templates import (
    Conditions,
    DueRule,
    EscalationStep,
    ItemTemplate,
    OrganizationSetup,
    Priority,
    Template,
    Variant,
)

__all__ = [
    "EMERGENCY_CLASSES",
    "INPATIENT_CLASSES",
    "OBSERVATION_CLASSES",
    "Checklist",
    "DischargeFacts",
    "Due",
    "EscalationStep",
    "PlannedItem",
    "build_checklist",
    "due_instant",
    "escalation_due",
    "risk_complexity",
    "select_variant",
    "starts_transition",
]

INPATIENT_CLASSES: Final = frozenset({"IMP", "ACUTE", "NONAC"})
OBSERVATION_CLASSES: Final = frozenset({"OBSENC"})
EMERGENCY_CLASSES: Final = frozenset({"EMER"})
_TRANSITION_CLASSES: Final = INPATIENT_CLASSES | OBSERVATION_CLASSES | EMERGENCY_CLASSES
_BAND_ALIASES: Final = {"intermediate": "moderate"}  # HOSPITAL score wording

Due: TypeAlias = date | datetime


@dataclass(frozen=True, slots=True)
class DischargeFacts:
    """What the checklist depends on, read from the Encounter and the patient's record."""

    encounter_id: str
    patient_id: str
    encounter_class: str  # v3 ActCode: IMP, ACUTE, NONAC, OBSENC, EMER, AMB, SS, HH, ...
    discharged: datetime  # aware
    admitted: datetime | None
    destination: Destination
    organization: str | None = None
    patient_language: str | None = None  # BCP-47; the primary subtag is compared
    equipment_ordered: bool = False
    pending_results: bool = False
    home_health: bool = False
    risk_band: str | None = None  # low | moderate | high (None: not scored)


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One item to write as a Task: due by ``due`` (a local date: by the end of that day; or an
    aware UTC instant), not to start before ``not_before`` when set."""

    key: str
    code: TaskCode
    title: str
    owner: CareRole
    due: Due
    priority: Priority
    required: bool
    escalation: tuple[EscalationStep, ...]
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Checklist:
    """The items of one discharge; ``tcm`` is set when the discharge qualifies for TCM;
    ``skipped`` lists the template items left out, with why."""

    variant: str
    items: tuple[PlannedItem, ...]
    tcm: TcmPlan | None
    tcm_eligibility: TcmEligibility
    complexity: Complexity
    risk_band: str | None
    skipped: tuple[tuple[str, str], ...]

    def item(self, key: str) -> PlannedItem:
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(key)


def starts_transition(encounter_class: str) -> bool:
    """Whether finishing an encounter of this class starts a transition: inpatient (IMP, ACUTE,
    NONAC), observation (OBSENC) and emergency (EMER)."""
    return encounter_class.strip().upper() in _TRANSITION_CLASSES


def _band(risk_band: str | None) -> str | None:
    if risk_band is None:
        return None
    band = risk_band.strip().lower()
    band = _BAND_ALIASES.get(band, band)
    return band if band in ("low", "moderate", "high") else None


def risk_complexity(template: Template, risk_band: str | None) -> Complexity:
    """The TCM complexity the template maps the risk band to (its default without a band)."""
    band = _band(risk_band)
    if band is None:
        return template.no_band_complexity
    return template.complexity_by_band.get(band, template.no_band_complexity)


def select_variant(facts: DischargeFacts, template: Template) -> Variant | None:
    """The first variant whose match fits; None when the discharge starts no transition."""
    if not starts_transition(facts.encounter_class) or facts.destination is Destination.EXPIRED:
        return None
    cls = facts.encounter_class.strip().upper()
    for variant in template.variants:
        if not variant.match:
            return variant
        for alt in variant.match:
            if (
                (alt.encounter_class is None or cls in alt.encounter_class)
                and (alt.destination is None or facts.destination in alt.destination)
                and (alt.home_health is None or alt.home_health == facts.home_health)
            ):
                return variant
    return None


def _primary(tag: str) -> str:
    return tag.strip().split("-", 1)[0].split("_", 1)[0].lower()


def _unmet(
    when: Conditions, facts: DischargeFacts, language: str, eligible: bool, band: str | None
) -> str | None:
    """The first condition that does not hold, or None."""
    if when.language_differs is not None:
        differs = facts.patient_language is not None and _primary(
            facts.patient_language
        ) != _primary(language)
        if differs != when.language_differs:
            return "language_differs"
    if when.equipment_ordered is not None and when.equipment_ordered != facts.equipment_ordered:
        return "equipment_ordered"
    if when.pending_results is not None and when.pending_results != facts.pending_results:
        return "pending_results"
    if when.home_health is not None:
        home_health = facts.home_health or facts.destination is Destination.HOME_HEALTH
        if when.home_health != home_health:
            return "home_health"
    if when.tcm_eligible is not None and when.tcm_eligible != eligible:
        return "tcm_eligible"
    if when.risk_band is not None and (band or "none") not in when.risk_band:
        return "risk_band"
    if when.destination is not None and facts.destination not in when.destination:
        return "destination"
    if (
        when.encounter_class is not None
        and facts.encounter_class.strip().upper() not in when.encounter_class
    ):
        return "encounter_class"
    return None


def due_instant(due: Due, calendar: BusinessCalendar) -> datetime:
    """The aware UTC instant a due value ends: the end of the local day for a date."""
    if isinstance(due, datetime):
        return due
    return calendar.end_of_day(due)


def _offset(base: Due, unit: str | None, amount: int, calendar: BusinessCalendar) -> Due:
    if unit is None or (amount == 0 and unit != "business_days"):
        return base
    if isinstance(base, datetime):
        local = base.astimezone(calendar.timezone)
        if unit == "hours":
            return (base + timedelta(hours=amount)).astimezone(UTC)
        if unit == "calendar_days":
            moved = local.date() + timedelta(days=amount)
        else:
            moved = calendar.add_business_days(local.date(), amount)
        return datetime.combine(moved, local.timetz()).astimezone(UTC)
    if unit == "hours":
        return calendar.end_of_day(base) + timedelta(hours=amount)
    if unit == "calendar_days":
        return base + timedelta(days=amount)
    return calendar.add_business_days(base, amount)


def _due(
    rule: DueRule,
    facts: DischargeFacts,
    local_discharge: date,
    tcm: TcmPlan,
    calendar: BusinessCalendar,
    dues: dict[str, Due],
) -> Due | None:
    if rule.anchor == "tcm":
        deadlines = tcm.deadlines
        due: Due = {
            "contact": deadlines.contact,
            "visit": tcm.visit_due,
            "visit-7": deadlines.visit_7,
            "visit-14": deadlines.visit_14,
            "period-end": deadlines.period_end,
        }[rule.ref or ""]
    elif rule.anchor == "item":
        base = dues.get(rule.ref or "")
        if base is None:
            return None
        due = _offset(base, rule.unit, rule.amount, calendar)
    elif rule.unit == "hours":
        due = facts.discharged.astimezone(UTC) + timedelta(hours=rule.amount)
    else:
        due = _offset(local_discharge, rule.unit, rule.amount, calendar)
    for ref in rule.no_later_than:
        bound = dues.get(ref)
        if bound is not None and due_instant(bound, calendar) < due_instant(due, calendar):
            due = bound
    return due


def build_checklist(facts: DischargeFacts, setup: OrganizationSetup) -> Checklist | None:
    """The checklist for a discharge, or None when it starts no transition (not an inpatient,
    observation or emergency encounter; the patient died; no variant fits the destination)."""
    if facts.discharged.tzinfo is None or facts.discharged.utcoffset() is None:
        raise ValueError("DischargeFacts.discharged must be timezone-aware")
    template = setup.template
    variant = select_variant(facts, template)
    if variant is None:
        return None
    calendar = setup.calendar
    local_discharge = calendar.local_date(facts.discharged)
    band = _band(facts.risk_band)
    complexity = risk_complexity(template, band)
    eligibility = tcm_eligibility(
        encounter_class=facts.encounter_class, destination=facts.destination
    )
    tcm = TcmPlan(eligibility, complexity, tcm_deadlines(local_discharge, calendar))

    wanted = list(variant.items)
    if variant.follow_up_plan:
        plan = template.follow_up_plans.get(band or "none", ())
        wanted.extend(k for k in plan if k not in variant.items)
    wanted_set = set(wanted)
    skipped: dict[str, str] = {}
    dues: dict[str, Due] = {}
    for key in template.order:
        if key not in wanted_set:
            continue
        item = template.items[key]
        if key in template.switched_off:
            skipped[key] = "switched off by the organisation"
            continue
        unmet = _unmet(item.when, facts, setup.language, eligibility.eligible, band)
        if unmet is not None:
            skipped[key] = f"condition not met: {unmet}"
            continue
        due = _due(item.due, facts, local_discharge, tcm, calendar, dues)
        if due is None:
            skipped[key] = f"depends on {item.due.ref}, which is not in the checklist"
            continue
        dues[key] = due
    items = tuple(_planned(template.items[k], dues[k], facts) for k in wanted if k in dues)
    return Checklist(
        variant=variant.name,
        items=items,
        tcm=tcm if eligibility.eligible else None,
        tcm_eligibility=eligibility,
        complexity=complexity,
        risk_band=band,
        skipped=tuple((k, skipped[k]) for k in wanted if k in skipped),
    )


def _planned(item: ItemTemplate, due: Due, facts: DischargeFacts) -> PlannedItem:
    opens = item.due.opens_hours
    return PlannedItem(
        key=item.key,
        code=item.code,
        title=item.title,
        owner=item.owner,
        due=due,
        priority=item.priority,
        required=item.required,
        escalation=item.escalation,
        not_before=None
        if opens is None
        else facts.discharged.astimezone(UTC) + timedelta(hours=opens),
    )


def escalation_due(step: EscalationStep, due: Due, calendar: BusinessCalendar) -> datetime:
    """The aware UTC instant ``step`` fires for an item due at ``due``: ``offset`` before the due
    time for due-soon, after it for overdue (a date is due at the end of that local day)."""
    deadline = due_instant(due, calendar)
    when: Literal["due-soon", "overdue"] = step.when
    return deadline - step.offset if when == "due-soon" else deadline + step.offset
