"""Case outcomes per model and case manager: goals, phase times, contacts, readmissions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from carecoord.cases.phases import Phase

__all__ = ["CaseRecord", "OutcomeRow", "readmissions_during", "summarize"]

_ACHIEVED = frozenset({"achieved", "sustaining"})
_COUNTED_GOALS = frozenset({"accepted", "active", "on-hold", "completed"})
READMISSION_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """One case as plain values (built by the service from the store)."""

    case_id: str
    model: str
    manager: str
    phases: Sequence[tuple[Phase, datetime, datetime | None]]
    goals: Sequence[tuple[str, str | None]] = ()  # (lifecycleStatus, achievement code)
    contacts: int = 0
    expected_contacts: int = 0
    readmissions: int = 0
    closure_reason: str | None = None


@dataclass
class OutcomeRow:
    """Aggregated outcomes of one (model, case manager) group; manager ``*`` = every manager."""

    model: str
    care_manager: str
    cases: int = 0
    open: int = 0
    closed: int = 0
    goals: int = 0
    goals_achieved: int = 0
    contacts: int = 0
    expected_contacts: int = 0
    readmissions: int = 0
    closure_reasons: dict[str, int] = field(default_factory=dict)
    _phase_days: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def goal_attainment(self) -> float | None:
        return round(self.goals_achieved / self.goals, 3) if self.goals else None

    @property
    def contact_ratio(self) -> float | None:
        return round(self.contacts / self.expected_contacts, 3) if self.expected_contacts else None

    @property
    def mean_days_in_phase(self) -> dict[str, float]:
        return {p: round(sum(d) / len(d), 2) for p, d in self._phase_days.items() if d}

    def add(self, case: CaseRecord, now: datetime) -> None:
        self.cases += 1
        closed = bool(case.phases) and case.phases[-1][0] == Phase.CLOSURE
        self.closed += closed
        self.open += not closed
        for lifecycle, achievement in case.goals:
            if lifecycle in _COUNTED_GOALS:
                self.goals += 1
                self.goals_achieved += achievement in _ACHIEVED
        self.contacts += case.contacts
        self.expected_contacts += case.expected_contacts
        self.readmissions += case.readmissions
        if case.closure_reason:
            self.closure_reasons[case.closure_reason] = (
                self.closure_reasons.get(case.closure_reason, 0) + 1
            )
        for phase, start, end in case.phases:
            if phase == Phase.CLOSURE:
                continue
            days = ((end or now) - start).total_seconds() / 86400
            self._phase_days.setdefault(phase.value, []).append(days)

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "careManager": self.care_manager,
            "cases": self.cases,
            "open": self.open,
            "closed": self.closed,
            "goals": self.goals,
            "goalsAchieved": self.goals_achieved,
            "goalAttainment": self.goal_attainment,
            "meanDaysInPhase": self.mean_days_in_phase,
            "contacts": self.contacts,
            "expectedContacts": self.expected_contacts,
            "contactRatio": self.contact_ratio,
            "readmissions": self.readmissions,
            "closureReasons": dict(sorted(self.closure_reasons.items())),
        }


def readmissions_during(
    stays: Iterable[tuple[datetime, datetime | None]], start: datetime, end: datetime | None
) -> int:
    """Inpatient admissions within the case period that follow an earlier discharge by <= 30 days.

    ``stays`` are the client's inpatient (admitted, discharged) periods.
    """
    ordered = sorted(stays, key=lambda s: s[0])
    count = 0
    for i, (admitted, _) in enumerate(ordered):
        if admitted < start or (end is not None and admitted > end):
            continue
        if any(
            discharged is not None
            and discharged <= admitted
            and admitted - discharged <= READMISSION_WINDOW
            for _, discharged in ordered[:i]
        ):
            count += 1
    return count


def summarize(cases: Iterable[CaseRecord], now: datetime) -> list[OutcomeRow]:
    """One row per (model, case manager) and one per model over all its managers (``*``)."""
    rows: dict[tuple[str, str], OutcomeRow] = {}
    for case in cases:
        for key in ((case.model, case.manager), (case.model, "*")):
            row = rows.get(key)
            if row is None:
                row = rows[key] = OutcomeRow(model=key[0], care_manager=key[1])
            row.add(case, now)
    return [rows[k] for k in sorted(rows)]
