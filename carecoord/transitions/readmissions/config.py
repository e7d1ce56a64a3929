"""Readmission settings (config/risk/readmissions.yaml and planned-readmissions.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from carecoord.settings import feature_config_dir
from carecoord.transitions.dispositions import Destination
from carecoord.transitions.readmissions.codematch import CodeSet, parse_token

__all__ = [
    "EncounterSettings",
    "PlannedRule",
    "ReadmissionConfig",
    "RiskConfigError",
    "load_readmission_config",
    "read_yaml",
    "validated",
]


class RiskConfigError(ValueError):
    """A risk or readmission configuration file is invalid; the message names file and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def risk_folder(config_dir: Path) -> Path:
    """``config_dir/risk``, ``config_dir`` itself when it is that folder, else the shipped one."""
    if (config_dir / "risk").is_dir():
        return config_dir / "risk"
    if any(config_dir.glob("*.yaml")):
        return config_dir
    return feature_config_dir(config_dir, "risk") / "risk"


def _tokens(values: list[str]) -> list[str]:
    for value in values:
        parse_token(value)
    return values


class PlannedRule(_Model):
    """Admissions matching ``codes`` are planned (``elective_only``: only when not acute)."""

    name: str = Field(min_length=1)
    codes: list[str] = Field(min_length=1)
    elective_only: bool = False

    _check = field_validator("codes")(_tokens)

    def code_set(self) -> CodeSet:
        return CodeSet.of(self.codes)


class TransferSettings(_Model):
    max_gap_days: int = Field(default=1, ge=0, le=7)
    attribution: Literal["first", "last"] = "last"


class ContinuationSettings(_Model):
    enabled: bool = True
    same_facility: bool = True
    same_principal_condition: bool = True


class EncounterSettings(_Model):
    inpatient_classes: list[str] = Field(default_factory=lambda: ["IMP", "ACUTE"], min_length=1)
    emergency_classes: list[str] = Field(default_factory=lambda: ["EMER"])
    acute_priorities: list[str] = Field(default_factory=lambda: ["EM", "UR", "A", "S", "CR"])
    elective_priorities: list[str] = Field(default_factory=lambda: ["EL", "R", "P", "PRN", "RR"])
    acute_admit_sources: list[str] = Field(default_factory=lambda: ["emd"])
    ed_lead_in_hours: int = Field(default=12, ge=0, le=72)


class ReadmissionConfig(_Model):
    """How stays are chained and which admissions count as 30-day readmissions."""

    timezone: str = "America/New_York"
    encounters: EncounterSettings = EncounterSettings()
    window_days: int = Field(default=30, ge=1, le=365)
    not_index_destinations: list[Destination] = Field(
        default_factory=lambda: [Destination.ACUTE_TRANSFER, Destination.AMA, Destination.EXPIRED]
    )
    planned_stays_are_index: bool = False
    transfers: TransferSettings = TransferSettings()
    same_day_continuation: ContinuationSettings = ContinuationSettings()
    planned_rules: list[PlannedRule] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


def read_yaml(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise RiskConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise RiskConfigError(f"{path}: not valid YAML: {exc}") from None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def validated(model: type[_Model] | Any, data: Any, path: Path) -> Any:
    """``model`` validated from ``data``; errors name ``path`` and the field."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RiskConfigError(f"{path}: {problems}") from None


def load_readmission_config(config_dir: Path) -> ReadmissionConfig:
    """Read ``readmissions.yaml`` (and its planned rules) from ``config_dir`` (or its ``risk/``)."""
    folder = risk_folder(config_dir)
    main = folder / "readmissions.yaml"
    data = read_yaml(main)
    if not isinstance(data, dict):
        raise RiskConfigError(f"{main}: must be a mapping")
    data = dict(data)
    rules_file = data.pop("planned_rules", None)
    risk_file = folder / "risk.yaml"
    if risk_file.exists():
        shared = read_yaml(risk_file) or {}
        if isinstance(shared, dict):
            for key in ("timezone", "encounters"):
                if key in shared:
                    data.setdefault(key, shared[key])
    rules: list[Any] = []
    rules_path = main
    if rules_file is not None:
        if not isinstance(rules_file, str):
            raise RiskConfigError(f"{main}: planned_rules: must name a file")
        rules_path = folder / rules_file
        loaded = read_yaml(rules_path)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("rules"), list):
            raise RiskConfigError(f"{rules_path}: rules: must be a list")
        rules = loaded["rules"]
        validated(_PlannedRules, {"rules": rules}, rules_path)
    config: ReadmissionConfig = validated(ReadmissionConfig, data, main)
    return config.model_copy(update={"planned_rules": [PlannedRule(**r) for r in rules]})


class _PlannedRules(_Model):
    rules: list[PlannedRule]
