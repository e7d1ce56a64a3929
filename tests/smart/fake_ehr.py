"""A small EHR for tests: SMART discovery, an authlib authorization server (authorization code +
PKCE S256, refresh tokens, client credentials with private_key_jwt), id_tokens, a JWKS and a FHIR
Patient endpoint.

It is one synchronous function, ``FakeEhr.handle(httpx.Request) -> httpx.Response``, so the same
EHR serves respx mocks (``route.mock(side_effect=ehr.handle)``) and, wrapped by :func:`asgi_app`,
real sockets under uvicorn. Knobs on the instance break it in the ways the tests need.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

ASSERTION_AUTH = "private_key_jwt"
PATIENT_ID = "pat-1"
ENCOUNTER_ID = "enc-1"
PATIENT_FAMILY = "Quintavalle"
PATIENT_GIVEN = "Zebedeea"
PATIENT_BIRTH_DATE = "1961-04-12"
USER = "Practitioner/prac-1"

_KEY_CACHE: dict[str, RSAKey] = {}


def _rsa(name: str) -> RSAKey:
    """Test keys are made once per test run (RSA generation is the slow part)."""
    if name not in _KEY_CACHE:
        _KEY_CACHE[name] = RSAKey.generate_key(2048, private=True)
    return _KEY_CACHE[name]


@dataclass
class FakeClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    auth_method: str  # none | client_secret_basic | private_key_jwt
    redirect_uris: list[str] = field(default_factory=list)
    secret: str | None = None
    jwks: dict[str, Any] | None = None
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return not self.redirect_uris or redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Code:
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
class Token:
    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    context: dict[str, Any]
    expires_at: float
    revoked: bool = False

    def check_client(self, client: FakeClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: httpx.Request) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.url.params)
        body = request.content.decode() if request.method == "POST" else ""
        self._form = dict(parse_qsl(body))
        self.payload = BasicOAuth2Payload({**self._args, **self._form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class FakeEhr:
    """The EHR at ``base`` (FHIR base ``{base}/fhir``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.fhir_base = f"{self.base}/fhir"
        self.token_url = f"{self.base}/oauth/token"
        self.authorize_url = f"{self.base}/oauth/authorize"
        self.jwks_uri = f"{self.base}/oauth/jwks"
        self.issuer = f"{self.base}/oauth"
        self.signing_key = _rsa("ehr")
        self.kid = self.signing_key.thumbprint()
        self.clients: dict[str, FakeClient] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.launches: dict[str, dict[str, Any]] = {}
        self.seen_jti: set[str] = set()
        self.assertions: list[str] = []
        self.token_forms: list[dict[str, str]] = []
        self.authorize_params: list[dict[str, str]] = []
        self.patient_reads = 0
        # knobs
        self.smart_configuration = True
        self.capabilities = ["launch-ehr", "launch-standalone", "permission-v2", "client-public"]
        self.discovery_cache_control: str | None = None
        self.id_token_mode = "valid"
        self.rotate_refresh_tokens = False
        self.expires_in = 3600
        self.token_failure: httpx.Response | Exception | None = None
        self.drop_token_fields: set[str] = set()  # as if the client had not sent them
        self.fhir_unauthorized = 0  # answer the next N FHIR reads with 401
        self.fhir_always_unauthorized = False
        self.need_patient_banner = True
        self.server = self._build_server()

    # -- setup -----------------------------------------------------------------------------------

    def add_client(self, client: FakeClient) -> FakeClient:
        self.clients[client.client_id] = client
        return client

    def new_launch(self, patient: str = PATIENT_ID, encounter: str | None = ENCOUNTER_ID) -> str:
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = {"patient": patient, "encounter": encounter}
        return launch

    def _build_server(self) -> AuthorizationServer:
        ehr = self

        class Server(AuthorizationServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> FakeClient | None:
                return ehr.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                ehr._save_token(token, request)

            def create_oauth2_request(self, request: Any) -> OAuth2Request:
                return request if isinstance(request, OAuth2Request) else _Request(request)

            def create_json_request(self, request: Any) -> Any:
                raise NotImplementedError

            def handle_response(self, status: int, body: Any, headers: Any) -> httpx.Response:
                headers = dict(headers)
                if isinstance(body, dict):
                    return httpx.Response(status, json=body, headers=headers)
                return httpx.Response(status, content=body or b"", headers=headers)

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                return None

        class Assertion(JWTBearerClientAssertion):  # type: ignore[misc]
            CLIENT_AUTH_METHOD = ASSERTION_AUTH

            def get_audiences(self) -> list[str]:
                return [ehr.token_url]

            def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
                if jti in ehr.seen_jti:
                    return False
                ehr.seen_jti.add(jti)
                return True

            def resolve_client_public_key(self, client: FakeClient) -> KeySet:
                return KeySet.import_key_set(client.jwks or {"keys": []})

            def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
                ehr.assertions.append(assertion)
                token = jwt.decode(assertion, resolve_key, algorithms=["RS384", "ES384"])
                self.verify_claims(token.claims)
                return token.claims

        methods = ["none", "client_secret_basic", ASSERTION_AUTH]

        class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = methods

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                context = dict(ehr.launches.pop(data.get("launch", ""), {}))
                if not context and "launch/patient" in (data.get("scope") or "").split():
                    context = {"patient": PATIENT_ID, "encounter": None}
                ehr.codes[code] = Code(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=data.get("redirect_uri"),
                    scope=request.scope or data.get("scope") or "",
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    nonce=data.get("nonce"),
                    context=context,
                    expires_at=time.time() + 60,
                )

            def query_authorization_code(self, code: str, client: FakeClient) -> Code | None:
                found = ehr.codes.get(code)
                if found and found.client_id == client.client_id and found.expires_at > time.time():
                    return found
                return None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                ehr.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return USER

        class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = methods

            @property
            def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:
                return ehr.rotate_refresh_tokens

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                found = ehr.refresh_tokens.get(refresh_token)
                return None if found is None or found.revoked else found

            def authenticate_user(self, refresh_token: Token) -> str:
                return USER

            def revoke_old_credential(self, refresh_token: Token) -> None:
                if ehr.rotate_refresh_tokens:
                    refresh_token.revoked = True

        class SystemGrant(ClientCredentialsGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = (ASSERTION_AUTH,)

        class S256Only(CodeChallenge):  # type: ignore[misc]
            SUPPORTED_CODE_CHALLENGE_METHOD = ("S256",)

        server = Server()
        server.register_client_auth_method(ASSERTION_AUTH, Assertion())
        server.register_grant(CodeGrant, [S256Only(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(SystemGrant)
        server.register_token_generator("default", self._generate_token)
        return server

    def _generate_token(
        self,
        grant_type: str,
        client: FakeClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": "at-" + secrets.token_urlsafe(24),
            "expires_in": self.expires_in,
            "scope": scope or "",
        }
        if include_refresh_token and grant_type != "client_credentials":
            token["refresh_token"] = "rt-" + secrets.token_urlsafe(24)
        return token

    def _save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        code: Code | None = request.authorization_code
        previous: Token | None = request.refresh_token
        context = code.context if code else previous.context if previous else {}
        refresh = token.get("refresh_token") or (previous.refresh_token if previous else None)
        record = Token(
            access_token=token["access_token"],
            refresh_token=refresh,
            client_id=request.client.client_id,
            scope=token.get("scope", ""),
            context=context,
            expires_at=time.time() + self.expires_in,
        )
        self.tokens[record.access_token] = record
        if refresh:
            self.refresh_tokens[refresh] = record
        if context.get("patient"):
            token["patient"] = context["patient"]
            token["need_patient_banner"] = self.need_patient_banner
            token["fhirContext"] = [{"reference": f"Patient/{context['patient']}"}]
        if context.get("encounter"):
            token["encounter"] = context["encounter"]
        if code is not None and "openid" in code.scope.split() and self.id_token_mode != "missing":
            token["id_token"] = self.id_token(client_id=code.client_id, nonce=code.nonce)

    # -- id_token --------------------------------------------------------------------------------

    def id_token(self, *, client_id: str, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "prac-1",
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "fhirUser": f"{self.fhir_base}/{USER}",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        mode = self.id_token_mode
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        key: Any = self.signing_key
        if mode == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        elif mode == "future":
            claims["iat"] = now + 3600
        elif mode == "wrong_aud":
            claims["aud"] = "some-other-app"
        elif mode == "wrong_iss":
            claims["iss"] = "https://attacker.example.org"
        elif mode == "wrong_nonce":
            claims["nonce"] = "not-the-nonce"
        elif mode == "forged":
            key = _rsa("forger")  # same kid, another key: the signature cannot verify
        elif mode == "unknown_kid":
            key = _rsa("forger")
            header["kid"] = key.thumbprint()
        elif mode == "none":
            return _unsigned(claims)
        elif mode == "hs256":
            # Key confusion: an HMAC keyed with the EHR's public key, which anyone can fetch.
            # (joserfc refuses to build one, so it is assembled by hand.)
            public = self.signing_key.as_pem(private=False)
            return _hmac_signed({"alg": "HS256", "kid": self.kid, "typ": "JWT"}, claims, public)
        return jwt.encode(header, claims, key, algorithms=["RS256"])

    def jwks(self) -> dict[str, Any]:
        public = self.signing_key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    # -- HTTP ------------------------------------------------------------------------------------

    def smart_configuration_body(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.token_url,
            "jwks_uri": self.jwks_uri,
            "capabilities": self.capabilities,
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": [
                "private_key_jwt",
                "client_secret_basic",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        }

    def capability_statement(self) -> dict[str, Any]:
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "extension": [
                            {
                                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                "extension": [
                                    {"url": "authorize", "valueUri": self.authorize_url},
                                    {"url": "token", "valueUri": self.token_url},
                                ],
                            }
                        ]
                    },
                }
            ],
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (several FHIR bases under ``/fhir`` share this EHR)."""
        path = request.url.path
        fhir_path = "/fhir"
        if path.startswith(fhir_path) and path.endswith("/.well-known/smart-configuration"):
            if not self.smart_configuration:
                return httpx.Response(404, json={"error": "not found"})
            headers = {}
            if self.discovery_cache_control:
                headers["Cache-Control"] = self.discovery_cache_control
            return httpx.Response(200, json=self.smart_configuration_body(), headers=headers)
        if path.startswith(fhir_path) and path.endswith("/metadata"):
            return httpx.Response(200, json=self.capability_statement())
        if path == urlsplit(self.jwks_uri).path:
            return httpx.Response(200, json=self.jwks())
        if path == urlsplit(self.authorize_url).path:
            return self._authorize(request)
        if path == urlsplit(self.token_url).path and request.method == "POST":
            form = dict(parse_qsl(request.content.decode()))
            if self.drop_token_fields:
                form = {k: v for k, v in form.items() if k not in self.drop_token_fields}
                headers = {k: v for k, v in request.headers.items() if k != "content-length"}
                request = httpx.Request("POST", request.url, headers=headers, data=form)
            self.token_forms.append(form)
            failure = self.token_failure
            if isinstance(failure, Exception):
                raise failure
            if failure is not None:
                return failure
            return self.server.create_token_response(request)
        if path.startswith(fhir_path) and "/Patient/" in path:
            return self._read_patient(request, path.rsplit("/", 1)[-1])
        return httpx.Response(404, json={"resourceType": "OperationOutcome"})

    def _authorize(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.authorize_params.append(params)
        aud = params.get("aud", "")
        if aud != self.fhir_base and not aud.startswith(self.fhir_base + "/"):
            # SMART: the EHR refuses an aud that is not its FHIR base (never redirects elsewhere).
            redirect = params.get("redirect_uri", "")
            query = urlencode({"error": "invalid_request", "state": params.get("state", "")})
            return httpx.Response(302, headers={"Location": f"{redirect}?{query}"})
        try:
            grant = self.server.get_consent_grant(request)
        except OAuth2Error as error:
            return self.server.handle_error_response(_Request(request), error)
        return self.server.create_authorization_response(grant.request, USER, grant)

    def _read_patient(self, request: httpx.Request, patient_id: str) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        token = self.tokens.get(auth.removeprefix("Bearer ").strip())
        unauthorized = httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
        if self.fhir_always_unauthorized or token is None or token.revoked:
            return unauthorized
        if self.fhir_unauthorized > 0:
            self.fhir_unauthorized -= 1
            return unauthorized
        if token.context.get("patient") not in (None, patient_id):
            return httpx.Response(403, json={"resourceType": "OperationOutcome"})
        self.patient_reads += 1
        return httpx.Response(
            200,
            json={
                "resourceType": "Patient",
                "id": patient_id,
                "name": [{"use": "official", "family": PATIENT_FAMILY, "given": [PATIENT_GIVEN]}],
                "birthDate": PATIENT_BIRTH_DATE,
            },
            headers={"Content-Type": "application/fhir+json"},
        )


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _part(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value).encode())


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_part({'alg': 'none', 'typ': 'JWT'})}.{_part(claims)}."


def _hmac_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_part(header)}.{_part(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def asgi_app(ehr: FakeEhr) -> Any:
    """The fake EHR as an ASGI app (for uvicorn); the handler runs on the server's own thread."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        outgoing = httpx.Request(
            request.method, str(request.url), headers=request.headers.raw, content=body
        )
        answer = ehr.handle(outgoing)
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
