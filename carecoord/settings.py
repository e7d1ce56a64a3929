"""Service settings from ``CARECOORD_*`` environment variables and an optional TOML file.

Nothing is read at import time: call :func:`load_settings` (the CLI and ``create_app`` do).
The TOML file is named by ``CARECOORD_CONFIG_FILE`` (or ``--config`` on the CLI); environment
variables override it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings"]


#: The configuration shipped with CareCoord (the project's ``config/``): the defaults of a
#: feature whose folder a deployment's configuration directory does not have.
SHIPPED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def feature_config_dir(config_dir: Path, feature: str) -> Path:
    """The directory holding ``feature/``: ``config_dir`` when it has that folder (or when no
    default is shipped), else the shipped configuration."""
    if (Path(config_dir) / feature).is_dir() or not (SHIPPED_CONFIG_DIR / feature).is_dir():
        return Path(config_dir)
    return SHIPPED_CONFIG_DIR


class ConfigError(Exception):
    """A configuration file or variable is invalid; the message names the file and field."""


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "carecoord"


class Settings(BaseSettings):
    """Everything the service can be configured with."""

    model_config = SettingsConfigDict(env_prefix="CARECOORD_", extra="forbid")

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Folder for the SQLite file."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file carecoord.db in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname",
    )
    base_url: str | None = Field(
        default=None,
        description="Public base URL of the FHIR API (e.g. https://cc.example.org/fhir); "
        "default: taken from each request.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Larger bodies get 413."
    )
    max_json_depth: int = Field(default=64, ge=8, le=1000, description="Deeper JSON gets 400.")
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    max_include: int = Field(
        default=1000, ge=0, description="Most resources added by _include/_revinclude."
    )
    db_pool_size: int = Field(default=10, ge=1)
    write_retries: int = Field(
        default=8, ge=0, description="Retries of a write on a serialization conflict."
    )
    group_commit: bool = Field(
        default=True,
        description="SQLite: concurrent writes share one transaction, each in its own savepoint.",
    )
    log_level: str = "INFO"

    # -- SMART on FHIR and access control ---------------------------------------------------------
    public_url: str | None = Field(
        default=None,
        description="External base URL of the service (e.g. https://cc.example.org), used for "
        "OAuth redirect URIs, the token endpoint and JWT audiences; default: taken from each "
        "request.",
    )
    config_dir: Path = Field(
        default=Path("config"),
        description="Folder of deployable configuration (EHR connections under ehr/).",
    )
    keys_dir: Path | None = Field(
        default=None,
        description="Folder of the service's private signing keys (JWKS); default: data_dir/keys.",
    )
    audit_journal_dir: Path | None = Field(
        default=None,
        description="Folder of the audit journals (reads are recorded there before they are "
        "answered, then stored as AuditEvents); default: data_dir/audit-journal. Keep it on a "
        "local disk that survives restarts.",
    )
    audit_store_process: bool = Field(
        default=True,
        description="Store the audit journal from a process of its own instead of a thread of "
        "the server, so that storing does not compete with requests for the interpreter lock "
        "(ignored for an in-memory SQLite database).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts tokens at rest and signs session cookies; default: a key "
        "generated once into data_dir/secret.key (mode 0600).",
    )
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, description="Browser session life.")
    access_token_ttl_seconds: int = Field(
        default=300, ge=30, le=3600, description="Life of access tokens this service issues."
    )
    run_worker_in_process: bool = Field(
        default=True,
        description="Run one job worker thread inside the server (keep true on SQLite); on "
        "PostgreSQL set false to leave the queue to `carecoord worker` processes.",
    )
    auth_required: bool = Field(
        default=True,
        description="Authenticate every /fhir request (turn off only for local experiments).",
    )

    @property
    def effective_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def effective_audit_journal_dir(self) -> Path:
        return self.audit_journal_dir or self.data_dir / "audit-journal"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'carecoord.db'}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: TOML file (if any) < environment < explicit overrides.

    Raises :class:`ConfigError` naming the file and field on any invalid value.
    """
    path = config_file or (
        Path(os.environ["CARECOORD_CONFIG_FILE"])
        if os.environ.get("CARECOORD_CONFIG_FILE")
        else None
    )
    file_values: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        file_values = data.get("carecoord", data)
        if not isinstance(file_values, dict):
            raise ConfigError(f"{path}: [carecoord] must be a table")
    # Keyword arguments outrank the environment in pydantic-settings, so drop file values that the
    # environment sets: the documented order is file < environment < explicit overrides.
    merged = {k: v for k, v in file_values.items() if f"CARECOORD_{k.upper()}" not in os.environ}
    merged.update(overrides)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc
