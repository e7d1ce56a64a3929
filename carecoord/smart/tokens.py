"""Token endpoint requests and answers (code exchange, refresh, client credentials).

Token values are :class:`pydantic.SecretStr`, so a ``repr`` or a validation error never shows
them; error messages name only the OAuth error code and the HTTP status.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from carecoord.smart.client_auth import ClientCredentials
from carecoord.smart.errors import TokenEndpointUnavailable, TokenRejected

__all__ = ["TokenResponse", "parse_token_response", "request_token", "token_request"]

_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TokenResponse(BaseModel):
    """A successful token answer, with the SMART launch context fields."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    access_token: SecretStr
    token_type: str
    expires_in: int | None = Field(default=None, ge=0)
    scope: str | None = None
    refresh_token: SecretStr | None = None
    id_token: SecretStr | None = None
    patient: str | None = None
    encounter: str | None = None
    fhir_context: list[dict[str, Any]] = Field(default_factory=list, alias="fhirContext")
    #: When absent, show the banner: nothing says the EHR's own banner is on screen.
    need_patient_banner: bool = True
    intent: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("token_type must be Bearer")
        return "Bearer"

    @field_validator("fhir_context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> Any:
        # SMART 2.0 allowed plain reference strings; 2.1 uses objects.
        if isinstance(value, list):
            return [{"reference": v} if isinstance(v, str) else v for v in value]
        return value


def _fields(exc: ValidationError) -> str:
    # Field names only: pydantic's messages can echo the (secret) input.
    return ", ".join(sorted({".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()}))


def parse_token_response(response: httpx.Response) -> TokenResponse:
    """The token in ``response``, or :class:`TokenRejected` / :class:`TokenEndpointUnavailable`."""
    status = response.status_code
    if status >= 500:
        raise TokenEndpointUnavailable(f"the token endpoint answered {status}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TokenEndpointUnavailable(f"the token endpoint answered {status} without JSON")
    error = body.get("error")
    if error is not None or status != 200:
        code = error if isinstance(error, str) and _ERROR_CODE.match(error) else "invalid_response"
        raise TokenRejected(
            f"the token endpoint refused the request ({status} {code})", error=code, status=status
        )
    try:
        return TokenResponse.model_validate(body)
    except ValidationError as exc:
        raise TokenEndpointUnavailable(
            f"the token endpoint's answer is not a usable bearer token (fields: {_fields(exc)})"
        ) from None


def token_request(url: str, form: dict[str, str], credentials: ClientCredentials) -> httpx.Request:
    """The POST to the token endpoint (form-encoded, client authentication included)."""
    headers = {"Accept": "application/json", **credentials.headers}
    return httpx.Request("POST", url, data={**form, **credentials.form}, headers=headers)


async def request_token(
    http: httpx.AsyncClient, url: str, form: dict[str, str], credentials: ClientCredentials
) -> TokenResponse:
    """Send a token request; transport failures become :class:`TokenEndpointUnavailable`."""
    try:
        response = await http.send(token_request(url, form, credentials))
    except httpx.TimeoutException as exc:
        raise TokenEndpointUnavailable("the token endpoint timed out") from exc
    except httpx.HTTPError as exc:
        raise TokenEndpointUnavailable(
            f"the token endpoint is unreachable ({type(exc).__name__})"
        ) from exc
    return parse_token_response(response)
