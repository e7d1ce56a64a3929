"""Vendor profiles: the hooks the SMART flows call, implemented per vendor in ``integrations/``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from carecoord.smart.connections import EhrConnection, SigningAlg, Vendor

if TYPE_CHECKING:
    from carecoord.smart.discovery import SmartConfiguration

__all__ = ["VendorProfile", "profile_for"]


class VendorProfile(Protocol):
    """What differs between EHR vendors, as far as the SMART client is concerned."""

    name: ClassVar[str]

    def adjust_configuration(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> SmartConfiguration:
        """Fix up what discovery found (e.g. fill a tenant's token URL)."""
        ...

    def scope(
        self, connection: EhrConnection, requested: str, configuration: SmartConfiguration
    ) -> str:
        """The scope string to send, in the spelling (v1 or v2) the server understands."""
        ...

    def signing_alg(
        self, connection: EhrConnection, configuration: SmartConfiguration | None
    ) -> SigningAlg:
        """The algorithm of our client assertions (RS384 or ES384)."""
        ...

    def backend_token_url(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> str:
        """The token endpoint for backend services (client_credentials)."""
        ...

    def backend_token_params(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> dict[str, str]:
        """Form fields besides grant_type and the client assertion (usually the scope)."""
        ...


def profile_for(vendor: Vendor) -> VendorProfile:
    """The profile of ``vendor`` (the connection's ``vendor`` field)."""
    if vendor == "epic":
        from integrations.epic import EpicProfile

        return EpicProfile()
    if vendor == "oracle_health":
        from integrations.oracle_health import OracleHealthProfile

        return OracleHealthProfile()
    from integrations.generic import GenericProfile

    return GenericProfile()
