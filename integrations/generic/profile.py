"""The generic profile: SMART App Launch 2.x as written, plus v1/v2 scope spelling."""

from __future__ import annotations

import re
from typing import ClassVar

from carecoord.smart.connections import EhrConnection, SigningAlg
from carecoord.smart.discovery import SmartConfiguration

__all__ = ["GenericProfile", "scope_to_v1", "scope_to_v2"]

_CLINICAL = re.compile(r"^(?P<head>(?:patient|user|system)/[^.?\s]+)\.(?P<perms>[a-z*]+)$")
_V1_TO_V2 = {"read": "rs", "write": "cud", "*": "cruds"}


def scope_to_v2(scope: str) -> str:
    """``patient/Observation.read`` -> ``patient/Observation.rs``; other scopes unchanged."""
    words = []
    for word in scope.split():
        match = _CLINICAL.match(word)
        if match and match["perms"] in _V1_TO_V2:
            word = f"{match['head']}.{_V1_TO_V2[match['perms']]}"
        words.append(word)
    return " ".join(words)


def scope_to_v1(scope: str) -> str:
    """``patient/Observation.rs`` -> ``patient/Observation.read``; ``.cruds`` -> ``.*``.

    v2 scopes with ``?param=`` restrictions have no v1 spelling and are left as they are.
    """
    words = []
    for word in scope.split():
        match = _CLINICAL.match(word)
        perms = match["perms"] if match else ""
        if match and perms not in _V1_TO_V2 and set(perms) <= set("cruds"):
            reads, writes = bool(set(perms) & set("rs")), bool(set(perms) & set("cud"))
            v1 = "*" if reads and writes else ("read" if reads else "write")
            word = f"{match['head']}.{v1}"
        words.append(word)
    return " ".join(words)


class GenericProfile:
    """SMART 2.x: scopes follow the advertised ``permission-v1``/``permission-v2`` capability."""

    name: ClassVar[str] = "generic"
    #: Our algorithm when the connection does not choose one.
    default_alg: ClassVar[SigningAlg] = "ES384"

    def adjust_configuration(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> SmartConfiguration:
        """Nothing to fix for a server that follows the specification."""
        return configuration

    def scope(
        self, connection: EhrConnection, requested: str, configuration: SmartConfiguration
    ) -> str:
        """v1 spelling when the server advertises only v1 permissions, else as configured."""
        caps = set(configuration.capabilities)
        if "permission-v1" in caps and "permission-v2" not in caps:
            return scope_to_v1(requested)
        if "permission-v2" in caps and "permission-v1" not in caps:
            return scope_to_v2(requested)
        return requested

    def signing_alg(
        self, connection: EhrConnection, configuration: SmartConfiguration | None
    ) -> SigningAlg:
        """The connection's choice, else ours, switched if the server supports only the other."""
        if connection.signing_alg:
            return connection.signing_alg
        alg: SigningAlg = self.default_alg
        supported = (
            configuration.token_endpoint_auth_signing_alg_values_supported if configuration else ()
        )
        if supported and alg not in supported:
            other: SigningAlg = "RS384" if alg == "ES384" else "ES384"
            if other in supported:
                return other
        return alg

    def backend_token_url(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> str:
        """The discovered token endpoint."""
        return configuration.token_endpoint

    def backend_token_params(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> dict[str, str]:
        """The requested system scopes."""
        return {"scope": self.scope(connection, connection.backend_scope, configuration)}
