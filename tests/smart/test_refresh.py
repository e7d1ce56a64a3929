"""Refreshing a session's EHR tokens: before expiry, once on a 401, rotation of the refresh token,
and giving up (the user launches again)."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from carecoord.crypto import Encryptor
from carecoord.smart.tables import smart_sessions
from tests.smart.conftest import launch
from tests.smart.fake_ehr import PATIENT_ID, FakeEhr

SECRET = b"test-secret-key-with-at-least-32-characters"


def _stored(engine: Engine) -> tuple[str, str | None, int]:
    with engine.connect() as conn:
        row = conn.execute(select(smart_sessions)).one()
    enc = Encryptor(SECRET, "smart-token-encryption")
    refresh = enc.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None
    return enc.decrypt(row.access_token_enc), refresh, row.token_version


def _refreshes(ehr: FakeEhr) -> int:
    return sum(1 for form in ehr.token_forms if form.get("grant_type") == "refresh_token")


def test_a_401_from_the_ehr_refreshes_once_and_retries(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    launch(browser, ehr)
    before, refresh, version = _stored(engine)
    ehr.fhir_unauthorized = 1
    page = browser.get("/app/patient")
    assert page.status_code == 200 and "Zebedeea" in page.text
    assert _refreshes(ehr) == 1
    after, same_refresh, new_version = _stored(engine)
    assert after != before and new_version == version + 1
    assert same_refresh == refresh  # not rotated: the old refresh token is kept


def test_a_second_401_gives_up_and_ends_the_session(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    launch(browser, ehr)
    ehr.fhir_always_unauthorized = True
    page = browser.get("/app/patient")
    assert page.status_code == 401
    assert "launch again" in page.text
    assert _refreshes(ehr) == 1  # exactly one refresh, then it gave up
    with engine.connect() as conn:
        assert conn.execute(select(smart_sessions)).first() is None


def test_rotated_refresh_token_replaces_the_old_one(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    ehr.rotate_refresh_tokens = True
    launch(browser, ehr)
    _, first, _ = _stored(engine)
    ehr.fhir_unauthorized = 1
    assert browser.get("/app/patient").status_code == 200
    _, second, _ = _stored(engine)
    assert second is not None and second != first
    assert ehr.refresh_tokens[str(first)].revoked  # the EHR rotated it out
    ehr.fhir_unauthorized = 1
    assert browser.get("/app/patient").status_code == 200  # the new one works
    _, third, _ = _stored(engine)
    assert third not in (first, second)
    assert [f["refresh_token"] for f in ehr.token_forms if "refresh_token" in f] == [first, second]


def test_token_about_to_expire_is_refreshed_before_the_call(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    launch(browser, ehr)
    with engine.begin() as conn:
        conn.execute(update(smart_sessions).values(token_expires_at=0))
    assert browser.get("/app/patient").status_code == 200
    assert _refreshes(ehr) == 1
    assert ehr.patient_reads == 1  # no 401 round trip was needed


def test_refused_refresh_means_launch_again(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    launch(browser, ehr)
    for token in ehr.refresh_tokens.values():
        token.revoked = True
    ehr.fhir_unauthorized = 1
    page = browser.get("/app/patient")
    assert page.status_code == 401
    assert "launch again" in page.text


def test_no_refresh_token_means_launch_again(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    launch(browser, ehr)
    with engine.begin() as conn:
        conn.execute(update(smart_sessions).values(refresh_token_enc=None))
    ehr.fhir_unauthorized = 1
    assert browser.get("/app/patient").status_code == 401
    assert _refreshes(ehr) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_token_endpoint_down_during_refresh_is_a_502(
    browser: TestClient, ehr: FakeEhr, status: int, engine: Engine
) -> None:
    import httpx

    from carecoord.fhir.errors import FhirError
    from carecoord.fhir.store import FhirStore

    with contextlib.suppress(FhirError):  # nothing of ours to fall back on
        FhirStore(engine).delete("Patient", PATIENT_ID)
    launch(browser, ehr)
    ehr.fhir_unauthorized = 1
    ehr.token_failure = httpx.Response(status)
    assert browser.get("/app/patient").status_code == 502


@pytest.mark.parametrize("status", [500, 503])
def test_with_the_ehr_down_the_page_shows_carecoords_record(
    browser: TestClient, ehr: FakeEhr, status: int, engine: Engine
) -> None:
    import httpx

    from carecoord.fhir.store import FhirStore

    body = {"resourceType": "Patient", "id": PATIENT_ID, "gender": "female"}
    FhirStore(engine).update("Patient", PATIENT_ID, body)  # the patient, synced earlier
    launch(browser, ehr)
    ehr.fhir_unauthorized = 1
    ehr.token_failure = httpx.Response(status)
    page = browser.get("/app/patient")
    assert page.status_code == 200
    assert "The EHR could not be reached" in page.text


def test_a_refresh_by_another_process_is_picked_up(
    browser: TestClient, ehr: FakeEhr, engine: Engine
) -> None:
    """A stale view of the tokens must not refresh again (nor store an old refresh token)."""
    import asyncio

    from carecoord.smart.ehrapi import refresh_session
    from carecoord.smart.sessions import SessionStore

    launch(browser, ehr)
    runtime = browser.app.state.smart  # type: ignore[attr-defined]
    with engine.connect() as conn:
        session_id = conn.execute(select(smart_sessions.c.id_hash)).scalar_one()
    store = SessionStore(runtime)
    stale = store.tokens(session_id)
    assert stale is not None
    with engine.begin() as conn:  # another process refreshed meanwhile
        conn.execute(update(smart_sessions).values(token_version=stale.version + 1))

    class _Session:
        id = session_id
        connection = "test-ehr"

    result = asyncio.run(refresh_session(runtime, _Session(), stale))  # type: ignore[arg-type]
    assert result.version == stale.version + 1
    assert _refreshes(ehr) == 0
