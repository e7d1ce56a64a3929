"""Reads by id straight to their endpoint: ``GET /fhir/{type}/{id}[/_history/{version}]``.

A read is the API's most frequent call and its cheapest work (one indexed row, served as stored).
Matched through the router it would first be tried against every route of the application and pass
FastAPI's dependency resolution, which together cost more than the read. This middleware
recognises the plain shape (no query string) and calls the very same endpoint functions
(:func:`~carecoord.fhir.router.read`, :func:`~carecoord.fhir.router.vread`) with the same policy
and the same audit; anything else (a query string, another shape) goes through the router as
before. Errors become the same OperationOutcome responses as the app's handler gives.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from carecoord.auth.policy import request_policy
from carecoord.fhir.errors import FhirError, fhir_error_response
from carecoord.fhir.router import read, router, vread

__all__ = ["FastReads"]

_READ = re.compile(
    r"/fhir/([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/([0-9]{1,18}))?"
)


class FastReads:
    """Pure ASGI middleware: serves reads and vreads by id without route matching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The router's own routes, so that the access log names the same route template.
        self._read_route = _get_route("/fhir/{res_type}/{res_id}")
        self._vread_route = _get_route("/fhir/{res_type}/{res_id}/_history/{version}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        match = _READ.fullmatch(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        res_type, res_id, version = match.groups()
        scope["route"] = self._read_route if version is None else self._vread_route
        params: dict[str, Any] = {"res_type": res_type, "res_id": res_id}
        if version is not None:
            params["version"] = version
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            policy = await request_policy(request)
            store = request.app.state.store
            if version is None:
                response = await read(res_type, res_id, request, store, policy)
            else:
                response = await vread(res_type, res_id, version, request, store, policy)
        except FhirError as exc:
            response = fhir_error_response(exc)
        await response(scope, receive, send)


def _get_route(template: str) -> BaseRoute:
    for route in router.routes:
        if getattr(route, "path", None) == template and "GET" in (
            getattr(route, "methods", None) or ()
        ):
            return route
    raise LookupError(f"the FHIR router has no GET {template}")
