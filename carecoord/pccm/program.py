"""PCCM program configuration: pydantic models of ``config/pccm/*.yaml`` and their loader."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from carecoord.settings import ConfigError

__all__ = [
    "PCCM_SUBDIR",
    "EffectiveDateRule",
    "Membership",
    "PanelCaps",
    "Program",
    "RuleKind",
    "ServedBy",
    "SpecialNeed",
    "effective_date",
    "load_program_file",
    "load_programs",
    "months_after",
]

#: Programs live in ``{config_dir}/pccm/*.yaml``.
PCCM_SUBDIR = "pccm"


class RuleKind(StrEnum):
    """The assignment criteria a program orders."""

    EXISTING_ASSIGNMENT = "existing-assignment"
    OWN_HISTORY = "own-history"
    FAMILY_PCP = "family-pcp"
    FAMILY_HISTORY = "family-history"
    DISTANCE = "distance"
    SPECIAL_NEEDS = "special-needs"
    LANGUAGE = "language"


Sex = Literal["male", "female", "other", "unknown"]
_ALL_SEXES: tuple[Sex, ...] = ("male", "female", "other", "unknown")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Membership(_Model):
    """Which members belong: an active Coverage whose ``class`` has this type and value."""

    class_type: str = Field(default="plan", description="Coverage.class.type code, e.g. plan.")
    class_values: list[str] = Field(min_length=1, description="Coverage.class.value values.")


class PanelCaps(_Model):
    """Most members per PCP and per practice; pending assignments count."""

    per_pcp: int = Field(default=2500, ge=1)
    per_practice: int | None = Field(default=None, ge=1)


class ServedBy(_Model):
    """Ages and sexes a specialty serves (inclusive ages in whole years)."""

    pcp_type: str = Field(min_length=1, description="A label: general, pediatrics, obgyn ...")
    min_age: int = Field(default=0, ge=0, le=130)
    max_age: int = Field(default=130, ge=0, le=130)
    sexes: list[Sex] = Field(default_factory=lambda: list(_ALL_SEXES))

    @model_validator(mode="after")
    def _ages_ordered(self) -> ServedBy:
        if self.min_age > self.max_age:
            raise ValueError("min_age is above max_age")
        return self


class SpecialNeed(_Model):
    """Members in this group prefer PCPs of these types (e.g. children -> pediatrics)."""

    name: str = Field(min_length=1)
    min_age: int = Field(default=0, ge=0)
    max_age: int = Field(default=130, ge=0)
    sexes: list[Sex] | None = None
    prefer_types: list[str] = Field(min_length=1)


class EffectiveDateRule(StrEnum):
    """When an assignment takes effect, from the day it is decided."""

    FIRST_OF_NEXT_MONTH = "first-of-next-month"
    NEXT_DAY = "next-day"
    SAME_DAY = "same-day"


class Program(_Model):
    """One state PCCM program: who belongs, how PCPs are chosen, and the member's rights."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = ""
    membership: Membership
    rules: list[RuleKind] = Field(min_length=1, description="Assignment criteria, in order.")
    distance_miles: float = Field(default=30.0, gt=0, description="Time/distance standard.")
    history_months: int = Field(default=24, ge=1, le=60, description="Look-back of visits.")
    min_history_visits: int = Field(default=1, ge=1)
    caps: PanelCaps = Field(default_factory=PanelCaps)
    specialties: dict[str, ServedBy] = Field(
        min_length=1, description="PractitionerRole.specialty code -> ages/sexes served."
    )
    special_needs: list[SpecialNeed] = Field(default_factory=list)
    accepting_when_unstated: bool = Field(
        default=False,
        description="Treat a PractitionerRole without the newpatients extension "
        "as accepting new patients.",
    )
    choice_window_days: int = Field(default=90, ge=0)
    annual_opportunity_months: int = Field(default=12, ge=1)
    reenrolment_gap_months: int = Field(default=2, ge=0)
    effective_date: EffectiveDateRule = EffectiveDateRule.FIRST_OF_NEXT_MONTH
    establish_care_due_days: int = Field(default=30, ge=1)
    notice_language: str = "en"

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        if len(set(self.rules)) != len(self.rules):
            raise ValueError("rules: a criterion appears twice")
        types = {s.pcp_type for s in self.specialties.values()}
        for i, need in enumerate(self.special_needs):
            unknown = [t for t in need.prefer_types if t not in types]
            if unknown:
                raise ValueError(
                    f"special_needs[{i}].prefer_types: {unknown[0]!r} is not the pcp_type of "
                    "any specialty"
                )
        return self


def months_after(day: date, months: int) -> date:
    total = day.year * 12 + (day.month - 1) + months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def effective_date(rule: EffectiveDateRule, decided: date) -> date:
    """The day an assignment decided on ``decided`` takes effect."""
    if rule is EffectiveDateRule.SAME_DAY:
        return decided
    if rule is EffectiveDateRule.NEXT_DAY:
        return decided + timedelta(days=1)
    return months_after(decided.replace(day=1), 1)


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ""
        for p in err["loc"]:
            loc += f"[{p}]" if isinstance(p, int) else (f".{p}" if loc else str(p))
        parts.append(f"{loc or '(root)'}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def load_program_file(path: Path) -> Program:
    """One program file; :class:`ConfigError` names the file and the field."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: (root): a mapping of program settings is expected")
    try:
        return Program(**{"name": path.stem, **data})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from exc


def load_programs(config_dir: Path) -> dict[str, Program]:
    """Every program in ``config_dir/pccm/*.yaml`` by name (none when the folder is absent)."""
    folder = config_dir / PCCM_SUBDIR
    if not folder.is_dir():
        return {}
    programs: dict[str, Program] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        program = load_program_file(path)
        if program.name in programs:
            raise ConfigError(f"{path}: name: program {program.name!r} is defined twice")
        programs[program.name] = program
    return programs
