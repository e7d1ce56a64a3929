"""SMART discovery: ``{iss}/.well-known/smart-configuration``, else the CapabilityStatement's
``oauth-uris`` extension at ``{iss}/metadata``; cached per ``iss`` with expiry.

Only configured connections are ever looked up: :meth:`Discovery.get` takes a connection from
the registry, never a URL from a request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from carecoord.smart.connections import ConnectionRegistry, EhrConnection, normalize_url
from carecoord.smart.errors import DiscoveryError, UnknownConnection
from carecoord.smart.vendors import profile_for

__all__ = ["DEFAULT_TTL_SECONDS", "Discovery", "SmartConfiguration", "cache_seconds"]

log = logging.getLogger("carecoord.smart.discovery")

#: How long a discovered configuration is kept when the server sends no Cache-Control max-age.
DEFAULT_TTL_SECONDS = 3600
#: Upper bound on what a server's max-age can ask for.
MAX_TTL_SECONDS = 24 * 3600
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CAPABILITIES = "http://fhir-registry.smarthealthit.org/StructureDefinition/capabilities"
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


class SmartConfiguration(BaseModel):
    """The parts of a SMART configuration the client uses."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    issuer: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str
    jwks_uri: str | None = None
    capabilities: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] = ()
    source: Literal["smart-configuration", "capability-statement"] = "smart-configuration"

    @field_validator("authorization_endpoint", "token_endpoint", "jwks_uri")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else normalize_url(value, what="endpoint")


def cache_seconds(headers: httpx.Headers, default: int = DEFAULT_TTL_SECONDS) -> int:
    """Seconds to keep a response: Cache-Control max-age (no-store/no-cache: 0), else default."""
    control = headers.get("cache-control", "")
    lowered = control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(control)
    if match:
        return min(int(match[1]), MAX_TTL_SECONDS)
    return default


@dataclass
class _Entry:
    configuration: SmartConfiguration
    expires_at: float


def _from_capability_statement(body: Any) -> SmartConfiguration | None:
    if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
        return None
    for rest in body.get("rest") or []:
        security = rest.get("security") if isinstance(rest, dict) else None
        if not isinstance(security, dict):
            continue
        uris: dict[str, str] = {}
        capabilities: list[str] = []
        for ext in security.get("extension") or []:
            if not isinstance(ext, dict):
                continue
            if ext.get("url") == OAUTH_URIS:
                for sub in ext.get("extension") or []:
                    if isinstance(sub, dict) and isinstance(sub.get("valueUri"), str):
                        uris[str(sub.get("url"))] = sub["valueUri"]
            elif ext.get("url") == CAPABILITIES and isinstance(ext.get("valueCode"), str):
                capabilities.append(ext["valueCode"])
        if "token" in uris:
            return SmartConfiguration(
                authorization_endpoint=uris.get("authorize"),
                token_endpoint=uris["token"],
                capabilities=tuple(capabilities),
                source="capability-statement",
            )
    return None


class Discovery:
    """Finds and caches the SMART configuration of configured connections."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        http: Callable[[], httpx.AsyncClient],
        *,
        clock: Callable[[], float] = time.time,
        default_ttl: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self._registry = registry
        self._http = http
        self._clock = clock
        self._default_ttl = default_ttl
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def clear(self) -> None:
        """Forget every cached configuration."""
        self._cache.clear()

    async def get(self, connection: EhrConnection) -> SmartConfiguration:
        """The connection's configuration (cached until its expiry); :class:`DiscoveryError`."""
        if not self._registry.is_registered(connection):
            raise UnknownConnection("discovery only runs for configured EHR connections")
        entry = self._cache.get(connection.name)
        if entry is not None and entry.expires_at > self._clock():
            return entry.configuration
        lock = self._locks.setdefault(connection.name, asyncio.Lock())
        async with lock:
            entry = self._cache.get(connection.name)
            if entry is not None and entry.expires_at > self._clock():
                return entry.configuration
            configuration, ttl = await self._discover(connection)
            configuration = profile_for(connection.vendor).adjust_configuration(
                connection, configuration
            )
            if ttl > 0:
                self._cache[connection.name] = _Entry(configuration, self._clock() + ttl)
            return configuration

    async def _fetch(self, connection: EhrConnection, url: str, accept: str) -> httpx.Response:
        try:
            return await self._http().get(url, headers={"Accept": accept})
        except httpx.TimeoutException as exc:
            raise DiscoveryError(f"EHR '{connection.name}': {url} timed out") from exc
        except httpx.HTTPError as exc:
            raise DiscoveryError(
                f"EHR '{connection.name}': {url} unreachable ({type(exc).__name__})"
            ) from exc

    async def _discover(self, connection: EhrConnection) -> tuple[SmartConfiguration, int]:
        well_known = f"{connection.iss}/.well-known/smart-configuration"
        response = await self._fetch(connection, well_known, "application/json")
        problem = f"{well_known} answered {response.status_code}"
        if response.status_code == 200:
            try:
                body = response.json()
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
                return SmartConfiguration(**body), cache_seconds(
                    response.headers, self._default_ttl
                )
            except (ValueError, ValidationError) as exc:
                problem = f"{well_known} is not a usable SMART configuration ({_why(exc)})"
        log.info(
            "EHR '%s': no smart-configuration (%s); trying the CapabilityStatement",
            connection.name,
            response.status_code,
        )
        metadata = f"{connection.iss}/metadata"
        response = await self._fetch(connection, metadata, "application/fhir+json")
        if response.status_code != 200:
            raise DiscoveryError(
                f"EHR '{connection.name}': {problem}; {metadata} answered {response.status_code}"
            )
        try:
            found = _from_capability_statement(response.json())
        except (ValueError, ValidationError) as exc:
            raise DiscoveryError(
                f"EHR '{connection.name}': {problem}; {metadata}: unusable oauth-uris ({_why(exc)})"
            ) from exc
        if found is None:
            raise DiscoveryError(
                f"EHR '{connection.name}': {problem}; the CapabilityStatement at {metadata} has no "
                "oauth-uris extension with a token endpoint"
            )
        return found, cache_seconds(response.headers, self._default_ttl)


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
    return str(exc) or type(exc).__name__
