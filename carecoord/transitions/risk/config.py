"""Risk settings (config/risk/risk.yaml, Charlson mappings and weights), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from carecoord.transitions.readmissions.codematch import parse_token
from carecoord.transitions.readmissions.config import (
    EncounterSettings,
    ReadmissionConfig,
    RiskConfigError,
    load_readmission_config,
    read_yaml,
    validated,
)
from carecoord.transitions.readmissions.config import (
    risk_folder as _risk_folder,
)
from carecoord.transitions.risk.charlson import CharlsonMapping

__all__ = [
    "RiskConfig",
    "RiskConfigError",
    "load_risk_config",
    "weight_tables",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _tokens(values: list[str]) -> list[str]:
    for value in values:
        parse_token(value)
    return values


class CharlsonSettings(_Model):
    weights: str = "lace-tool"
    mappings: list[str] = Field(min_length=1)


class LaceBands(_Model):
    """Lowest LACE score of each band above low."""

    moderate: int = Field(default=5, ge=1, le=19)
    high: int = Field(default=10, ge=1, le=19)


class HospitalBands(_Model):
    """Lowest HOSPITAL score of each band above low."""

    intermediate: int = Field(default=5, ge=1, le=13)
    high: int = Field(default=7, ge=1, le=13)


class LaceSettings(_Model):
    ed_lookback_months: int = Field(default=6, ge=1, le=24)
    bands: LaceBands = LaceBands()


class HospitalSettings(_Model):
    admissions_lookback_months: int = Field(default=12, ge=1, le=36)
    oncology_services: list[str] = Field(default_factory=list)
    haemoglobin_codes: list[str] = Field(default_factory=lambda: ["http://loinc.org|718-7"])
    sodium_codes: list[str] = Field(default_factory=lambda: ["http://loinc.org|2951-2"])
    bands: HospitalBands = HospitalBands()

    _check = field_validator("oncology_services", "haemoglobin_codes", "sodium_codes")(_tokens)


class _RiskFile(_Model):
    timezone: str = "America/New_York"
    encounters: EncounterSettings = EncounterSettings()
    charlson: CharlsonSettings
    lace: LaceSettings = LaceSettings()
    hospital: HospitalSettings = HospitalSettings()
    combine: Literal["max", "lace", "hospital"] = "max"
    hospital_intermediate_as: Literal["low", "moderate", "high"] = "moderate"


class _MappingFile(_Model):
    source: str | None = None
    match: Literal["prefix", "exact"]
    systems: list[str] = Field(min_length=1)
    categories: dict[str, list[str]]
    exclude: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("categories", "exclude", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [str(c) for c in v] if isinstance(v, list) else v for k, v in value.items()}
        return value


class _WeightsFile(_Model):
    hierarchy: list[tuple[str, str]] = Field(default_factory=list)
    tables: dict[str, dict[str, int]]


class RiskConfig(_Model):
    """Everything the risk scores and readmission detection are configured with."""

    timezone: str
    encounters: EncounterSettings
    lace: LaceSettings
    hospital: HospitalSettings
    combine: Literal["max", "lace", "hospital"]
    hospital_intermediate_as: Literal["low", "moderate", "high"]
    weights_name: str
    weights: dict[str, int]
    hierarchy: list[tuple[str, str]]
    mappings: list[CharlsonMapping]
    readmissions: ReadmissionConfig
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def with_weights(self, name: str, weights: dict[str, int]) -> RiskConfig:
        """A copy scoring Charlson with another weight table."""
        return self.model_copy(update={"weights_name": name, "weights": weights})


def load_risk_config(config_dir: Path) -> RiskConfig:
    """Load and validate the risk settings from ``config_dir`` (or its ``risk/`` folder).

    Raises :class:`RiskConfigError` naming the file and the field on any invalid value.
    """
    folder = _risk_folder(config_dir)
    main = folder / "risk.yaml"
    settings: _RiskFile = validated(_RiskFile, read_yaml(main), main)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(settings.timezone)
    except Exception:
        raise RiskConfigError(f"{main}: timezone: unknown time zone") from None
    weights_path = folder / "charlson-weights.yaml"
    weights_file: _WeightsFile = validated(_WeightsFile, read_yaml(weights_path), weights_path)
    if settings.charlson.weights not in weights_file.tables:
        raise RiskConfigError(
            f"{main}: charlson.weights: {settings.charlson.weights!r} is not a table of "
            f"{weights_path.name} ({', '.join(sorted(weights_file.tables))})"
        )
    mappings: list[CharlsonMapping] = []
    known: set[str] = set()
    for name in settings.charlson.mappings:
        path = folder / name
        mapping: _MappingFile = validated(_MappingFile, read_yaml(path), path)
        known |= set(mapping.categories)
        unknown = set(mapping.exclude) - set(mapping.categories)
        if unknown:
            raise RiskConfigError(f"{path}: exclude: unknown category {sorted(unknown)[0]!r}")
        mappings.append(
            CharlsonMapping(
                systems=frozenset(mapping.systems),
                prefix=mapping.match == "prefix",
                categories={k: tuple(v) for k, v in mapping.categories.items()},
                exclude={k: tuple(v) for k, v in mapping.exclude.items()},
            )
        )
    for table, weights in weights_file.tables.items():
        unknown = set(weights) - known
        if unknown:
            raise RiskConfigError(
                f"{weights_path}: tables.{table}: unknown category {sorted(unknown)[0]!r}"
            )
    readmissions = load_readmission_config(folder)
    return RiskConfig(
        timezone=settings.timezone,
        encounters=settings.encounters,
        lace=settings.lace,
        hospital=settings.hospital,
        combine=settings.combine,
        hospital_intermediate_as=settings.hospital_intermediate_as,
        weights_name=settings.charlson.weights,
        weights=weights_file.tables[settings.charlson.weights],
        hierarchy=weights_file.hierarchy,
        mappings=mappings,
        readmissions=readmissions,
    )


def weight_tables(config_dir: Path) -> dict[str, dict[str, int]]:
    """Every weight table of ``charlson-weights.yaml`` (to score with another one)."""
    folder = _risk_folder(config_dir)
    path = folder / "charlson-weights.yaml"
    loaded: _WeightsFile = validated(_WeightsFile, read_yaml(path), path)
    return loaded.tables
