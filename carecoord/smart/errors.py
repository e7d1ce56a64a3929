"""Errors of the SMART client (the tree is drawn in the package docstring)."""

from __future__ import annotations

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


class SmartError(Exception):
    """Base of every error of :mod:`carecoord.smart`; messages never carry tokens or PHI."""


class UnknownConnection(SmartError):
    """No EHR connection is configured under that name or ``iss``."""


class DiscoveryError(SmartError):
    """No usable SMART configuration could be found for a connection."""


class KeyStoreError(SmartError):
    """The service's signing keys are missing or unreadable."""


class TokenError(SmartError):
    """A token request (code exchange, refresh, client credentials) did not give a token."""


class TokenRejected(TokenError):
    """The token endpoint answered an OAuth error (``invalid_grant``, ``invalid_client`` ...)."""

    def __init__(self, message: str, *, error: str, status: int) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class TokenEndpointUnavailable(TokenError):
    """The token endpoint failed: 5xx, timeout, network error or an answer that is not a token."""


class LaunchError(SmartError):
    """A launch cannot be completed; the browser gets a 400 page and nothing is created."""


class StateError(LaunchError):
    """The ``state`` is unknown, used before, expired, or belongs to another browser."""


class AuthorizationDenied(LaunchError):
    """The EHR answered the authorization request with ``error=...``."""

    def __init__(self, message: str, *, error: str) -> None:
        super().__init__(message)
        self.error = error


class IdTokenError(LaunchError):
    """The ``id_token`` is missing or invalid (signature, algorithm, iss, aud, exp, iat, nonce)."""


class EhrAccessError(SmartError):
    """A call to an EHR's FHIR API on behalf of a session or the service failed."""


class ReauthorizationRequired(EhrAccessError):
    """The EHR refused a fresh token (401 after a refresh) or cannot refresh: launch again."""


class EhrUnavailable(EhrAccessError):
    """The EHR's FHIR API failed: 5xx, timeout, network error or an unexpected answer."""
