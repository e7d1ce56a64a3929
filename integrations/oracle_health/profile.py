"""Oracle Health's profile: tenant token URLs (users vs system accounts) and v1 scope spelling."""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from carecoord.smart.connections import EhrConnection, SigningAlg
from carecoord.smart.discovery import SmartConfiguration
from integrations.generic.profile import GenericProfile, scope_to_v1, scope_to_v2

__all__ = ["OracleHealthProfile", "tenant_id"]

#: Millennium's authorization server; each tenant (client organisation) has its own paths.
AUTHORIZATION_HOST = "https://authorization.cerner.com"
_TENANT = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$", re.IGNORECASE)
_HOSTS_SEGMENT = re.compile(r"/hosts/[^/]+(?=/protocols/)")


def tenant_id(iss: str) -> str | None:
    """The tenant id in a Millennium FHIR base (``https://fhir-ehr.cerner.com/r4/{tenant}``)."""
    for segment in reversed(urlsplit(iss).path.split("/")):
        if _TENANT.match(segment):
            return segment.lower()
    return None


class OracleHealthProfile(GenericProfile):
    """Oracle Health (Cerner) Millennium.

    - The token URL in smart-configuration is per tenant and per FHIR host
      (``/tenants/{t}/hosts/{host}/protocols/oauth2/profiles/smart-v1/token``); system accounts
      (backend services) use the tenant's URL without the ``/hosts/{host}`` segment.
    - Without discovery data the tenant's URLs are derived from the tenant id in ``iss``.
    - Scopes are v1 (``patient/Patient.read``) unless the server advertises ``permission-v2``.
    """

    name: ClassVar[str] = "oracle_health"
    default_alg: ClassVar[SigningAlg] = "RS384"

    def _tenant_url(self, connection: EhrConnection, tail: str) -> str | None:
        tenant = tenant_id(connection.iss)
        if tenant is None:
            return None
        return f"{AUTHORIZATION_HOST}/tenants/{tenant}/protocols/oauth2/profiles/smart-v1/{tail}"

    def adjust_configuration(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> SmartConfiguration:
        """Fill the tenant's authorize URL when the CapabilityStatement named none."""
        if configuration.authorization_endpoint:
            return configuration
        authorize = self._tenant_url(connection, "personas/provider/authorize")
        if authorize is None:
            return configuration
        return configuration.model_copy(update={"authorization_endpoint": authorize})

    def scope(
        self, connection: EhrConnection, requested: str, configuration: SmartConfiguration
    ) -> str:
        """v1 spelling unless the server advertises v2 permissions."""
        if "permission-v2" in configuration.capabilities:
            return scope_to_v2(requested)
        return scope_to_v1(requested)

    def backend_token_url(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> str:
        """The tenant token URL without its ``/hosts/{host}`` segment (system accounts)."""
        parts = urlsplit(configuration.token_endpoint)
        if parts.hostname and parts.hostname.endswith("cerner.com"):
            path = _HOSTS_SEGMENT.sub("", parts.path)
            return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        return configuration.token_endpoint
