"""What a pull fetches: the resource types, how each is tied to the population, in which order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_TYPES",
    "PATIENT_TYPES",
    "REFERENCED_TYPES",
    "TypePlan",
    "plan_for",
]


@dataclass(frozen=True, slots=True)
class TypePlan:
    """How one type is searched: by the population's patients (``patient_param``) or, for types
    outside the patient compartment, by the ids other pulled resources refer to (``_id``)."""

    res_type: str
    patient_param: str | None
    fixed: tuple[tuple[str, str], ...] = ()

    @property
    def by_patient(self) -> bool:
        return self.patient_param is not None


#: Types searched per patient of the population, in pull order (Patient first).
PATIENT_TYPES: Final[tuple[TypePlan, ...]] = (
    TypePlan("Patient", "_id"),
    TypePlan("Encounter", "patient"),
    TypePlan("Condition", "patient"),
    TypePlan("Observation", "patient", (("category", "laboratory"),)),
    TypePlan("Procedure", "patient"),
    TypePlan("Coverage", "patient"),
    TypePlan("Appointment", "patient"),
    TypePlan("RelatedPerson", "patient"),
)

#: Types fetched because pulled resources refer to them, in an order where each type's referrers
#: come first (PractitionerRole names a Practitioner, a Location and an Organization; a Location
#: names its Organization).
REFERENCED_TYPES: Final[tuple[TypePlan, ...]] = (
    TypePlan("PractitionerRole", None),
    TypePlan("Practitioner", None),
    TypePlan("Location", None),
    TypePlan("Organization", None),
)

_ALL: Final = {p.res_type: p for p in (*PATIENT_TYPES, *REFERENCED_TYPES)}

#: Every type a pull fetches unless the configuration says otherwise.
DEFAULT_TYPES: Final[tuple[str, ...]] = tuple(_ALL)


def plan_for(types: tuple[str, ...] | list[str]) -> tuple[TypePlan, ...]:
    """The plans of ``types`` in pull order (patient types, then referenced types)."""
    unknown = sorted(set(types) - set(_ALL))
    if unknown:
        raise ValueError(f"cannot pull {', '.join(unknown)} (known: {', '.join(DEFAULT_TYPES)})")
    wanted = set(types)
    return tuple(p for p in _ALL.values() if p.res_type in wanted)
