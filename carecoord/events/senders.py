"""Da Vinci senders: which EHR connection each ``$process-message`` client speaks for.

``config/davinci/senders.toml`` (optional) maps registered client ids to EHR connections::

    [senders.epic-notifier]
    connection = "epic-prod"

A message from a mapped sender is stored through that connection's sync identity map, so the
encounter it carries is the one a pull of that connection brings (ADR 0021); an unmapped sender's
resources keep their ids. Errors name the file and the field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carecoord.settings import ConfigError

__all__ = ["DAVINCI_SUBDIR", "SENDERS_FILE", "DavinciSender", "DavinciSenders", "load_senders"]

DAVINCI_SUBDIR: Final = "davinci"
SENDERS_FILE: Final = "senders.toml"


class DavinciSender(BaseModel):
    """One sender (a registered client id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The EHR connection (config/ehr/) whose resources this sender sends.",
    )


class DavinciSenders(BaseModel):
    """The file: ``senders.<client id>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    senders: dict[str, DavinciSender] = Field(default_factory=dict)

    def connection_of(self, client_id: str | None) -> str | None:
        """The connection a sender is mapped to (None: unmapped or anonymous)."""
        if client_id is None:
            return None
        found = self.senders.get(client_id)
        return found.connection if found is not None else None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    )


def load_senders(config_dir: Path) -> DavinciSenders:
    """The senders in ``config_dir/davinci/senders.toml`` (none without the file)."""
    path = config_dir / DAVINCI_SUBDIR / SENDERS_FILE
    if not path.is_file():
        return DavinciSenders()
    try:
        data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return DavinciSenders.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from exc
