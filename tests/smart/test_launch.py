"""EHR and standalone launches against the fake EHR through respx: the happy paths, the authorize
request, the session, and every way a launch must fail without creating anything."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from carecoord.crypto import Encryptor
from carecoord.smart.launch import LAUNCH_COOKIE, s256
from carecoord.smart.sessions import SESSION_COOKIE, current_session
from carecoord.smart.tables import smart_launches, smart_sessions
from tests.smart.conftest import SECRET_VALUE, launch
from tests.smart.fake_ehr import ENCOUNTER_ID, PATIENT_ID, USER, FakeEhr


def _sessions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(smart_sessions)).scalar_one())


def _start(client: TestClient, ehr: FakeEhr) -> httpx.Response:
    response = client.get("/launch", params={"iss": ehr.fhir_base, "launch": ehr.new_launch()})
    assert response.status_code == 302
    return response


def _authorize(ehr: FakeEhr, start: httpx.Response) -> str:
    answer = ehr.handle(httpx.Request("GET", start.headers["location"]))
    assert answer.status_code == 302
    back = httpx.URL(answer.headers["location"])
    return f"{back.path}?{back.query.decode()}"


# -- happy paths -----------------------------------------------------------------------------------


def test_ehr_launch_redirects_to_authorize_with_every_smart_parameter(
    browser: TestClient, ehr: FakeEhr
) -> None:
    launch_id = ehr.new_launch()
    response = browser.get("/launch", params={"iss": ehr.fhir_base + "/", "launch": launch_id})
    assert response.status_code == 302
    url = urlsplit(response.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == ehr.authorize_url
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert params["response_type"] == "code"
    assert params["client_id"] == "cc-public"
    assert params["redirect_uri"] == "https://testserver/auth/callback"
    assert params["scope"] == "launch openid fhirUser patient/*.rs"
    assert params["launch"] == launch_id
    assert params["aud"] == ehr.fhir_base
    assert params["code_challenge_method"] == "S256"
    assert len(base64.urlsafe_b64decode(params["code_challenge"] + "=")) == 32
    assert len(params["state"]) >= 43  # 32 random bytes: 256 bits
    assert len(params["nonce"]) >= 43
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{LAUNCH_COOKIE}=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Secure" in cookie


def test_ehr_launch_opens_a_session_and_lands_on_the_patient(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    callback = launch(browser, ehr)
    assert callback.status_code == 303
    assert callback.headers["location"] == "/app/patient"
    cookie = callback.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for flag in ("HttpOnly", "Secure", "Path=/"):
        assert flag in cookie
    assert "samesite=lax" in cookie.lower()
    page = browser.get("/app/patient")
    assert page.status_code == 200
    assert "Zebedeea Quintavalle" in page.text
    assert "1961-04-12" in page.text and PATIENT_ID in page.text
    assert 'id="patient-banner"' in page.text  # need_patient_banner was true
    assert page.headers["cache-control"] == "no-store"
    assert _sessions(engine) == 1


def test_current_session_carries_the_launch_context(browser: TestClient, ehr: FakeEhr) -> None:
    launch(browser, ehr)
    seen = {}

    @browser.app.get("/test-session")  # type: ignore[attr-defined]
    async def probe(request: Request) -> dict[str, str]:
        session = await current_session(request)
        assert session is not None
        seen["session"] = session
        return {}

    assert browser.get("/test-session").status_code == 200
    session = seen["session"]
    assert session.connection == "test-ehr"
    assert session.patient == PATIENT_ID
    assert session.encounter == ENCOUNTER_ID
    assert session.fhir_context == ({"reference": f"Patient/{PATIENT_ID}"},)
    assert session.need_patient_banner is True
    assert session.fhir_user == f"{ehr.fhir_base}/{USER}"
    assert "patient/*.rs" in session.scopes
    assert session.expires_at.tzinfo is not None
    assert len(session.id) == 64  # a hash, not the cookie value
    assert session.id != browser.cookies.get(SESSION_COOKIE)


def test_standalone_launch_has_no_launch_parameter(browser: TestClient, ehr: FakeEhr) -> None:
    response = browser.get("/login", params={"ehr": "test-ehr"})
    assert response.status_code == 302
    params = parse_qs(urlsplit(response.headers["location"]).query)
    assert "launch" not in params
    assert "launch/patient" in params["scope"][0].split()
    callback = launch(browser, ehr, standalone=True)
    assert callback.status_code == 303
    page = browser.get("/app/patient")
    assert page.status_code == 200 and "Zebedeea Quintavalle" in page.text


def test_confidential_client_authenticates_with_http_basic(
    browser: TestClient, ehr: FakeEhr, ehr_http: respx.MockRouter
) -> None:
    callback = launch(browser, ehr, connection="test-ehr-secret", standalone=True)
    assert callback.status_code == 303
    token_call = next(c for c in ehr_http.calls if c.request.url == ehr.token_url)
    expected = base64.b64encode(f"cc-confidential:{SECRET_VALUE}".encode()).decode()
    assert token_call.request.headers["authorization"] == f"Basic {expected}"
    assert "client_secret" not in token_call.request.content.decode()


def test_private_key_jwt_client_sends_an_assertion(browser: TestClient, ehr: FakeEhr) -> None:
    callback = launch(browser, ehr, connection="test-ehr-jwt", standalone=True)
    assert callback.status_code == 303
    form = ehr.token_forms[-1]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert ehr.assertions  # verified by the EHR with our published public key
    assert browser.get("/app/patient").status_code == 200


def test_tokens_and_verifier_are_encrypted_at_rest(
    browser: TestClient, ehr: FakeEhr, engine: Engine, settings: object
) -> None:
    start = _start(browser, ehr)
    challenge = parse_qs(urlsplit(start.headers["location"]).query)["code_challenge"][0]
    with engine.connect() as conn:
        row = conn.execute(select(smart_launches)).one()
    secret = b"test-secret-key-with-at-least-32-characters"
    verifier = Encryptor(secret, "smart-launch-verifier").decrypt(row.verifier_enc)
    assert s256(verifier) == challenge
    assert verifier not in " ".join(str(v) for v in row)
    assert browser.get(_authorize(ehr, start)).status_code == 303
    token = next(iter(ehr.tokens.values()))
    with engine.connect() as conn:
        session = conn.execute(select(smart_sessions)).one()
    stored = " ".join(str(v) for v in session)
    assert token.access_token not in stored and str(token.refresh_token) not in stored
    enc = Encryptor(secret, "smart-token-encryption")
    assert enc.decrypt(session.access_token_enc) == token.access_token
    assert enc.decrypt(session.refresh_token_enc) == token.refresh_token
    assert session.id_hash != browser.cookies.get(SESSION_COOKIE)
    assert hashlib.sha256(browser.cookies[SESSION_COOKIE].encode()).hexdigest() == session.id_hash


def test_logout_ends_the_session(browser: TestClient, ehr: FakeEhr, engine: Engine) -> None:
    launch(browser, ehr)
    assert browser.get("/app/patient").status_code == 200
    response = browser.post("/logout")
    assert response.status_code == 200
    assert _sessions(engine) == 0
    browser.cookies.clear()
    assert browser.get("/app/patient").status_code == 401


def test_without_a_session_the_patient_page_says_to_launch(browser: TestClient) -> None:
    response = browser.get("/app/patient")
    assert response.status_code == 401
    assert "Open CareCoord from your EHR" in response.text
    assert "/login?ehr=test-ehr" in response.text


# -- refusals before any redirect ------------------------------------------------------------------


def test_unknown_iss_is_refused_without_redirect_or_fetch(
    browser: TestClient, ehr_http: respx.MockRouter
) -> None:
    catch_all = ehr_http.route(host="evil.example.org").mock(return_value=httpx.Response(200))
    response = browser.get(
        "/launch", params={"iss": "https://evil.example.org/fhir", "launch": "abc"}
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert not catch_all.called
    assert not ehr_http.calls  # not even our own EHR was asked


@pytest.mark.parametrize("params", [{}, {"iss": "https://ehr.example.org/fhir"}, {"launch": "x"}])
def test_launch_needs_iss_and_launch(browser: TestClient, params: dict[str, str]) -> None:
    assert browser.get("/launch", params=params).status_code == 400


def test_standalone_login_for_an_unknown_ehr_lists_the_configured_ones(
    browser: TestClient,
) -> None:
    response = browser.get("/login", params={"ehr": "nope"})
    assert response.status_code == 400
    assert "test-ehr-jwt" in response.text


# -- state -----------------------------------------------------------------------------------------


def test_state_cannot_be_used_twice(browser: TestClient, ehr: FakeEhr, engine: Engine) -> None:
    callback = _authorize(ehr, _start(browser, ehr))
    assert browser.get(callback).status_code == 303
    again = browser.get(callback)
    assert again.status_code == 400
    assert "used before" in again.text
    assert _sessions(engine) == 1


def test_unknown_state_is_refused(browser: TestClient, ehr: FakeEhr, engine: Engine) -> None:
    callback = _authorize(ehr, _start(browser, ehr))
    forged = callback.replace("state=", "state=x")
    assert browser.get(forged).status_code == 400
    assert browser.get(callback.split("&state=")[0]).status_code == 400
    assert _sessions(engine) == 0


def test_state_from_another_browser_is_refused(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    callback = _authorize(ehr, _start(browser, ehr))
    browser.cookies.clear()  # the victim's browser never started this launch
    response = browser.get(callback)
    assert response.status_code == 400
    assert "another browser" in response.text
    assert _sessions(engine) == 0
    assert not ehr.token_forms  # the code was never exchanged


def test_expired_state_is_refused(browser: TestClient, ehr: FakeEhr, engine: Engine) -> None:
    callback = _authorize(ehr, _start(browser, ehr))
    with engine.begin() as conn:
        conn.execute(update(smart_launches).values(expires_at=0))
    response = browser.get(callback)
    assert response.status_code == 400 and "expired" in response.text
    assert _sessions(engine) == 0


def test_authorization_error_from_the_ehr_creates_nothing(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    start = _start(browser, ehr)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    response = browser.get("/auth/callback", params={"error": "access_denied", "state": state})
    assert response.status_code == 400
    assert "access_denied" in response.text
    assert _sessions(engine) == 0


def test_wrong_aud_is_refused_by_the_ehr(browser: TestClient, ehr: FakeEhr, engine: Engine) -> None:
    ehr.fhir_base = "https://ehr.example.org/other"  # the EHR now expects another aud
    start = browser.get(
        "/launch", params={"iss": "https://ehr.example.org/fhir", "launch": ehr.new_launch()}
    )
    response = browser.get(_authorize(ehr, start))
    assert response.status_code == 400
    assert "invalid_request" in response.text
    assert _sessions(engine) == 0


# -- PKCE ------------------------------------------------------------------------------------------


def test_wrong_pkce_verifier_is_rejected_by_the_ehr(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    start = _start(browser, ehr)
    secret = b"test-secret-key-with-at-least-32-characters"
    wrong = Encryptor(secret, "smart-launch-verifier").encrypt("w" * 64)
    with engine.begin() as conn:
        conn.execute(update(smart_launches).values(verifier_enc=wrong))
    response = browser.get(_authorize(ehr, start))
    assert response.status_code == 400
    assert "invalid_grant" in response.text
    assert _sessions(engine) == 0


def test_missing_pkce_verifier_is_rejected_by_the_ehr(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    ehr.drop_token_fields = {"code_verifier"}
    response = browser.get(_authorize(ehr, _start(browser, ehr)))
    assert response.status_code == 400
    assert "invalid_request" in response.text
    assert _sessions(engine) == 0


# -- id_token --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("expired", "expired"),
        ("future", "future"),
        ("forged", "signature"),
        ("unknown_kid", "does not publish"),
        ("none", "not allowed"),
        ("hs256", "not allowed"),
        ("wrong_aud", "aud"),
        ("wrong_iss", "iss"),
        ("wrong_nonce", "nonce"),
        ("missing", "no id_token"),
    ],
)
def test_invalid_id_token_is_refused(
    browser: TestClient, ehr: FakeEhr, engine: Engine, mode: str, reason: str
) -> None:
    ehr.id_token_mode = mode
    response = launch(browser, ehr)
    assert response.status_code == 400
    assert reason in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _sessions(engine) == 0


def test_jwks_is_refetched_when_the_ehr_rotates_its_key(
    browser: TestClient, ehr: FakeEhr, ehr_http: respx.MockRouter
) -> None:
    from tests.smart import fake_ehr

    assert launch(browser, ehr).status_code == 303  # the JWKS is now cached
    ehr.signing_key = fake_ehr._rsa("rotated")
    ehr.kid = ehr.signing_key.thumbprint()
    runtime = browser.app.state.smart  # type: ignore[attr-defined]
    runtime.jwks._entries[ehr.jwks_uri].fetched_at -= 3600  # allow a refetch now
    assert launch(browser, ehr).status_code == 303
    jwks_calls = [c for c in ehr_http.calls if c.request.url == ehr.jwks_uri]
    assert len(jwks_calls) == 2


# -- token endpoint failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "text"),
    [
        (httpx.Response(400, json={"error": "invalid_grant"}), 400, "invalid_grant"),
        (httpx.Response(401, json={"error": "invalid_client"}), 400, "invalid_client"),
        (httpx.Response(500, text="boom"), 502, "did not answer"),
        (httpx.Response(200, text="<html>gateway</html>"), 502, "did not answer"),
        (httpx.ReadTimeout("slow"), 502, "did not answer"),
        (httpx.ConnectError("down"), 502, "did not answer"),
    ],
)
def test_token_endpoint_errors(
    browser: TestClient,
    ehr: FakeEhr,
    engine: Engine,
    failure: httpx.Response | Exception,
    status: int,
    text: str,
) -> None:
    ehr.token_failure = failure
    response = launch(browser, ehr)
    assert response.status_code == status
    assert text in response.text
    assert _sessions(engine) == 0


def test_discovery_failure_at_launch_is_a_502(
    browser: TestClient, ehr: FakeEhr, ehr_http: respx.MockRouter
) -> None:
    ehr_http.route(host="ehr.example.org").mock(return_value=httpx.Response(503))
    response = browser.get("/launch", params={"iss": ehr.fhir_base, "launch": "x"})
    assert response.status_code == 502
    assert "location" not in response.headers


def test_install_is_idempotent_and_feeds_the_access_policy(smart_app: FastAPI) -> None:
    from carecoord.smart.routes import install

    runtime = smart_app.state.smart
    routes = len(smart_app.routes)
    install(smart_app, runtime.settings, runtime.engine)
    assert smart_app.state.smart is runtime and len(smart_app.routes) == routes
    assert smart_app.state.session_source is current_session


def test_a_session_reads_our_fhir_api_within_its_scopes(browser: TestClient, ehr: FakeEhr) -> None:
    """The launch session authenticates requests to our own API (policy by carecoord.auth)."""
    assert browser.get("/fhir/Patient").status_code == 401
    launch(browser, ehr)
    assert browser.get("/fhir/Patient").status_code == 200
