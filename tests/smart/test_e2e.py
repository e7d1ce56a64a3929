"""End to end over real sockets: the fake EHR and CareCoord each under uvicorn on 127.0.0.1, a
browser (httpx, redirects followed by hand, cookies kept) completing EHR and standalone launches,
then reading the launch patient; and a scan of every log record for secrets and PHI."""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from carecoord.fhir.store import FhirStore
from carecoord.smart.launch import LAUNCH_COOKIE
from carecoord.smart.sessions import SESSION_COOKIE
from tests.smart.fake_ehr import (
    PATIENT_BIRTH_DATE,
    PATIENT_FAMILY,
    PATIENT_GIVEN,
    PATIENT_ID,
    FakeEhr,
)


def _follow(browser: httpx.Client, url: str, hops: int = 6) -> list[httpx.Response]:
    """GET ``url`` and follow redirects by hand (across both servers); every answer in order."""
    chain = []
    for _ in range(hops):
        response = browser.get(url)
        chain.append(response)
        if response.status_code not in (301, 302, 303, 307, 308):
            return chain
        url = urljoin(url, response.headers["location"])
    raise AssertionError("too many redirects")


def _hosts(chain: list[httpx.Response]) -> list[str]:
    return [f"{r.request.url.host}:{r.request.url.port}{r.request.url.path}" for r in chain]


def test_ehr_launch_over_real_http(live_app: tuple[str, FakeEhr], engine: Engine) -> None:
    app_url, ehr = live_app
    store = FhirStore(engine)
    for pid in (PATIENT_ID, "someone-else"):
        store.update("Patient", pid, {"resourceType": "Patient", "id": pid, "gender": "female"})
    launch_id = ehr.new_launch()
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        chain = _follow(browser, f"{app_url}/launch?iss={ehr.fhir_base}&launch={launch_id}")
        assert [r.status_code for r in chain] == [302, 302, 303, 200]
        app_port, ehr_port = urlsplit(app_url).port, urlsplit(ehr.base).port
        assert _hosts(chain) == [
            f"127.0.0.1:{app_port}/launch",
            f"127.0.0.1:{ehr_port}/oauth/authorize",
            f"127.0.0.1:{app_port}/auth/callback",
            f"127.0.0.1:{app_port}/app/patient",
        ]
        authorize = parse_qs(urlsplit(str(chain[1].request.url)).query)
        assert authorize["launch"] == [launch_id]
        assert authorize["aud"] == [ehr.fhir_base]
        assert authorize["redirect_uri"] == [f"{app_url}/auth/callback"]
        page = chain[-1]
        assert f"{PATIENT_GIVEN} {PATIENT_FAMILY}" in page.text
        assert PATIENT_BIRTH_DATE in page.text and PATIENT_ID in page.text
        session_cookie = chain[2].headers["set-cookie"]
        assert session_cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in session_cookie and "samesite=lax" in session_cookie.lower()
        assert "Secure" not in session_cookie  # 127.0.0.1: a browser would drop a Secure cookie
        assert browser.get(f"{app_url}/app/patient").status_code == 200  # the session stays
        # The same session on CareCoord's own FHIR API: the launch patient's compartment only.
        own = browser.get(f"{app_url}/fhir/Patient/{PATIENT_ID}")
        assert own.status_code == 200 and own.json()["id"] == PATIENT_ID
        assert browser.get(f"{app_url}/fhir/Patient/someone-else").status_code == 404
        found = browser.get(f"{app_url}/fhir/Patient").json()
        assert [e["resource"]["id"] for e in found["entry"]] == [PATIENT_ID]
        assert browser.post(f"{app_url}/logout").status_code == 200
        assert browser.get(f"{app_url}/fhir/Patient/{PATIENT_ID}").status_code == 401
        assert browser.get(f"{app_url}/app/patient").status_code == 401


