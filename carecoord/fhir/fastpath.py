"""The API's most frequent calls straight to their endpoints, without route matching.

Reads by id, creates, updates and deletes are most of a FHIR server's traffic. Matched through the
router, each would first be tried against every route of the application and pass FastAPI's
dependency resolution, which together cost as much as a read itself. This middleware recognises
their plain shapes (no query string):

- ``GET /fhir/{type}/{id}`` and ``GET /fhir/{type}/{id}/_history/{version}``
- ``POST /fhir/{type}``
- ``PUT /fhir/{type}/{id}`` and ``DELETE /fhir/{type}/{id}``

and calls the very same endpoint functions of :mod:`carecoord.fhir.router` with the same access
policy, body limits and audit. Anything else (a query string, another shape or method) goes
through the router as before. Errors become the same OperationOutcome responses as the app's
handler gives.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from carecoord.auth.policy import request_policy
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import FhirError, fhir_error_response
from carecoord.fhir.router import create, delete, read, read_body, router, update, vread
from carecoord.fhir.store import FhirStore

__all__ = ["FastPaths"]

_TYPE = r"/fhir/([A-Z][A-Za-z]{0,63})"
_INSTANCE = re.compile(_TYPE + r"/([A-Za-z0-9\-.]{1,64})")
_VERSION = re.compile(_TYPE + r"/([A-Za-z0-9\-.]{1,64})/_history/([0-9]{1,18})")
_TYPE_ONLY = re.compile(_TYPE)

Endpoint = Callable[[Request, FhirStore, AccessPolicy | None], Awaitable[Response]]


class FastPaths:
    """Pure ASGI middleware: serves the plain shapes above without route matching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The router's own routes, so that the access log names the same route template.
        self._routes = {
            (method, path): route
            for route in router.routes
            for method in (getattr(route, "methods", None) or ())
            if (path := getattr(route, "path", None)) is not None
        }

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str], Endpoint] | None:
        """The route template, path parameters and endpoint call of a plain request."""
        if method == "GET":
            if (m := _INSTANCE.fullmatch(path)) is not None:
                t, i = m.groups()
                return "/fhir/{res_type}/{res_id}", {"res_type": t, "res_id": i}, _read(t, i)
            if (m := _VERSION.fullmatch(path)) is not None:
                t, i, v = m.groups()
                params = {"res_type": t, "res_id": i, "version": v}
                return "/fhir/{res_type}/{res_id}/_history/{version}", params, _vread(t, i, v)
        elif method == "POST":
            if (m := _TYPE_ONLY.fullmatch(path)) is not None:
                t = m.group(1)
                return "/fhir/{res_type}", {"res_type": t}, _create(t)
        elif method in ("PUT", "DELETE") and (m := _INSTANCE.fullmatch(path)) is not None:
            t, i = m.groups()
            call = _update(t, i) if method == "PUT" else _delete(t, i)
            return "/fhir/{res_type}/{res_id}", {"res_type": t, "res_id": i}, call
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method: str = scope["method"]
        found = self._match(method, path) if path.startswith("/fhir/") else None
        if found is None:
            await self.app(scope, receive, send)
            return
        template, params, endpoint = found
        scope["route"] = self._routes.get((method, template))
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            policy = await request_policy(request)
            response = await endpoint(request, request.app.state.store, policy)
        except FhirError as exc:
            response = fhir_error_response(exc)
        except ClientDisconnect:
            response = Response(status_code=400)  # hung up mid-body: nothing to answer
        await response(scope, receive, send)


def _read(res_type: str, res_id: str) -> Endpoint:
    async def call(request: Request, store: FhirStore, policy: AccessPolicy | None) -> Response:
        return await read(res_type, res_id, request, store, policy)

    return call


def _vread(res_type: str, res_id: str, version: str) -> Endpoint:
    async def call(request: Request, store: FhirStore, policy: AccessPolicy | None) -> Response:
        return await vread(res_type, res_id, version, request, store, policy)

    return call


def _create(res_type: str) -> Endpoint:
    async def call(request: Request, store: FhirStore, policy: AccessPolicy | None) -> Response:
        return await create(res_type, request, store, policy, await read_body(request))

    return call


def _update(res_type: str, res_id: str) -> Endpoint:
    async def call(request: Request, store: FhirStore, policy: AccessPolicy | None) -> Response:
        return await update(res_type, res_id, request, store, policy, await read_body(request))

    return call


def _delete(res_type: str, res_id: str) -> Endpoint:
    async def call(request: Request, store: FhirStore, policy: AccessPolicy | None) -> Response:
        return await delete(res_type, res_id, request, store, policy)

    return call
