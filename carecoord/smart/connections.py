"""EHR connections: one pydantic model each, kept in ``config/ehr/*.toml`` (or ``.yaml``/``.yml``).

A file holds one connection (top-level keys; ``name`` defaults to the file's stem) or several as
tables under ``connections`` (``[connections.epic-prod]``). Files named ``*.example`` are ignored.
Secrets are never kept in these files: a confidential client names the environment variable that
holds its secret (``client_secret_env``). Errors name the file and the field.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from carecoord.settings import ConfigError
from carecoord.smart.errors import UnknownConnection

__all__ = [
    "ClientAuthMethod",
    "ConnectionRegistry",
    "EhrConnection",
    "SigningAlg",
    "Vendor",
    "connection_files",
    "grants_write",
    "is_loopback",
    "load_connections",
    "normalize_url",
    "to_toml",
    "write_connection",
]

SigningAlg = Literal["RS384", "ES384"]
Vendor = Literal["generic", "epic", "oracle_health"]
ClientAuthMethod = Literal["public", "confidential", "private_key_jwt"]

EHR_SUBDIR = "ehr"
_SUFFIXES = (".toml", ".yaml", ".yml")
_CLINICAL_SCOPE = re.compile(r"^(?:patient|user|system)/[^.?\s]+\.(?P<perms>[a-z*]+)(?:\?.*)?$")


def grants_write(scope: str) -> bool:
    """Whether a clinical scope allows create, update or delete (v1 or v2 spelling)."""
    match = _CLINICAL_SCOPE.match(scope)
    if match is None:
        return False
    perms = match["perms"]
    if perms in ("*", "write"):
        return True
    return perms != "read" and bool(set(perms) & set("cud"))


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _FieldProblem(ValueError):
    """A model-level check that concerns one field (so the error can name it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalize_url(value: str, *, what: str = "URL") -> str:
    """An absolute https URL (http only on loopback), without a trailing slash or fragment."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https:// URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{what} must use https (http only for localhost)")
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must not carry a fragment or credentials")
    return value.rstrip("/")


class EhrConnection(BaseModel):
    """One EHR that CareCoord connects to as a SMART client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Short unique name.")
    iss: str = Field(description="FHIR base URL of the EHR (the SMART 'iss').")
    client_id: str = Field(min_length=1, max_length=255)
    client_auth: ClientAuthMethod = Field(
        default="public",
        description="public (PKCE only), confidential (client secret, HTTP Basic) or "
        "private_key_jwt (our signing keys).",
    )
    client_secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the client secret (confidential clients).",
    )
    signing_alg: SigningAlg | None = Field(
        default=None, description="JWT signing algorithm; default: the vendor profile's."
    )
    vendor: Vendor = "generic"
    read_only: bool = True
    launch_scope: str = "launch openid fhirUser patient/*.rs"
    standalone_scope: str = "launch/patient openid fhirUser offline_access patient/*.rs"
    backend_scope: str = "system/*.rs"
    backend_client_id: str | None = Field(
        default=None, description="Client id of the backend-services app; default: client_id."
    )
    id_token_issuer: str | None = Field(
        default=None,
        description="Expected id_token 'iss'; default: the discovered issuer, else iss.",
    )

    @field_validator("iss")
    @classmethod
    def _iss(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.query:
            raise ValueError("iss must not carry a query string")
        return normalize_url(value, what="iss")

    @field_validator("launch_scope", "standalone_scope", "backend_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        words = value.split()
        if not words:
            raise ValueError("must name at least one scope")
        return " ".join(words)

    @model_validator(mode="after")
    def _consistent(self) -> EhrConnection:
        if self.client_auth == "confidential" and not self.client_secret_env:
            raise _FieldProblem("client_secret_env", "a confidential client needs one")
        if self.client_auth != "confidential" and self.client_secret_env:
            raise _FieldProblem("client_secret_env", "only for client_auth = 'confidential'")
        if "launch" not in self.launch_scope.split():
            raise _FieldProblem("launch_scope", "must contain 'launch' (EHR launch)")
        if "launch" in self.standalone_scope.split():
            raise _FieldProblem("standalone_scope", "must not contain 'launch' (launch/patient?)")
        if self.read_only:
            for field in ("launch_scope", "standalone_scope", "backend_scope"):
                for scope in getattr(self, field).split():
                    if grants_write(scope):
                        raise _FieldProblem(
                            field, f"'{scope}' grants writes but the connection is read_only"
                        )
        return self

    @property
    def backend_id(self) -> str:
        """The client id used for backend services."""
        return self.backend_client_id or self.client_id

    def client_secret(self) -> SecretStr:
        """The confidential client's secret, read from its environment variable."""
        if not self.client_secret_env:
            raise ConfigError(f"EHR connection '{self.name}': client_secret_env is not set")
        value = os.environ.get(self.client_secret_env)
        if not value:
            raise ConfigError(
                f"EHR connection '{self.name}': client_secret_env: environment variable "
                f"{self.client_secret_env} is not set"
            )
        return SecretStr(value)

    def redacted(self) -> dict[str, Any]:
        """The connection as plain values for display (it holds no secret, only names)."""
        return self.model_dump()


def _problem(err: Mapping[str, Any], prefix: str) -> str:
    path = ".".join(str(p) for p in err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    message = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(cause, _FieldProblem):
        path, message = cause.field, str(cause)
    where = f"{prefix}{path}" if path else (prefix.rstrip(".") or "(root)")
    return f"{where}: {message}"


def _validate(values: Any, source: Path, prefix: str, default_name: str) -> EhrConnection:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or '(root)'}: must be a table")
    if "client_secret" in values:
        raise ConfigError(
            f"{source}: {prefix}client_secret: secrets are not kept in config files; set "
            "client_secret_env to the name of an environment variable that holds it"
        )
    values = {"name": default_name, **values}
    try:
        return EhrConnection(**values)
    except ValidationError as exc:
        problems = "; ".join(_problem(err, prefix) for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from exc


def _read(path: Path) -> Any:
    try:
        if path.suffix == ".toml":
            with path.open("rb") as fh:
                return tomllib.load(fh)
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc


def connection_files(config_dir: Path) -> list[Path]:
    """The connection files under ``config_dir/ehr`` in name order (``*.example`` excluded)."""
    folder = config_dir / EHR_SUBDIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIXES)


def _parse_file(path: Path) -> list[EhrConnection]:
    data = _read(path)
    if data is None:
        return []
    if isinstance(data, dict) and "connections" in data:
        tables = data["connections"]
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: connections: must be a table of connections")
        extra = sorted(set(data) - {"connections"})
        if extra:
            raise ConfigError(f"{path}: {extra[0]}: not allowed beside [connections]")
        return [
            _validate(values, path, f"connections.{key}.", str(key))
            for key, values in tables.items()
        ]
    return [_validate(data, path, "", path.stem)]


class ConnectionRegistry:
    """The configured connections, by name and by ``iss``."""

    def __init__(
        self, connections: Mapping[str, EhrConnection], sources: Mapping[str, Path] | None = None
    ) -> None:
        self._by_name = dict(connections)
        self._sources = dict(sources or {})
        self._by_iss = {_iss_key(c.iss): c for c in self._by_name.values()}

    def __iter__(self) -> Iterator[EhrConnection]:
        return iter(sorted(self._by_name.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> EhrConnection:
        """The connection called ``name``; :class:`UnknownConnection` if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownConnection("no EHR connection with that name is configured") from None

    def by_iss(self, iss: str) -> EhrConnection:
        """The connection whose FHIR base URL is ``iss`` (trailing slash and case of host aside)."""
        found = self._by_iss.get(_iss_key(iss))
        if found is None:
            raise UnknownConnection("no EHR connection is configured for that iss")
        return found

    def is_registered(self, connection: EhrConnection) -> bool:
        """Whether exactly this connection is configured (discovery fetches nothing else)."""
        return self._by_name.get(connection.name) == connection

    def source(self, name: str) -> Path | None:
        """The file a connection was loaded from."""
        return self._sources.get(name)


def _iss_key(iss: str) -> str:
    parts = urlsplit(iss.strip())
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def load_connections(config_dir: Path, *, check_secrets: bool = True) -> ConnectionRegistry:
    """Load and validate every connection file; :class:`ConfigError` names file and field.

    With ``check_secrets`` the environment variables of confidential clients must be set.
    """
    connections: dict[str, EhrConnection] = {}
    sources: dict[str, Path] = {}
    seen_iss: dict[str, str] = {}
    for path in connection_files(config_dir):
        for conn in _parse_file(path):
            if conn.name in connections:
                raise ConfigError(
                    f"{path}: name: '{conn.name}' is already defined in {sources[conn.name]}"
                )
            key = _iss_key(conn.iss)
            if key in seen_iss:
                other = seen_iss[key]
                raise ConfigError(
                    f"{path}: iss: {conn.iss} is already the iss of '{other}' ({sources[other]})"
                )
            if check_secrets and conn.client_auth == "confidential":
                try:
                    conn.client_secret()
                except ConfigError as exc:
                    raise ConfigError(
                        f"{path}: client_secret_env: environment variable "
                        f"{conn.client_secret_env} is not set"
                    ) from exc
            connections[conn.name] = conn
            sources[conn.name] = path
            seen_iss[key] = conn.name
    return ConnectionRegistry(connections, sources)


def to_toml(connection: EhrConnection) -> str:
    """The connection as a TOML document (fields left at their default are omitted)."""
    lines = [f"# EHR connection '{connection.name}' (carecoord ehr add)"]
    defaults = EhrConnection.model_fields
    for key, value in connection.model_dump().items():
        if value is None:
            continue
        if key != "name" and value == defaults[key].default:
            continue
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        else:
            rendered = json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def write_connection(config_dir: Path, connection: EhrConnection) -> Path:
    """Write ``config_dir/ehr/NAME.toml``; refuses a name or iss that is already configured."""
    registry = load_connections(config_dir, check_secrets=False)
    if connection.name in registry:
        raise ConfigError(
            f"{registry.source(connection.name)}: name: '{connection.name}' already exists"
        )
    try:
        other = registry.by_iss(connection.iss)
    except UnknownConnection:
        pass
    else:
        raise ConfigError(f"{registry.source(other.name)}: iss: already used by '{other.name}'")
    folder = config_dir / EHR_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{connection.name}.toml"
    text = to_toml(connection)
    # Round trip: what is written must load back as the same connection.
    if _validate(tomllib.loads(text), path, "", connection.name) != connection:
        raise ConfigError(f"{path}: the connection does not survive a TOML round trip")
    try:
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: file already exists") from exc
    return path
