"""LACE index and HOSPITAL score (rules.md §4): points per component, totals and bands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Band",
    "Component",
    "HospitalInputs",
    "LaceInputs",
    "ScoreResult",
    "combine_bands",
    "hospital_band",
    "lace_band",
    "lace_charlson_points",
    "lace_ed_points",
    "lace_los_points",
    "score_hospital",
    "score_lace",
]

Band = Literal["low", "moderate", "high"]
_ORDER: dict[str, int] = {"low": 0, "moderate": 1, "intermediate": 1, "high": 2}


@dataclass(frozen=True)
class Component:
    """One scored component: its code, what it measures, the value used and the points."""

    code: str
    label: str
    value: int | float | bool | str | None
    points: int

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "points": self.points}


@dataclass(frozen=True)
class ScoreResult:
    """A score with its band, component breakdown and the inputs that were missing."""

    method: str
    score: int
    band: str
    components: tuple[Component, ...]
    missing: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "band": self.band,
            "components": {c.code: c.as_json() for c in self.components},
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class LaceInputs:
    """LACE inputs; ``acute`` None means unknown (scored 0 and reported missing)."""

    los_days: int
    acute: bool | None
    charlson: int
    ed_visits: int
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class HospitalInputs:
    """HOSPITAL inputs; None labs or service mean missing (scored 0 and reported missing)."""

    haemoglobin_g_dl: float | None
    oncology_service: bool | None
    sodium_mmol_l: float | None
    procedure: bool
    urgent: bool | None
    prior_admissions: int
    los_days: int
    missing: tuple[str, ...] = ()


def lace_los_points(days: int) -> int:
    if days < 1:
        return 0
    if days <= 3:
        return days
    if days <= 6:
        return 4
    if days <= 13:
        return 5
    return 7


def lace_charlson_points(charlson: int) -> int:
    return charlson if charlson <= 3 else 5


def lace_ed_points(visits: int) -> int:
    return min(visits, 4)


def lace_band(score: int, moderate: int = 5, high: int = 10) -> str:
    return "high" if score >= high else "moderate" if score >= moderate else "low"


def hospital_band(score: int, intermediate: int = 5, high: int = 7) -> str:
    return "high" if score >= high else "intermediate" if score >= intermediate else "low"


def score_lace(inputs: LaceInputs, *, moderate: int = 5, high: int = 10) -> ScoreResult:
    """LACE index 0-19 (van Walraven 2010)."""
    missing = list(inputs.missing)
    if inputs.acute is None:
        missing.append("admission acuity")
    components = (
        Component("L", "length of stay (days)", inputs.los_days, lace_los_points(inputs.los_days)),
        Component("A", "acute (emergent) admission", inputs.acute, 3 if inputs.acute else 0),
        Component(
            "C",
            "Charlson comorbidity score",
            inputs.charlson,
            lace_charlson_points(inputs.charlson),
        ),
        Component(
            "E",
            "ED visits in the 6 months before",
            inputs.ed_visits,
            lace_ed_points(inputs.ed_visits),
        ),
    )
    total = sum(c.points for c in components)
    return ScoreResult("LACE", total, lace_band(total, moderate, high), components, tuple(missing))


def _prior_points(admissions: int) -> int:
    return 0 if admissions <= 1 else 2 if admissions <= 5 else 5


def score_hospital(inputs: HospitalInputs, *, intermediate: int = 5, high: int = 7) -> ScoreResult:
    """HOSPITAL score 0-13 (Donzé 2013)."""
    missing = list(inputs.missing)
    hb, na = inputs.haemoglobin_g_dl, inputs.sodium_mmol_l
    if hb is None:
        missing.append("haemoglobin at discharge")
    if inputs.oncology_service is None:
        missing.append("discharging service")
    if na is None:
        missing.append("sodium at discharge")
    if inputs.urgent is None:
        missing.append("admission acuity")
    components = (
        Component(
            "H", "haemoglobin < 12 g/dL at discharge", hb, 1 if hb is not None and hb < 12 else 0
        ),
        Component(
            "O",
            "discharged from oncology",
            inputs.oncology_service,
            2 if inputs.oncology_service else 0,
        ),
        Component(
            "S", "sodium < 135 mmol/L at discharge", na, 1 if na is not None and na < 135 else 0
        ),
        Component("P", "procedure during the stay", inputs.procedure, 1 if inputs.procedure else 0),
        Component("I", "urgent or emergent admission", inputs.urgent, 1 if inputs.urgent else 0),
        Component(
            "A",
            "admissions in the previous 12 months",
            inputs.prior_admissions,
            _prior_points(inputs.prior_admissions),
        ),
        Component(
            "L", "length of stay >= 5 days", inputs.los_days, 2 if inputs.los_days >= 5 else 0
        ),
    )
    total = sum(c.points for c in components)
    band = hospital_band(total, intermediate, high)
    return ScoreResult("HOSPITAL", total, band, components, tuple(missing))


def combine_bands(
    lace: str, hospital: str, *, how: str = "max", intermediate_as: Band = "moderate"
) -> Band:
    """The one band of a discharge: the higher of the two (``max``) or one score's alone."""
    mapped: Band
    hosp: Band = intermediate_as if hospital == "intermediate" else hospital  # type: ignore[assignment]
    lace_band_: Band = lace  # type: ignore[assignment]
    if how == "lace":
        mapped = lace_band_
    elif how == "hospital":
        mapped = hosp
    else:
        mapped = max(lace_band_, hosp, key=lambda b: _ORDER[b])
    return mapped
