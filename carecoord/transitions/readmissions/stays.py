"""Inpatient stays from Encounters: transfer chaining, index admissions and 30-day readmissions.

Pure functions over plain values (rules.md §5). An :class:`EncounterFacts` is what the rules need
from one Encounter; :func:`chain_stays` joins transfers and same-day continuations into
:class:`Stay` values; :func:`find_readmissions` pairs each index stay with its first readmission.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.dispositions import Destination, destination_of
from carecoord.transitions.readmissions.codematch import Coding, codings_of
from carecoord.transitions.readmissions.config import ReadmissionConfig

__all__ = [
    "EncounterFacts",
    "ReadmissionFinding",
    "Stay",
    "chain_stays",
    "find_readmissions",
    "index_ineligibility",
    "parse_encounter",
    "parse_instant",
    "planned_rule",
    "ref_id",
]


def parse_instant(value: Any, zone: ZoneInfo) -> datetime | None:
    """A FHIR dateTime as an aware datetime (dates and naive times are read in ``zone``)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=zone)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=zone)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def ref_id(reference: Any, res_type: str | None = None) -> str | None:
    """The id in a ``{"reference": "Type/id"}`` (of ``res_type`` when given)."""
    if not isinstance(reference, Mapping):
        return None
    value = reference.get("reference")
    if not isinstance(value, str) or "/" not in value:
        return None
    kind, _, rest = value.rpartition("/")
    kind = kind.rsplit("/", 1)[-1]
    if res_type is not None and kind != res_type:
        return None
    return rest or None


@dataclass(frozen=True, slots=True)
class EncounterFacts:
    """What the readmission and risk rules need from one Encounter."""

    id: str
    patient: str | None
    cls: str | None
    status: str | None
    start: datetime | None
    end: datetime | None
    destination: Destination = Destination.UNKNOWN
    priority: str | None = None
    admit_source: str | None = None
    facility: str | None = None
    unit: str | None = None
    principal: Coding | None = None
    codes: tuple[Coding, ...] = ()
    service_types: tuple[Coding, ...] = ()
    part_of: str | None = None


def _first_code(concept: Any) -> str | None:
    found = codings_of([concept])
    return found[0][1] if found else None


def parse_encounter(
    body: Mapping[str, Any],
    zone: ZoneInfo,
    condition_code: Callable[[str], Coding | None] | None = None,
) -> EncounterFacts:
    """Facts of an Encounter; ``condition_code`` resolves a diagnosis Condition id to its code."""
    period = body.get("period") or {}
    hosp = body.get("hospitalization") or {}
    disposition = hosp.get("dischargeDisposition")
    cls = body.get("class") or {}
    principal: Coding | None = None
    diagnoses = sorted(
        (d for d in body.get("diagnosis") or () if isinstance(d, Mapping)),
        key=lambda d: d["rank"] if isinstance(d.get("rank"), int) else 99,
    )
    if condition_code is not None:
        for diagnosis in diagnoses:
            cid = ref_id(diagnosis.get("condition"), "Condition")
            if cid is not None and (principal := condition_code(cid)) is not None:
                break
    reasons = codings_of(body.get("reasonCode") or ())
    if principal is None and reasons:
        principal = reasons[0]
    locations = body.get("location") or ()
    unit = ref_id(locations[-1].get("location"), "Location") if locations else None
    codes = [*codings_of(body.get("type") or ()), *reasons]
    if principal is not None:
        codes.append(principal)
    return EncounterFacts(
        id=str(body.get("id")),
        patient=ref_id(body.get("subject"), "Patient"),
        cls=cls.get("code") if isinstance(cls, Mapping) else None,
        status=body.get("status"),
        start=parse_instant(period.get("start"), zone),
        end=parse_instant(period.get("end"), zone),
        destination=destination_of([disposition]) if disposition else Destination.UNKNOWN,
        priority=_first_code(body.get("priority")),
        admit_source=_first_code(hosp.get("admitSource")),
        facility=ref_id(body.get("serviceProvider"), "Organization"),
        unit=unit,
        principal=principal,
        codes=tuple(codes),
        service_types=tuple(codings_of([body.get("serviceType")])),
        part_of=ref_id(body.get("partOf"), "Encounter"),
    )


