"""A local SMART sandbox EHR for the demo: a launch page, SMART discovery, an authorization
server (authorization code + PKCE S256, refresh tokens; authlib), RS256 id_tokens with a JWKS, and
a FHIR endpoint whose data is CareCoord's own store (reads), accepting pushes as a sink.

It approves every request of its one registered public client: it exists so that the real EHR
launch flow runs in a browser on a laptop, never for production.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import orjson
from authlib.oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Error, OAuth2Request  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonPayload, JsonRequest  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from carecoord.fhir.errors import NotFound
from carecoord.fhir.store import FhirStore
from carecoord.smart.pages import patient_display

__all__ = ["SANDBOX_CLIENT_ID", "SandboxEhr", "SandboxUser", "sandbox_app"]

SANDBOX_CLIENT_ID = "carecoord-demo"
_USER_COOKIE = "sandbox_user"
_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class SandboxUser:
    """Someone who can sign in to the sandbox EHR."""

    id: str  # Practitioner id in the store
    name: str
    role: str


@dataclass
class _Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class _Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    context: dict[str, Any]
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class _Token:
    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    context: dict[str, Any]
    expires_at: float

    def check_client(self, client: _Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires_at < time.time()

    def is_revoked(self) -> bool:
        return False


class _Req(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: httpx.Request, user: str | None = None) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.url.params)
        body = request.content.decode() if request.method == "POST" else ""
        self._form = dict(parse_qsl(body))
        self.payload = BasicOAuth2Payload({**self._args, **self._form})
        self.sandbox_user = user

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


def _json_request(request: httpx.Request) -> JsonRequest:
    """A JSON-bodied OAuth request (authlib asks for it on endpoints that take JSON)."""
    req = JsonRequest(request.method, str(request.url), headers=request.headers)
    try:
        body = orjson.loads(request.content) if request.content else {}
    except orjson.JSONDecodeError:
        body = {}
    req.payload = _JsonPayload(body if isinstance(body, dict) else {})
    return req


@dataclass
class SandboxEhr:
    """The sandbox EHR at ``base`` (FHIR base ``{base}/fhir``) for the app at ``app_base``."""

    base: str
    app_base: str
    store: FhirStore
    users: list[SandboxUser]
    patients: list[str] = field(default_factory=list)
    expires_in: int = 3600
    _codes: dict[str, _Code] = field(default_factory=dict, init=False)
    _tokens: dict[str, _Token] = field(default_factory=dict, init=False)
    _refresh: dict[str, _Token] = field(default_factory=dict, init=False)
    _launches: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.base = self.base.rstrip("/")
        self.app_base = self.app_base.rstrip("/")
        self.key = RSAKey.generate_key(2048, private=True)
        self.kid = self.key.thumbprint()
        self.client = _Client(SANDBOX_CLIENT_ID, [f"{self.app_base}/auth/callback"])
        self.server = self._build_server()

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    @property
    def issuer(self) -> str:
        return f"{self.base}/oauth"

    def user(self, user_id: str | None) -> SandboxUser | None:
        return next((u for u in self.users if u.id == user_id), None)

    def new_launch(self, *, user: str, patient: str | None, encounter: str | None = None) -> str:
        """A launch id carrying the user and patient context (what an EHR does on a click)."""
        launch = secrets.token_urlsafe(16)
        with self._lock:
            self._launches[launch] = {"user": user, "patient": patient, "encounter": encounter}
        return launch

    def launch_url(self, *, user: str, patient: str) -> str:
        """Where the EHR sends the browser to launch CareCoord for ``patient``."""
        launch = self.new_launch(user=user, patient=patient)
        query = urlencode({"iss": self.fhir_base, "launch": launch})
        return f"{self.app_base}/launch?{query}"

    # -- authorization server --------------------------------------------------------------------

    def _build_server(self) -> AuthorizationServer:
        ehr = self

        class Server(AuthorizationServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> _Client | None:
                return ehr.client if client_id == ehr.client.client_id else None

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                ehr._save_token(token, request)

            def create_oauth2_request(self, request: Any) -> OAuth2Request:
                return request if isinstance(request, OAuth2Request) else _Req(request)

            def create_json_request(self, request: Any) -> JsonRequest:
                return _json_request(request)

            def handle_response(self, status: int, body: Any, headers: Any) -> httpx.Response:
                if isinstance(body, dict):
                    return httpx.Response(status, json=body, headers=dict(headers))
                return httpx.Response(status, content=body or b"", headers=dict(headers))

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                return None

        class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ("none",)

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                with ehr._lock:
                    context = dict(ehr._launches.pop(data.get("launch", ""), {}))
                if not context.get("user"):
                    context["user"] = getattr(request, "sandbox_user", None)
                ehr._codes[code] = _Code(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=data.get("redirect_uri"),
                    scope=request.scope or data.get("scope") or "",
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    nonce=data.get("nonce"),
                    context=context,
                    expires_at=time.time() + 120,
                )

            def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
                found = ehr._codes.get(code)
                if found and found.client_id == client.client_id and found.expires_at > time.time():
                    return found
                return None

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                ehr._codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> str:
                return str(authorization_code.context.get("user") or "")

        class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ("none",)

            def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
                return ehr._refresh.get(refresh_token)

            def authenticate_user(self, refresh_token: _Token) -> str:
                return str(refresh_token.context.get("user") or "")

            def revoke_old_credential(self, refresh_token: _Token) -> None:
                return None

        class S256Only(CodeChallenge):  # type: ignore[misc]
            SUPPORTED_CODE_CHALLENGE_METHOD = ("S256",)

        server = Server()
        server.register_grant(CodeGrant, [S256Only(required=True)])
        server.register_grant(RefreshGrant)
        server.register_token_generator("default", self._generate_token)
        return server

    def _generate_token(
        self,
        grant_type: str,
        client: _Client,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": secrets.token_urlsafe(32),
            "expires_in": self.expires_in,
            "scope": scope or "",
        }
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def _save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        code: _Code | None = request.authorization_code
        previous: _Token | None = request.refresh_token
        context = code.context if code else previous.context if previous else {}
        refresh = token.get("refresh_token") or (previous.refresh_token if previous else None)
        record = _Token(
            access_token=token["access_token"],
            refresh_token=refresh,
            client_id=request.client.client_id,
            scope=token.get("scope", ""),
            context=context,
            expires_at=time.time() + self.expires_in,
        )
        with self._lock:
            self._tokens[record.access_token] = record
            if refresh:
                self._refresh[refresh] = record
        if context.get("patient"):
            token["patient"] = context["patient"]
            token["need_patient_banner"] = bool(context.get("banner", True))
        if context.get("encounter"):
            token["encounter"] = context["encounter"]
        if code is not None and "openid" in code.scope.split():
            token["id_token"] = self._id_token(code, context)

    def _id_token(self, code: _Code, context: dict[str, Any]) -> str:
        now = int(time.time())
        user = str(context.get("user") or "")
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user,
            "aud": code.client_id,
            "iat": now,
            "exp": now + 300,
            # A relative reference: it names a Practitioner of the shared store directly.
            "fhirUser": f"Practitioner/{user}",
        }
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=["RS256"])

    # -- HTTP ------------------------------------------------------------------------------------

    def smart_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.base}/oauth/authorize",
            "token_endpoint": f"{self.base}/oauth/token",
            "jwks_uri": f"{self.base}/oauth/jwks",
            "capabilities": [
                "launch-ehr",
                "launch-standalone",
                "client-public",
                "context-ehr-patient",
                "context-banner",
                "sso-openid-connect",
                "permission-v2",
            ],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "user/*.cruds"],
            "response_types_supported": ["code"],
        }

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def authorize(self, request: httpx.Request, user: str | None) -> httpx.Response:
        params = dict(request.url.params)
        if params.get("aud", "").rstrip("/") != self.fhir_base:
            return httpx.Response(400, text="aud is not this EHR's FHIR base")
        try:
            oauth = _Req(request, user)
            grant = self.server.get_consent_grant(oauth)
        except OAuth2Error as error:
            return self.server.handle_error_response(_Req(request), error)  # type: ignore[no-any-return]
        launch = grant.request.payload.data.get("launch")
        if launch:
            with self._lock:
                user = str((self._launches.get(launch) or {}).get("user") or "") or None
        if self.user(user) is None:
            return httpx.Response(401, text="Sign in to the sandbox EHR first")
        answer = self.server.create_authorization_response(grant.request, user, grant)
        return answer  # type: ignore[no-any-return]

    def token(self, request: httpx.Request) -> httpx.Response:
        return self.server.create_token_response(request)  # type: ignore[no-any-return]

    def bearer(self, header: str | None) -> _Token | None:
        token = self._tokens.get((header or "").removeprefix("Bearer ").strip())
        return None if token is None or token.is_expired() else token

    def fhir_read(self, token: _Token, res_type: str, res_id: str) -> httpx.Response:
        patient = token.context.get("patient")
        if res_type == "Patient" and patient and res_id != patient and "user/" not in token.scope:
            return httpx.Response(403, json={"resourceType": "OperationOutcome"})
        try:
            stored = self.store.read(res_type, res_id)
        except NotFound:
            return httpx.Response(404, json={"resourceType": "OperationOutcome"})
        return httpx.Response(
            200, content=stored.content or b"{}", headers={"Content-Type": _FHIR_JSON}
        )


def _page(title: str, body: str) -> HTMLResponse:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><link rel='stylesheet' href='/ehr.css'></head>"
        f"<body><header><strong>Sandbox EHR</strong> (demo only)</header><main>{body}</main>"
        "</body></html>"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


_CSS = b"""body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b}
header{background:#35495e;color:#fff;padding:.6rem 1rem}main{padding:1rem;max-width:70rem}
a{color:#1f5f99}table{border-collapse:collapse}
td,th{padding:.3rem .6rem;border-bottom:1px solid #ccc;text-align:left}
iframe{width:100%;height:80vh;border:1px solid #888}"""


def _to_httpx(request: Request, body: bytes) -> httpx.Request:
    return httpx.Request(
        request.method, str(request.url), headers=request.headers.raw, content=body
    )


def _from_httpx(answer: httpx.Response) -> Response:
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
    return Response(answer.content, status_code=answer.status_code, headers=headers)


def sandbox_app(ehr: SandboxEhr) -> Starlette:
    """The sandbox EHR as an ASGI application."""

    async def home(request: Request) -> Response:
        rows = []
        names: dict[str, str] = {}
        for pid in ehr.patients:
            try:
                stored = ehr.store.read("Patient", pid)
            except NotFound:
                continue
            names[pid] = patient_display(orjson.loads(stored.content or b"{}"))["name"]
        nurses = [u for u in ehr.users if u.role == "nurse-case-manager"]
        nurse = nurses[0] if nurses else ehr.users[0]
        for pid, name in names.items():
            q = urlencode({"user": nurse.id, "patient": pid})
            rows.append(
                f"<tr><td>{escape(name)}</td><td><a href='/launch?{q}'>Open CareCoord</a></td>"
                f"<td><a href='/chart?{q}'>Chart with CareCoord embedded</a></td></tr>"
            )
        people = "".join(
            f"<li><a href='/sign-in?{urlencode({'user': u.id})}'>{escape(u.name)}</a>"
            f" ({escape(u.role)})</li>"
            for u in ehr.users
        )
        body = (
            f"<h1>Patients with a recent discharge</h1><p>Signed in as {escape(nurse.name)}."
            "</p><table><thead><tr><th scope='col'>Patient</th><th scope='col'>EHR launch</th>"
            f"<th scope='col'>Embedded</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<h2>Standalone sign-in to CareCoord</h2><ul>{people}</ul>"
        )
        return _page("Sandbox EHR", body)

    async def launch(request: Request) -> Response:
        user = request.query_params.get("user", "")
        patient = request.query_params.get("patient", "")
        if ehr.user(user) is None or patient not in ehr.patients:
            return _page("Unknown", "<p>Unknown user or patient.</p>")
        return RedirectResponse(ehr.launch_url(user=user, patient=patient), status_code=302)

    async def chart(request: Request) -> Response:
        user = request.query_params.get("user", "")
        patient = request.query_params.get("patient", "")
        if ehr.user(user) is None or patient not in ehr.patients:
            return _page("Unknown", "<p>Unknown user or patient.</p>")
        src = escape(ehr.launch_url(user=user, patient=patient), quote=True)
        return _page(
            "Chart",
            f"<h1>Chart</h1><iframe title='CareCoord' src='{src}'></iframe>",
        )

    async def sign_in(request: Request) -> Response:
        user = request.query_params.get("user", "")
        if ehr.user(user) is None:
            return _page("Unknown", "<p>Unknown user.</p>")
        back = request.query_params.get("next", "")
        target = (
            back if back.startswith("/oauth/authorize?") else f"{ehr.app_base}/login?ehr=sandbox"
        )
        response = RedirectResponse(target, status_code=302)
        response.set_cookie(_USER_COOKIE, user, httponly=True, samesite="lax", path="/")
        return response

    async def css(request: Request) -> Response:
        return Response(_CSS, media_type="text/css")

    async def discovery(request: Request) -> Response:
        return Response(orjson.dumps(ehr.smart_configuration()), media_type="application/json")

    async def metadata(request: Request) -> Response:
        body = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
        }
        return Response(orjson.dumps(body), media_type=_FHIR_JSON)

    async def jwks(request: Request) -> Response:
        return Response(orjson.dumps(ehr.jwks()), media_type="application/json")

    async def authorize(request: Request) -> Response:
        user = request.cookies.get(_USER_COOKIE)
        if ehr.user(user) is None and not request.query_params.get("launch"):
            back = str(request.url.path) + "?" + str(request.url.query)
            people = "".join(
                f"<li><a href='/sign-in?{urlencode({'user': u.id, 'next': back})}'>"
                f"{escape(u.name)}</a> ({escape(u.role)})</li>"
                for u in ehr.users
            )
            return _page("Sign in", f"<h1>Sign in to the sandbox EHR</h1><ul>{people}</ul>")
        answer = ehr.authorize(_to_httpx(request, b""), user)
        return _from_httpx(answer)

    async def token(request: Request) -> Response:
        return _from_httpx(ehr.token(_to_httpx(request, await request.body())))

    async def fhir(request: Request) -> Response:
        token = ehr.bearer(request.headers.get("authorization"))
        if token is None:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        parts = [p for p in request.url.path.split("/") if p][1:]
        if request.method == "GET" and len(parts) == 2:
            return _from_httpx(ehr.fhir_read(token, parts[0], parts[1]))
        if request.method in ("POST", "PUT") and parts:
            # Pushes from CareCoord: the sandbox's data is CareCoord's store already; accept.
            body = orjson.loads(await request.body() or b"{}")
            rid = parts[1] if len(parts) == 2 else secrets.token_hex(8)
            body["id"] = rid
            body["meta"] = {"versionId": "1"}
            location = f"{ehr.fhir_base}/{parts[0]}/{quote(rid)}/_history/1"
            return Response(
                orjson.dumps(body),
                status_code=201 if request.method == "POST" else 200,
                media_type=_FHIR_JSON,
                headers={"Location": location, "ETag": 'W/"1"'},
            )
        if request.method == "GET" and len(parts) == 1:
            bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
            return Response(orjson.dumps(bundle), media_type=_FHIR_JSON)
        return Response(status_code=404)

    routes = [
        Route("/", home),
        Route("/ehr.css", css),
        Route("/launch", launch),
        Route("/chart", chart),
        Route("/sign-in", sign_in),
        Route("/fhir/.well-known/smart-configuration", discovery),
        Route("/fhir/metadata", metadata),
        Route("/oauth/jwks", jwks),
        Route("/oauth/authorize", authorize),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/fhir/{path:path}", fhir, methods=["GET", "POST", "PUT"]),
    ]
    return Starlette(routes=routes)
