"""Sync settings per EHR connection, from the optional ``config/sync/sync.toml`` (or ``.yaml``).

The file has a ``[defaults]`` table and one ``[connections.NAME]`` table per connection that
differs; every key is optional. Populations are listed per connection::

    [defaults]
    overlap_seconds = 300
    max_in_flight = 5

    [connections.epic-prod]
    types = ["Patient", "Encounter", "Condition"]
    populations = [
      { name = "discharges", group = "e3Yx-group-id" },
      { name = "open-cases", open_cases = true },
      { name = "pilot", patients = ["eAB3", "eXy9"] },
    ]

Errors name the file and the field (:class:`SyncConfigError`).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carecoord.sync.errors import SyncConfigError
from carecoord.sync.plan import DEFAULT_TYPES, plan_for

__all__ = [
    "OPEN_CASES",
    "ConnectionSync",
    "Population",
    "PopulationConfig",
    "SyncConfig",
    "load_sync_config",
    "parse_population",
]

SYNC_SUBDIR = "sync"
OPEN_CASES = "open-cases"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"

PopulationKind = Literal["group", "patients", "open-cases"]


@dataclass(frozen=True, slots=True)
class Population:
    """Whose data a pull fetches: a Group at the EHR, a list of EHR patient ids, or the local
    patients with an active or waitlisted EpisodeOfCare. ``key`` names its checkpoints."""

    key: str
    kind: PopulationKind
    group: str | None = None
    patients: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.key


def _check_id(value: str, what: str) -> str:
    if not _FHIR_ID.match(value):
        raise ValueError(f"{what} must be a FHIR id (letters, digits, '-', '.'; at most 64)")
    return value


def _patients_key(ids: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()[:16]
    return f"patients:{digest}"


def parse_population(spec: str, configured: Mapping[str, Population] | None = None) -> Population:
    """``open-cases``, ``group:ID``, ``patients:ID,ID,...`` or a configured population's name."""
    spec = spec.strip()
    if configured and spec in configured:
        return configured[spec]
    if spec == OPEN_CASES:
        return Population(OPEN_CASES, "open-cases")
    kind, sep, rest = spec.partition(":")
    try:
        if sep and kind == "group":
            return Population(f"group:{_check_id(rest, 'the Group id')}", "group", group=rest)
        if sep and kind == "patients":
            ids = tuple(sorted({_check_id(p.strip(), "a patient id") for p in rest.split(",")}))
            return Population(_patients_key(ids), "patients", patients=ids)
    except ValueError as exc:
        raise SyncConfigError(f"population {kind}: {exc}") from None
    raise SyncConfigError(
        "a population is 'open-cases', 'group:ID', 'patients:ID,ID' or a configured name"
    )