@dataclass(frozen=True)
class Stay:
    """One inpatient stay: an admission and the transfers or continuations chained to it."""

    parts: tuple[EncounterFacts, ...]
    planned: str | None = None  # the planned rule its admission matched
    dates: tuple[date, date | None] = field(default=(date.min, None))

    @property
    def admission(self) -> EncounterFacts:
        return self.parts[0]

    @property
    def discharge(self) -> EncounterFacts:
        return self.parts[-1]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.parts)

    @property
    def start(self) -> datetime:
        assert self.parts[0].start is not None
        return self.parts[0].start

    @property
    def end(self) -> datetime | None:
        return self.parts[-1].end

    @property
    def admitted_on(self) -> date:
        return self.dates[0]

    @property
    def discharged_on(self) -> date | None:
        return self.dates[1]

    def facility(self, attribution: str = "last") -> str | None:
        part = self.parts[0] if attribution == "first" else self.parts[-1]
        return part.facility


def planned_rule(facts: EncounterFacts, config: ReadmissionConfig) -> str | None:
    """The name of the first planned-readmission rule the admission matches, or None."""
    codes = (*facts.codes, *facts.service_types)
    acute = facts.priority in config.encounters.acute_priorities
    for rule in config.planned_rules:
        if rule.elective_only and acute:
            continue
        if rule.code_set().any_match(codes):
            return rule.name
    return None


def _continues(prev: EncounterFacts, nxt: EncounterFacts, cfg: ReadmissionConfig) -> bool:
    zone = ZoneInfo(cfg.timezone)
    assert nxt.start is not None
    if prev.end is None or nxt.start < prev.end:
        return True  # overlapping: the same stay seen twice (or still in house)
    gap = (nxt.start.astimezone(zone).date() - prev.end.astimezone(zone).date()).days
    if prev.destination is Destination.ACUTE_TRANSFER and gap <= cfg.transfers.max_gap_days:
        return True
    same_day = cfg.same_day_continuation
    if not same_day.enabled or gap != 0:
        return False
    if same_day.same_facility and prev.facility != nxt.facility:
        return False
    return not (same_day.same_principal_condition and prev.principal != nxt.principal)


def chain_stays(encounters: Iterable[EncounterFacts], config: ReadmissionConfig) -> list[Stay]:
    """One patient's inpatient stays in admission order, transfers and continuations chained."""
    zone = ZoneInfo(config.timezone)
    inpatient = set(config.encounters.inpatient_classes)
    usable = sorted(
        (
            e
            for e in encounters
            if e.cls in inpatient
            and e.start is not None
            and e.status not in ("cancelled", "entered-in-error", "planned")
        ),
        key=lambda e: (e.start, e.id),
    )
    groups: list[list[EncounterFacts]] = []
    for facts in usable:
        if groups and _continues(groups[-1][-1], facts, config):
            groups[-1].append(facts)
        else:
            groups.append([facts])
    stays: list[Stay] = []
    for parts in groups:
        first, last = parts[0], parts[-1]
        assert first.start is not None
        admitted = first.start.astimezone(zone).date()
        discharged = last.end.astimezone(zone).date() if last.end is not None else None
        stays.append(Stay(tuple(parts), planned_rule(first, config), (admitted, discharged)))
    return stays


def index_ineligibility(stay: Stay, config: ReadmissionConfig) -> str | None:
    """Why ``stay`` is not an index admission (None when it is one)."""
    if stay.end is None or stay.discharge.status not in (None, "finished"):
        return "not discharged"
    if stay.discharge.destination in config.not_index_destinations:
        return stay.discharge.destination.value
    if stay.planned is not None and not config.planned_stays_are_index:
        return f"planned ({stay.planned})"
    return None


@dataclass(frozen=True)
class ReadmissionFinding:
    """An index stay and the first admission within the window after its discharge."""

    index: Stay
    readmission: Stay
    days: int
    planned: bool

    @property
    def counted(self) -> bool:
        """Counts as a 30-day readmission (unplanned)."""
        return not self.planned


def find_readmissions(stays: Sequence[Stay], config: ReadmissionConfig) -> list[ReadmissionFinding]:
    """For every index stay, its first readmission within the window (planned or not).

    Only the first admission after an index discharge can be its readmission: when that one is
    planned, a later unplanned admission in the window is not counted (rules.md R2).
    """
    found: list[ReadmissionFinding] = []
    for prev, nxt in pairwise(stays):
        discharged = prev.discharged_on
        if discharged is None or index_ineligibility(prev, config) is not None:
            continue
        days = (nxt.admitted_on - discharged).days
        if 0 <= days <= config.window_days:
            found.append(ReadmissionFinding(prev, nxt, days, nxt.planned is not None))
    return found
