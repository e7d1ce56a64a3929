"""Epic's profile: RS384 client assertions, and backend scopes taken from the app registration."""

from __future__ import annotations

from typing import ClassVar

from carecoord.smart.connections import EhrConnection, SigningAlg
from carecoord.smart.discovery import SmartConfiguration
from integrations.generic.profile import GenericProfile

__all__ = ["EpicProfile"]


class EpicProfile(GenericProfile):
    """Epic on FHIR.

    - Backend-services JWTs are documented and most widely accepted as RS384 (ES384 is newer).
    - The backend ``client_credentials`` request carries no ``scope``: Epic grants what the app's
      registration lists and documents the request as grant type plus client assertion only.
    - The authorize request must carry ``aud`` (the FHIR base): every launch here sends it.
    """

    name: ClassVar[str] = "epic"
    default_alg: ClassVar[SigningAlg] = "RS384"

    def backend_token_params(
        self, connection: EhrConnection, configuration: SmartConfiguration
    ) -> dict[str, str]:
        """No scope: Epic takes the backend app's scopes from its registration."""
        return {}
