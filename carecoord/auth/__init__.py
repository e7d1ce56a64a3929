"""CareCoord's own API access: a SMART backend-services authorization server and request policy.

Errors::

    AuthError                 an OAuth error answered as ``{"error": code, ...}``
    ├── InvalidClient         unknown or disabled client, bad or replayed assertion (401)
    ├── InvalidScope          nothing requested is within what the client was registered for
    └── InvalidRequestError   missing or malformed parameters, unsupported grant type
"""

from __future__ import annotations

__all__ = ["AuthError", "InvalidClient", "InvalidRequestError", "InvalidScope"]


class AuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 section 5.2)."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidClient(AuthError):
    error = "invalid_client"
    status = 401


class InvalidScope(AuthError):
    error = "invalid_scope"


class InvalidRequestError(AuthError):
    error = "invalid_request"


class UnsupportedGrantType(AuthError):
    error = "unsupported_grant_type"
