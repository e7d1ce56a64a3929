"""Caseloads: weighted load per case manager, least-loaded choice, caps and overrides."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CapExceeded",
    "ManagerLoad",
    "NoEligibleManager",
    "check_cap",
    "choose_manager",
    "loads",
]


class CapExceeded(ValueError):
    """Assigning the case would put the case manager above their cap, and no override was given."""


class NoEligibleManager(ValueError):
    """No case manager of an eligible role exists for the case."""


@dataclass(frozen=True, slots=True)
class ManagerLoad:
    """One case manager's current weighted load and cap."""

    manager: str  # Practitioner/id
    load: float
    cap: float
    cases: int = 0

    @property
    def above_cap(self) -> bool:
        return self.load > self.cap

    def fits(self, weight: float) -> bool:
        return self.load + weight <= self.cap + 1e-9


def loads(cases: Iterable[tuple[str, float]]) -> dict[str, tuple[float, int]]:
    """Sum of weights and number of open cases per case manager, from (manager, weight) pairs."""
    out: dict[str, tuple[float, int]] = {}
    for manager, weight in cases:
        load, count = out.get(manager, (0.0, 0))
        out[manager] = (load + weight, count + 1)
    return out


def choose_manager(candidates: Sequence[ManagerLoad], weight: float) -> ManagerLoad:
    """The least-loaded candidate (by load relative to cap, then load, then id) the case fits.

    Raises :class:`CapExceeded` when the case fits nobody, :class:`NoEligibleManager` when there is
    nobody at all.
    """
    if not candidates:
        raise NoEligibleManager("no eligible case manager")
    fitting = [c for c in candidates if c.fits(weight)]
    if not fitting:
        raise CapExceeded("every eligible case manager is at their cap")
    return min(fitting, key=lambda c: (c.load / c.cap, c.load, c.manager))


def check_cap(current: ManagerLoad, weight: float, override_reason: str | None) -> bool:
    """True when the assignment goes over the cap (allowed only with an override reason)."""
    if current.fits(weight):
        return False
    if override_reason and override_reason.strip():
        return True
    raise CapExceeded(
        f"{current.manager} would carry {current.load + weight:g} of a cap of {current.cap:g} "
        "units; give an override reason to assign anyway"
    )
