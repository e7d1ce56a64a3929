"""FHIR errors, each rendered as an OperationOutcome with its HTTP status.

Hierarchy::

    FhirError (500 exception)
    ├── InvalidRequest (400 invalid)       malformed JSON, invalid resource, bad parameter value
    │   └── UnknownParameter (400 not-supported)
    ├── Unauthorized (401 login) / Forbidden (403 forbidden)
    ├── NotFound (404 not-found)
    │   └── UnknownType (404 not-supported)
    ├── MethodNotAllowed (405 not-supported)
    ├── NotAcceptable (406 not-supported)
    ├── Conflict (409 conflict)
    ├── Gone (410 deleted)
    ├── PreconditionFailed (412 conflict)   If-Match mismatch, several conditional matches
    ├── PayloadTooLarge (413 too-costly)
    ├── UnsupportedMediaType (415 not-supported)
    ├── BusinessRule (422 business-rule)
    └── Unavailable (503 transient)
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.responses import Response

__all__ = [
    "FHIR_JSON",
    "BusinessRule",
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "InvalidRequest",
    "Issue",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Unauthorized",
    "Unavailable",
    "UnknownParameter",
    "UnknownType",
    "UnsupportedMediaType",
    "fhir_error_response",
    "operation_outcome",
]

#: The media type of every FHIR answer.
FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code}
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """Base of every error the FHIR API reports; ``issues`` become the OperationOutcome."""

    status = 500
    code = "exception"

    def __init__(
        self,
        message: str,
        issues: list[Issue] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue(message, code=self.code)]
        self.headers = headers or {}

    def outcome(self) -> bytes:
        return operation_outcome(self.issues)


class InvalidRequest(FhirError):
    """400: the request or resource is malformed or invalid."""

    status = 400
    code = "invalid"


class UnknownParameter(InvalidRequest):
    """400: a search parameter or modifier the server does not support."""

    status = 400
    code = "not-supported"


class Unauthorized(FhirError):
    """401: no or bad credentials."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    """403: authenticated, but not allowed."""

    status = 403
    code = "forbidden"


class NotFound(FhirError):
    """404: no such resource."""

    status = 404
    code = "not-found"


class UnknownType(NotFound):
    """404: not a resource type this server knows."""

    code = "not-supported"


class MethodNotAllowed(FhirError):
    """405: the interaction is not allowed on this resource."""

    status = 405
    code = "not-supported"


class Conflict(FhirError):
    """409: the request conflicts with the current state."""

    status = 409
    code = "conflict"


class Gone(FhirError):
    """410: the resource was deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    """412: If-Match mismatch, or a conditional interaction matched several resources."""

    status = 412
    code = "conflict"


class NotAcceptable(FhirError):
    """406: the client asked for a format other than FHIR JSON."""

    status = 406
    code = "not-supported"


class PayloadTooLarge(FhirError):
    """413: the body is over the configured limit."""

    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    """415: a format other than FHIR JSON."""

    status = 415
    code = "not-supported"


class BusinessRule(FhirError):
    """422: valid FHIR, but a business rule forbids it."""

    status = 422
    code = "business-rule"


class Unavailable(FhirError):
    """503: a temporary condition; the client may retry."""

    status = 503
    code = "transient"


def operation_outcome(issues: list[Issue]) -> bytes:
    return orjson.dumps(
        {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}
    )


def fhir_error_response(exc: FhirError) -> Response:
    """The HTTP answer to ``exc``: its OperationOutcome, status and headers."""
    return Response(
        exc.outcome(), status_code=exc.status, headers=exc.headers, media_type=FHIR_JSON
    )
