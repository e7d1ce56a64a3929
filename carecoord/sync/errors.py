"""Errors of EHR sync (the tree is drawn in the package docstring).

Messages name the connection, the HTTP status and the resource type; never a URL with its query,
an id, a token or resource content, because they end up in logs and in ``last_error`` columns.
"""

from __future__ import annotations

__all__ = [
    "AuthorizationFailed",
    "CircuitOpen",
    "EhrServerError",
    "EhrUnreachable",
    "FatalError",
    "ForeignLink",
    "InvalidResponse",
    "PullStopped",
    "RateLimited",
    "RequestRejected",
    "SyncConfigError",
    "SyncError",
    "TemporaryError",
]


class SyncError(Exception):
    """Base of every error of :mod:`carecoord.sync`."""


class TemporaryError(SyncError):
    """Worth trying again later; ``retry_after`` is the server's or the circuit's wish (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EhrUnreachable(TemporaryError):
    """Timeout, refused or reset connection, DNS failure, or a token endpoint not answering."""


class RateLimited(TemporaryError):
    """429 still after the allowed retries, or a ``Retry-After`` longer than we wait in place."""


class EhrServerError(TemporaryError):
    """5xx still after the allowed retries (``status`` is the last one)."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class PullStopped(TemporaryError):
    """The pull was asked to stop (worker shutdown, lost lease); it resumes from its checkpoint."""


class CircuitOpen(TemporaryError):
    """The connection's circuit is open: requests fail fast until the cool-down ends."""


class FatalError(SyncError):
    """Retrying will not help: the request, the configuration or the answer is wrong."""


class AuthorizationFailed(FatalError):
    """401 even after one new token, or the token endpoint refused our client."""


class RequestRejected(FatalError):
    """The EHR refused the request: 400, 403, 404, 405, 410, 422 ... (``status``)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class InvalidResponse(FatalError):
    """The answer is not JSON, not the expected FHIR resource or Bundle, or not valid FHIR."""


class ForeignLink(FatalError):
    """A paging link points to another host than the connection's own FHIR base."""


class SyncConfigError(FatalError, ValueError):
    """The sync configuration or a population is invalid, or names an unknown connection."""
