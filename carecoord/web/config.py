"""The screens' configuration: ``{config_dir}/web/web.toml`` (or ``.yaml``), validated at start-up.

Every key is optional::

    time_zone = "America/New_York"        # deadlines are counted in it
    organisation = "Riverside Health"     # shown in the header
    frame_ancestors = ["https://ehr.example.org"]   # who may embed the app in an iframe
    [caseload_caps]                       # active cases per care manager, by case model code
    intensive = 20
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from carecoord.settings import ConfigError

__all__ = ["DEFAULT_CASELOAD_CAPS", "WebConfig", "load_web_config"]

#: Typical caseload ratios (rules §7): intensive/ACT 1:10-20, strengths-based 1:15-20,
#: brokerage ~1:75, care-transitions coaches 24-28.
DEFAULT_CASELOAD_CAPS: dict[str, int] = {
    "intensive": 20,
    "act": 20,
    "strengths-based": 20,
    "brokerage": 75,
    "clinical": 40,
    "integrated": 40,
    "care-transitions": 28,
}


class WebConfig(BaseModel):
    """What the screens can be configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time_zone: str = "America/New_York"
    organisation: str = Field(default="CareCoord", min_length=1, max_length=120)
    frame_ancestors: tuple[str, ...] = ()
    caseload_caps: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CASELOAD_CAPS))

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("frame_ancestors")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for origin in value:
            parts = urlsplit(origin.strip())
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"{origin!r} is not an origin like https://ehr.example.org")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r} must be an origin (scheme, host, port) only")
            out.append(f"{parts.scheme}://{parts.netloc}")
        return tuple(out)

    @field_validator("caseload_caps")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        for model, cap in value.items():
            if cap < 1:
                raise ValueError(f"{model}: a cap must be at least 1")
        return {**DEFAULT_CASELOAD_CAPS, **value}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def _read(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a table of settings")
    return data


def load_web_config(config_dir: Path) -> WebConfig:
    """The configuration in ``config_dir/web/`` (defaults when there is no file).

    Raises :class:`ConfigError` naming the file and the field.
    """
    for name in ("web.toml", "web.yaml", "web.yml"):
        path = config_dir / "web" / name
        if path.is_file():
            try:
                return WebConfig(**_read(path))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: "
                    f"{str(err['msg']).removeprefix('Value error, ')}"
                    for err in exc.errors()
                )
                raise ConfigError(f"{path}: {problems}") from exc
    return WebConfig()
