"""HTTP routes of the API's authorization server: token endpoint and SMART discovery."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from carecoord.auth import AuthError
from carecoord.auth.policy import base_of
from carecoord.auth.server import ASSERTION_ALGS, TokenService

__all__ = ["router", "smart_configuration"]

router = APIRouter(include_in_schema=False)

TOKEN_PATH = "/auth/token"


def smart_configuration(base: str) -> dict[str, Any]:
    """SMART App Launch 2.x discovery document for the API (backend services only)."""
    return {
        "issuer": base,
        "token_endpoint": f"{base}{TOKEN_PATH}",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
        "response_types_supported": [],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": ["S256"],
    }


def _json(
    data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )


@router.get("/.well-known/smart-configuration")
@router.get("/fhir/.well-known/smart-configuration")
async def discovery(request: Request) -> Response:
    base = base_of(request, request.app.state.settings.public_url)
    return Response(
        orjson.dumps(smart_configuration(base)),
        media_type="application/json",
        headers={"Cache-Control": "max-age=3600"},
    )


@router.post(TOKEN_PATH)
async def token(request: Request) -> Response:
    tokens: TokenService = request.app.state.tokens
    base = base_of(request, request.app.state.settings.public_url)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        body = await run_in_threadpool(
            tokens.token_request, fields, token_url=f"{base}{TOKEN_PATH}", issuer=base
        )
    except AuthError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="carecoord"'} if exc.status == 401 else None
        return _json(
            {"error": exc.error, "error_description": exc.description}, exc.status, headers
        )
    return _json(body)
