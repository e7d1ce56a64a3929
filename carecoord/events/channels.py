"""Subscription notification channels: ``config/notifications/<channel>.toml``, one per file.

A channel is where one EHR posts its notifications (``/notifications/subscription/<channel>``).
Without a file a channel takes any registered client's Bearer token, writes with that token's
scopes and names the EHR connection of its fetches after itself. A file can restrict the clients,
name the connection, choose the types written from full-resource notifications, and allow a
shared secret in a header for EHRs that cannot get a token (``Subscription.channel.header``):
the secret itself lives in the environment variable the file names, never in the file.
"""

from __future__ import annotations

import hmac
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.settings import ConfigError
from carecoord.smart.scopes import parse_scopes

__all__ = ["CHANNEL_NAME", "NOTIFICATIONS_SUBDIR", "Channel", "load_channels"]

NOTIFICATIONS_SUBDIR: Final = "notifications"
#: Channel names: they appear in URLs, event sources and connection names.
CHANNEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MIN_SECRET: Final = 32


class Channel(BaseModel):
    """One notification channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The channel's name (the file's stem).")
    connection: str | None = Field(
        default=None,
        description="EHR connection the sync engine fetches id-only resources from; default: "
        "the channel's name.",
    )
    clients: tuple[str, ...] = Field(
        default=(),
        description="Registered client ids allowed to post here with a Bearer token; empty: "
        "any authenticated caller.",
    )
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding a shared secret (at least 32 characters) "
        "that the EHR sends in secret_header instead of a token.",
    )
    secret_header: str = Field(
        default="Authorization",
        description="Header carrying the shared secret; for Authorization, as 'Bearer <secret>'.",
    )
    scope: str = Field(
        default="system/Patient.cu system/Encounter.cu",
        description="What a caller authenticated by the shared secret may write (SMART scopes).",
    )
    upsert_types: tuple[str, ...] = Field(
        default=("Patient", "Encounter"),
        description="Resource types written from full-resource notifications; the sync "
        "engine fetches the others (a sync.fetch job).",
    )
    _secret: str | None = PrivateAttr(default=None)

    @field_validator("name", "connection")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not CHANNEL_NAME.fullmatch(value):
            raise ValueError("letters, digits, '.', '_' or '-' (at most 64)")
        return value

    @field_validator("upsert_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - RESOURCE_TYPES)
        if unknown:
            raise ValueError(f"unknown resource type {unknown[0]!r}")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if not parse_scopes(value):
            raise ValueError("no clinical scope in it")
        return value

    @field_validator("secret_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
            raise ValueError("must be an HTTP header name")
        return value

    @property
    def effective_connection(self) -> str:
        return self.connection or self.name

    def load_secret(self, environ: Mapping[str, str]) -> None:
        """Read the shared secret from the environment (ValueError naming what is wrong)."""
        if self.secret_env is None:
            return
        secret = environ.get(self.secret_env, "")
        if len(secret) < _MIN_SECRET:
            raise ValueError(
                f"environment variable {self.secret_env} must hold a secret of at least "
                f"{_MIN_SECRET} characters"
            )
        self._secret = secret

    def secret_matches(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries this channel's shared secret (constant-time compare)."""
        if self._secret is None:
            return False
        value = headers.get(self.secret_header.lower(), "")
        if self.secret_header.lower() == "authorization":
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer":
                return False
        return hmac.compare_digest(value.strip().encode(), self._secret.encode())


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: "
        f"{str(err['msg']).removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def _load(path: Path, environ: Mapping[str, str]) -> Channel:
    try:
        with path.open("rb") as fh:
            data: Any = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    if "secret" in data:
        raise ConfigError(
            f"{path}: secret: secrets are not kept in config files; set secret_env to the name "
            "of an environment variable that holds it"
        )
    try:
        channel = Channel(**{"name": path.stem, **data})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from exc
    try:
        channel.load_secret(environ)
    except ValueError as exc:
        raise ConfigError(f"{path}: secret_env: {exc}") from exc
    return channel


def load_channels(config_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """The channels in ``config_dir/notifications/*.toml`` by name; ConfigError names the file."""
    folder = config_dir / NOTIFICATIONS_SUBDIR
    if not folder.is_dir():
        return {}
    env = os.environ if environ is None else environ
    channels: dict[str, Channel] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".toml"):
        channel = _load(path, env)
        if channel.name in channels:
            raise ConfigError(f"{path}: name: channel {channel.name!r} is defined twice")
        channels[channel.name] = channel
    return channels