@pytest.mark.parametrize("connection", ["test-ehr", "test-ehr-jwt", "test-ehr-secret"])
def test_standalone_launch_over_real_http(live_app: tuple[str, FakeEhr], connection: str) -> None:
    app_url, _ = live_app
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        chain = _follow(browser, f"{app_url}/login?ehr={connection}")
        assert [r.status_code for r in chain] == [302, 302, 303, 200]
        assert "launch" not in parse_qs(urlsplit(str(chain[1].request.url)).query)
        assert f"{PATIENT_GIVEN} {PATIENT_FAMILY}" in chain[-1].text


def test_callback_in_another_browser_is_refused(live_app: tuple[str, FakeEhr]) -> None:
    app_url, ehr = live_app
    with httpx.Client(follow_redirects=False, timeout=10) as victim:
        start = victim.get(f"{app_url}/launch?iss={ehr.fhir_base}&launch={ehr.new_launch()}")
        authorized = victim.get(start.headers["location"])
        callback = urljoin(app_url, authorized.headers["location"])
    with httpx.Client(follow_redirects=False, timeout=10) as attacker:
        assert attacker.get(callback).status_code == 400
        assert SESSION_COOKIE not in attacker.cookies


def test_no_tokens_codes_or_phi_in_the_logs(
    live_app: tuple[str, FakeEhr], caplog: pytest.LogCaptureFixture
) -> None:
    app_url, ehr = live_app
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "carecoord", "uvicorn", "uvicorn.error", "authlib"):
        caplog.set_level(logging.DEBUG, logger=name)
    ehr.rotate_refresh_tokens = True
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        chain = _follow(browser, f"{app_url}/launch?iss={ehr.fhir_base}&launch={ehr.new_launch()}")
        assert chain[-1].status_code == 200
        ehr.fhir_unauthorized = 1  # the next read refreshes the tokens (rotating them) ...
        assert browser.get(f"{app_url}/app/patient").status_code == 200
        ehr.fhir_always_unauthorized = True  # ... and this one gives up
        assert browser.get(f"{app_url}/app/patient").status_code == 401
        replay = browser.get(str(chain[2].request.url))  # a reused state: refused, logged
        assert replay.status_code == 400
        launch_cookie = browser.cookies.get(LAUNCH_COOKIE)

    callback = parse_qs(urlsplit(str(chain[2].request.url)).query)
    secrets = {
        "code": callback["code"][0],
        "state": callback["state"][0],
        "launch cookie": str(launch_cookie),
        "session cookie": chain[2].cookies.get(SESSION_COOKIE) or "",
        "patient family name": PATIENT_FAMILY,
        "patient given name": PATIENT_GIVEN,
        "birth date": PATIENT_BIRTH_DATE,
    }
    for form in ehr.token_forms:
        for field in ("code", "code_verifier", "refresh_token", "client_assertion"):
            if field in form:
                secrets[field] = form[field]
    for token in ehr.tokens.values():
        secrets[f"access token {token.access_token[:6]}"] = token.access_token
        if token.refresh_token:
            secrets[f"refresh token {token.refresh_token[:6]}"] = token.refresh_token
    assert any(k.startswith("refresh token") for k in secrets) and "code_verifier" in secrets
    # the launch, the refresh after one 401, and the last refresh before giving up
    assert len([k for k in secrets if k.startswith("access token")]) == 3

    main = threading.main_thread().name
    service = [
        r
        for r in caplog.records
        # The fake EHR's own records, and those of the test's browser client, are not ours.
        if r.threadName != "fake-ehr"
        and not (r.threadName == main and r.name.startswith(("httpx", "httpcore")))
    ]
    assert any(r.name == "carecoord.http" for r in service)  # the service did log ...
    assert any(r.name.startswith("httpx") for r in service)  # ... and so did its EHR client
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {getattr(r, 'args', '')}" for r in service
    )
    for what, value in secrets.items():
        assert value not in text, f"{what} appears in the logs"
