"""Feed configuration: default time zone, accepted versions, identifier systems per authority."""

from __future__ import annotations

import codecs
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from integrations.hl7v2.errors import FeedConfigError

__all__ = ["SUPPORTED_VERSIONS", "Authority", "FeedConfig", "IdentifierKind", "load_feed_config"]

#: HL7 versions whose ADT PID/PV1 layout the mapping knows (MSH-12).
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")

IdentifierKind = Literal["patient", "visit", "practitioner"]

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SUFFIX: dict[IdentifierKind, str] = {
    "patient": "",
    "visit": ":visit",
    "practitioner": ":practitioner",
}


class Authority(BaseModel):
    """An assigning authority (HL7 HD): namespace id, universal id and its type."""

    model_config = ConfigDict(frozen=True)

    namespace: str = ""
    universal_id: str = ""
    universal_type: str = ""


class FeedConfig(BaseModel):
    """How one ADT feed is read. Every field has a default: an empty file is a valid config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_timezone: str = Field(
        default="UTC",
        description="IANA zone of timestamps that carry no UTC offset (HL7 leaves it to the "
        "sender's local time).",
    )
    versions: tuple[str, ...] = Field(
        default=SUPPORTED_VERSIONS, description="HL7 versions accepted (MSH-12); others get AR."
    )
    charset: str | None = Field(
        default=None,
        description="Force a character set (Python codec name); default: MSH-18, else UTF-8, "
        "else Latin-1.",
    )
    patient_identifier_systems: dict[str, str] = Field(
        default_factory=dict, description="PID-3 assigning authority -> Identifier.system."
    )
    visit_identifier_systems: dict[str, str] = Field(
        default_factory=dict, description="PV1-19 assigning authority -> Identifier.system."
    )
    practitioner_identifier_systems: dict[str, str] = Field(
        default_factory=dict, description="PV1-7 assigning authority -> Identifier.system."
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError as exc:
                raise ValueError(f"unknown character set {value!r}") from exc
        return value

    @field_validator(
        "patient_identifier_systems", "visit_identifier_systems", "practitioner_identifier_systems"
    )
    @classmethod
    def _uris(cls, value: dict[str, str]) -> dict[str, str]:
        for authority, system in value.items():
            if not system or any(ch.isspace() for ch in system) or ":" not in system:
                raise ValueError(f"{authority}: {system!r} is not an absolute URI")
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.default_timezone)

    def identifier_system(
        self, kind: IdentifierKind, authority: Authority, *, fallback: str = ""
    ) -> str:
        """The Identifier.system for an identifier of ``kind`` issued by ``authority``.

        Configured names win (namespace id first, then universal id); else an ISO OID becomes
        ``urn:oid:``, a UUID ``urn:uuid:``, and a name ``urn:hl7v2:<name>`` (with ``:visit`` or
        ``:practitioner`` appended for those kinds). ``fallback`` (the sending facility) names
        identifiers that come without an authority.
        """
        table = getattr(self, f"{kind}_identifier_systems")
        for key in (authority.namespace, authority.universal_id):
            if key and key in table:
                return str(table[key])
        universal, utype = authority.universal_id, authority.universal_type.upper()
        if universal and utype == "ISO" and _OID.fullmatch(universal):
            return f"urn:oid:{universal}"
        if universal and utype in ("UUID", "GUID") and _UUID.fullmatch(universal):
            return f"urn:uuid:{universal.lower()}"
        name = authority.namespace or universal or fallback or "local"
        return f"urn:hl7v2:{quote(name, safe='')}{_SUFFIX[kind]}"


def load_feed_config(path: Path) -> FeedConfig:
    """Read and validate a TOML feed configuration; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeedConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FeedConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return FeedConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise FeedConfigError(f"{path}: {problems}") from exc
