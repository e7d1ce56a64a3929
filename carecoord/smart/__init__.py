"""SMART on FHIR: CareCoord as a client of EHRs (connections, launches, sessions, backend services).

Modules: ``connections`` (config/ehr/*.toml|yaml), ``vendors`` (profiles in integrations/),
``discovery``, ``keys`` (our signing keys and JWKS), ``client_auth`` and ``tokens`` (token
requests), ``backend`` (client_credentials + private_key_jwt as an ``httpx.Auth``), ``idtoken``,
``launch``, ``sessions`` (``current_session(request)``), ``ehrapi`` (FHIR calls for a session),
``tables``, ``runtime`` (shared state), ``pages`` (HTML), ``routes`` (``install(app, ...)``) and
``cli`` (``ehr`` and ``keys`` commands). ``scopes`` parses SMART scopes for our own API.

Errors (configuration files raise :class:`carecoord.settings.ConfigError` instead)::

    SmartError
    ├── UnknownConnection            no connection with that name or iss
    ├── DiscoveryError               no usable .well-known/smart-configuration nor oauth-uris
    ├── KeyStoreError                signing keys missing or unreadable
    ├── TokenError                   a token request gave no token
    │   ├── TokenRejected            OAuth error answer (.error: invalid_grant, invalid_client ...)
    │   └── TokenEndpointUnavailable 5xx, timeout, network error, not a token
    ├── LaunchError                  the launch cannot finish (400 page, nothing created)
    │   ├── StateError               unknown, reused, expired or other browser's state
    │   ├── AuthorizationDenied      the EHR answered error=... (.error)
    │   └── IdTokenError             id_token missing or invalid
    └── EhrAccessError               a FHIR call to the EHR failed
        ├── ReauthorizationRequired  401 even after a refresh, or nothing to refresh with
        └── EhrUnavailable           5xx, timeout, network error, unexpected answer
"""

from carecoord.smart.errors import (
    AuthorizationDenied,
    DiscoveryError,
    EhrAccessError,
    EhrUnavailable,
    IdTokenError,
    KeyStoreError,
    LaunchError,
    ReauthorizationRequired,
    SmartError,
    StateError,
    TokenEndpointUnavailable,
    TokenError,
    TokenRejected,
    UnknownConnection,
)

__all__ = [
    "AuthorizationDenied",
    "DiscoveryError",
    "EhrAccessError",
    "EhrUnavailable",
    "IdTokenError",
    "KeyStoreError",
    "LaunchError",
    "ReauthorizationRequired",
    "SmartError",
    "StateError",
    "TokenEndpointUnavailable",
    "TokenError",
    "TokenRejected",
    "UnknownConnection",
]