class PopulationConfig(BaseModel):
    """One named population of a connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME)
    group: str | None = None
    patients: tuple[str, ...] | None = None
    open_cases: bool = False

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else _check_id(value, "group")

    @field_validator("patients")
    @classmethod
    def _patients(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one patient id")
        return tuple(sorted({_check_id(v, "every patient id") for v in value}))

    @model_validator(mode="after")
    def _one_kind(self) -> PopulationConfig:
        kinds = [self.group is not None, self.patients is not None, self.open_cases]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of group, patients or open_cases = true")
        return self

    def population(self) -> Population:
        if self.group is not None:
            return Population(self.name, "group", group=self.group)
        if self.patients is not None:
            return Population(self.name, "patients", patients=self.patients)
        return Population(self.name, "open-cases")


class ConnectionSync(BaseModel):
    """How CareCoord syncs with one connection (defaults suit a production EHR)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overlap_seconds: float = Field(
        default=300.0, ge=0, description="How far before the checkpoint each search reaches."
    )
    max_in_flight: int = Field(default=5, ge=1, le=64, description="Concurrent requests.")
    stream_concurrency: int = Field(
        default=3, ge=1, le=16, description="Patient types pulled side by side."
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="_count of each search.")
    ids_per_search: int = Field(
        default=50, ge=1, le=500, description="Patient or resource ids per search (comma list)."
    )
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries of 429/5xx/timeouts.")
    max_retry_wait_seconds: float = Field(
        default=120.0, ge=0, description="Longest Retry-After honoured in place; longer: give up."
    )
    backoff_base_seconds: float = Field(default=1.0, ge=0, description="First retry delay.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per request.")
    circuit_failures: int = Field(
        default=5, ge=1, description="Consecutive temporary failures that open the circuit."
    )
    circuit_cooldown_seconds: float = Field(
        default=60.0, ge=0, description="How long an open circuit fails fast before a probe."
    )
    types: tuple[str, ...] = DEFAULT_TYPES
    populations: tuple[PopulationConfig, ...] = ()

    @field_validator("types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        plan_for(value)
        if "Patient" not in value:
            raise ValueError("must include Patient")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ConnectionSync:
        names = [p.name for p in self.populations]
        if len(names) != len(set(names)):
            raise ValueError("population names must be unique")
        return self

    def named_populations(self) -> dict[str, Population]:
        return {p.name: p.population() for p in self.populations}

    def default_populations(self) -> list[Population]:
        """The configured populations, else the patients with open cases."""
        return list(self.named_populations().values()) or [Population(OPEN_CASES, "open-cases")]


class SyncConfig:
    """Defaults and per-connection settings (missing connections get the defaults)."""

    def __init__(
        self,
        defaults: Mapping[str, Any] | None = None,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: str = "sync configuration",
    ) -> None:
        self._defaults = dict(defaults or {})
        self._source = source
        self._connections: dict[str, ConnectionSync] = {}
        self.default = _model(self._defaults, source, "defaults.")
        for name, values in (connections or {}).items():
            if not re.match(_NAME, str(name)):
                raise SyncConfigError(f"{source}: connections.{name}: not a connection name")
            if not isinstance(values, Mapping):
                raise SyncConfigError(f"{source}: connections.{name}: must be a table")
            self._connections[str(name)] = _model(
                {**self._defaults, **values}, source, f"connections.{name}."
            )

    def for_connection(self, name: str) -> ConnectionSync:
        return self._connections.get(name, self.default)

    @property
    def configured(self) -> tuple[str, ...]:
        """Connections with their own table."""
        return tuple(sorted(self._connections))


def _model(values: Mapping[str, Any], source: str, prefix: str) -> ConnectionSync:
    try:
        return ConnectionSync(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{'.'.join(str(p) for p in e['loc'])}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise SyncConfigError(f"{source}: {problems}") from None


def _read(path: Path) -> Any:
    try:
        if path.suffix == ".toml":
            with path.open("rb") as fh:
                return tomllib.load(fh)
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SyncConfigError(f"{path}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise SyncConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise SyncConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def load_sync_config(config_dir: Path) -> SyncConfig:
    """``config_dir/sync/sync.toml`` (or ``sync.yaml``/``sync.yml``); defaults when absent."""
    folder = config_dir / SYNC_SUBDIR
    for name in ("sync.toml", "sync.yaml", "sync.yml"):
        path = folder / name
        if path.is_file():
            data = _read(path) or {}
            if not isinstance(data, dict):
                raise SyncConfigError(f"{path}: must be a table")
            extra = sorted(set(data) - {"defaults", "connections"})
            if extra:
                raise SyncConfigError(f"{path}: {extra[0]}: unknown table (defaults, connections)")
            defaults = data.get("defaults") or {}
            connections = data.get("connections") or {}
            if not isinstance(defaults, dict) or not isinstance(connections, dict):
                raise SyncConfigError(f"{path}: defaults and connections must be tables")
            return SyncConfig(defaults, connections, source=str(path))
    return SyncConfig()
