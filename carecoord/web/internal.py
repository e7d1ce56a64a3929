"""Reading another feature's JSON API in-process, as the same caller (cookie or bearer token)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from starlette.requests import Request

__all__ = ["internal_get"]


async def internal_get(request: Request, path: str) -> Any | None:
    """``GET path`` on this application with the caller's credentials: the decoded JSON body on
    200, None otherwise (route not installed yet, no access, error)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("cookie", "authorization")}
    headers["accept"] = "application/json"
    rid = request.scope.get("state", {}).get("request_id")
    if rid:
        headers["x-request-id"] = str(rid)
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url=str(request.base_url)) as client:
        try:
            answer = await client.get(path, headers=headers)
        except httpx.HTTPError:
            return None
    if answer.status_code != 200:
        return None
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        return None
