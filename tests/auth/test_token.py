"""The API's token endpoint: SMART backend services with private_key_jwt assertions."""

from __future__ import annotations

import time
import uuid

import httpx
import respx
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from sqlalchemy import Engine

from carecoord.auth.clients import add_client
from tests.auth.helpers import public_jwks, token_form

TOKEN = "/auth/token"


def _register(engine: Engine, client_id: str = "engine", scope: str = "system/*.rs") -> None:
    add_client(engine, client_id=client_id, name="Engine", scope=scope, jwks=public_jwks())


def test_client_gets_a_token_and_uses_it(anonymous_client: TestClient, engine: Engine) -> None:
    _register(engine, scope="system/Patient.rs system/Observation.rs")
    r = anonymous_client.post(TOKEN, data=token_form("engine", "system/Patient.rs system/Task.rs"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Patient.rs"  # Task was never granted to this client
    assert r.headers["cache-control"] == "no-store"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert anonymous_client.get("/fhir/Patient", headers=auth).status_code == 200
    assert anonymous_client.get("/fhir/Task", headers=auth).status_code == 403


def test_rs384_keys_work_too(anonymous_client: TestClient, engine: Engine) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    add_client(
        engine,
        client_id="rsa",
        name="rsa",
        scope="system/*.rs",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    form = token_form("rsa", "system/*.rs", key=key, alg="RS384")  # type: ignore[arg-type]
    assert anonymous_client.post(TOKEN, data=form).status_code == 200


def _error(anonymous_client: TestClient, form: dict[str, str]) -> tuple[int, str]:
    r = anonymous_client.post(TOKEN, data=form)
    return r.status_code, r.json()["error"]


def test_assertion_replay_is_refused(anonymous_client: TestClient, engine: Engine) -> None:
    _register(engine)
    form = token_form("engine", "system/*.rs", jti="same-jti")
    assert anonymous_client.post(TOKEN, data=form).status_code == 200
    assert _error(anonymous_client, form) == (401, "invalid_client")


def test_bad_assertions_are_refused(anonymous_client: TestClient, engine: Engine) -> None:
    _register(engine)
    cases = {
        "wrong aud": token_form("engine", "system/*.rs", token_url="https://elsewhere/token"),
        "exp beyond 5 min": token_form("engine", "system/*.rs", lifetime=3600),
        "expired": token_form("engine", "system/*.rs", lifetime=-120),
        "sub differs": token_form("engine", "system/*.rs", sub="someone-else"),
        "unknown client": token_form("nobody", "system/*.rs"),
        "other key": token_form(
            "engine", "system/*.rs", key=ECKey.generate_key("P-384", parameters={"kid": "test-key"})
        ),
    }
    for label, form in cases.items():
        assert _error(anonymous_client, form) == (401, "invalid_client"), label


def test_alg_none_and_hmac_key_confusion_are_refused(
    anonymous_client: TestClient, engine: Engine
) -> None:
    _register(engine)
    claims = {
        "iss": "engine",
        "sub": "engine",
        "aud": "http://testserver/auth/token",
        "exp": int(time.time()) + 60,
        "jti": uuid.uuid4().hex,
    }
    # HS256 signed with the client's *public* key material as the secret: classic key confusion.
    public_pem = public_jwks()["keys"][0]["x"].encode()
    hs = jwt.encode({"alg": "HS256", "kid": "test-key"}, claims, OctKey.import_key(public_pem))
    form = {**token_form("engine", "system/*.rs"), "client_assertion": hs}
    assert _error(anonymous_client, form) == (401, "invalid_client")
    none = (
        "eyJhbGciOiJub25lIn0."
        + jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(b"k" * 32)).split(".")[1]
        + "."
    )
    form = {**token_form("engine", "system/*.rs"), "client_assertion": none}
    assert _error(anonymous_client, form) == (401, "invalid_client")


def test_wrong_grant_missing_assertion_and_bad_scope(
    anonymous_client: TestClient, engine: Engine
) -> None:
    _register(engine)
    form = {**token_form("engine", "system/*.rs"), "grant_type": "password"}
    assert _error(anonymous_client, form) == (400, "unsupported_grant_type")
    form = token_form("engine", "system/*.rs")
    del form["client_assertion"]
    assert _error(anonymous_client, form) == (401, "invalid_client")
    assert _error(anonymous_client, token_form("engine", "system/*.cruds")) == (
        400,
        "invalid_scope",
    )
    assert _error(anonymous_client, token_form("engine", "patient/*.rs")) == (400, "invalid_scope")


def test_jwks_url_is_fetched_and_cached(anonymous_client: TestClient, engine: Engine) -> None:
    add_client(
        engine,
        client_id="remote",
        name="remote",
        scope="system/*.rs",
        jwks_url="https://engine.example.org/jwks.json",
    )
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get("https://engine.example.org/jwks.json").mock(
            return_value=httpx.Response(200, json=public_jwks())
        )
        for _ in range(2):
            r = anonymous_client.post(TOKEN, data=token_form("remote", "system/*.rs"))
            assert r.status_code == 200, r.text
        assert route.call_count == 1
