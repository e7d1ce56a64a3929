"""SMART on FHIR clinical scopes, v2 (``patient/Task.rs?status=ready``) and v1 (``user/*.read``).

A scope grants interactions on one resource type (or ``*``) in one context:

- ``patient/``: only resources in the patient compartment of the launch patient;
- ``user/``: what the signed-in user may see;
- ``system/``: everything (backend services).

v2 permissions are ``c`` create, ``r`` read, ``u`` update, ``d`` delete, ``s`` search, in that
order; v1 ``read`` means ``rs``, ``write`` means ``cud`` and ``*`` means ``cruds``. Other scopes
(``openid``, ``launch``, ``offline_access`` ...) grant no data access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = ["PERMISSIONS", "ClinicalScope", "InvalidScope", "parse_scope", "parse_scopes"]

PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perms>[a-z*]+)"
    r"(?:\?(?P<query>.+))?$"
)


class InvalidScope(ValueError):
    """A clinical scope that does not follow the SMART grammar."""


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    """One parsed clinical scope."""

    context: str  # patient | user | system
    res_type: str  # a resource type or "*"
    permissions: frozenset[str]
    params: tuple[tuple[str, str], ...] = ()

    def covers(self, res_type: str, permission: str) -> bool:
        return permission in self.permissions and self.res_type in ("*", res_type)

    def __str__(self) -> str:
        perms = "".join(p for p in PERMISSIONS if p in self.permissions)
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"{self.context}/{self.res_type}.{perms}" + (f"?{query}" if query else "")


def parse_scope(text: str) -> ClinicalScope | None:
    """A clinical scope, or None for a non-clinical one (``openid``, ``launch/patient`` ...).

    Raises InvalidScope for something that looks clinical but is malformed (``patient/Obs.xyz``).
    """
    if "/" not in text or text.startswith(("launch", "fhirUser")):
        return None
    match = _SCOPE.match(text)
    if match is None:
        if text.split("/", 1)[0] in ("patient", "user", "system"):
            raise InvalidScope(f"Malformed SMART scope {text!r}")
        return None
    perms = match["perms"]
    if perms in _V1:
        granted = _V1[perms]
    else:
        # v2: a subset of "cruds" in that order, each letter once.
        if not re.fullmatch(r"c?r?u?d?s?", perms) or not perms:
            raise InvalidScope(f"Malformed SMART scope permissions {perms!r} in {text!r}")
        granted = perms
    params: tuple[tuple[str, str], ...] = ()
    if match["query"]:
        params = tuple(parse_qsl(match["query"], keep_blank_values=False, strict_parsing=False))
        if not params:
            raise InvalidScope(f"Malformed query in SMART scope {text!r}")
    return ClinicalScope(match["context"], match["type"], frozenset(granted), params)


def parse_scopes(scope: str | Iterable[str]) -> tuple[ClinicalScope, ...]:
    """Every clinical scope of a space-separated scope string (or list); others are skipped."""
    items = scope.split() if isinstance(scope, str) else list(scope)
    out = []
    for item in items:
        parsed = parse_scope(item)
        if parsed is not None:
            out.append(parsed)
    return tuple(out)
