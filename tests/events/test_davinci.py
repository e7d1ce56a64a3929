"""Da Vinci Unsolicited Notifications at ``POST /fhir/$process-message``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.events import EventStatus, list_events
from carecoord.events import intake as intake_module
from carecoord.events.davinci import EVENT_SYSTEM
from carecoord.settings import Settings
from tests.auth.helpers import bearer, issue_token
from tests.events import fhir_events as fe

URL = "/fhir/$process-message"
SOURCE = "davinci:test-system"


def send(api: TestClient, data: Any) -> Any:
    content = data if isinstance(data, bytes) else fe.body(data)
    return api.post(URL, content=content, headers=fe.FHIR)


def test_admit_stores_the_carried_resources_with_their_ids(api: TestClient, engine: Engine) -> None:
    answer = send(api, fe.message("notification-admit", fe.encounter(), fe.patient()))
    assert answer.status_code == 200
    assert answer.json()["resourceType"] == "OperationOutcome"
    encounter = fe.stored(engine, "Encounter", "enc-1")
    assert encounter is not None
    assert encounter["subject"] == {"reference": "Patient/pat-1"}  # urn:uuid fullUrl rewritten
    org_ref = encounter["serviceProvider"]["reference"]
    org_type, org_id = org_ref.split("/")
    assert org_type == "Organization" and fe.stored(engine, org_type, org_id) is not None
    assert fe.stored(engine, "Patient", "pat-1") is not None
    assert fe.count(engine, "MessageHeader") == 0
    (job,) = fe.automation_jobs(engine)
    assert (job["event"], job["encounter_id"], job["version"], job["source"]) == (
        "admit",
        "enc-1",
        1,
        SOURCE,
    )
    (event,) = list_events(engine)
    assert (event.source, event.kind, event.status) == (
        SOURCE,
        "notification-admit",
        EventStatus.PROCESSED,
    )
    assert event.key == "https://hospital.example.org/alerts|header|msg-1"
    assert set(event.produced) == {"Encounter/enc-1", "Patient/pat-1", org_ref}


def test_discharge_and_transfer_take_the_declared_event(api: TestClient, engine: Engine) -> None:
    send(api, fe.message("notification-admit", fe.encounter(), fe.patient(), message_id="m1"))
    # The sender says transfer; the data alone (same ward) would say nothing happened.
    moved = fe.encounter()
    moved["period"] = {"start": "2025-07-01T09:00:00Z"}
    send(api, fe.message("notification-transfer", moved, fe.patient(), message_id="m2"))
    send(api, fe.message("notification-discharge", fe.discharged(), fe.patient(), message_id="m3"))
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"]) for j in jobs] == [
        ("admit", 1),
        ("transfer", 2),
        ("discharge", 3),
    ]


def test_a_replayed_message_changes_nothing(api: TestClient, engine: Engine) -> None:
    message = fe.message("notification-admit", fe.encounter(), fe.patient(), identifier="b-1")
    send(api, message)
    before = fe.snapshot(engine)
    again = send(api, message)
    assert again.status_code == 200
    assert "nothing changed" in again.json()["issue"][0]["diagnostics"]
    # The same Bundle identifier with other content (a resend rebuilt by the sender).
    rebuilt = fe.message(
        "notification-admit", fe.encounter(ward="ICU"), fe.patient(), identifier="b-1"
    )
    assert send(api, rebuilt).status_code == 200
    assert fe.snapshot(engine) == before
    assert len(fe.automation_jobs(engine)) == 1


def test_another_sender_has_its_own_keys(
    events_app: FastAPI, api: TestClient, engine: Engine, settings: Settings
) -> None:
    send(api, fe.message("notification-admit", fe.encounter(), fe.patient()))
    token = issue_token(engine, settings, "system/*.cruds", client_id="other-hospital")
    with TestClient(events_app, headers=bearer(token)) as other:
        answer = send(other, fe.message("notification-admit", fe.encounter(), fe.patient()))
        assert answer.status_code == 200
    assert [e.source for e in list_events(engine)] == [SOURCE, "davinci:other-hospital"]
    assert len(fe.automation_jobs(engine)) == 1  # the same content: no new version


def test_the_writes_are_audited_in_their_transaction(api: TestClient, engine: Engine) -> None:
    send(api, fe.message("notification-admit", fe.encounter(), fe.patient()))
    audits = fe.stored_all(engine, "AuditEvent")
    targets = {e["what"].get("reference") for a in audits for e in a["entity"] if "what" in e}
    assert {"Encounter/enc-1", "Patient/pat-1"} <= targets
    assert {a["agent"][0]["who"]["identifier"]["value"] for a in audits} == {"test-system"}


def test_without_credentials_401(anonymous_api: TestClient, engine: Engine) -> None:
    answer = send(anonymous_api, fe.message("notification-admit", fe.encounter(), fe.patient()))
    assert answer.status_code == 401
    assert fe.snapshot(engine) == (0, 0, 0, 0)


def bad(data: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**data, **change}


ADMIT = fe.message("notification-admit", fe.encounter(), fe.patient())


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        (fe.body(bad(ADMIT, type="transaction")), 400),
        (fe.body(bad(ADMIT, entry=ADMIT["entry"][1:])), 400),
        (fe.body(bad(ADMIT, entry=[ADMIT["entry"][0], {"fullUrl": "urn:uuid:x"}])), 400),
        (
            fe.body(
                bad(
                    ADMIT,
                    entry=[
                        *ADMIT["entry"][:2],
                        {"resource": {"resourceType": "Patient", "birthDate": "yesterday"}},
                    ],
                )
            ),
            400,
        ),
        (fe.body(fe.message("notification-referral", fe.encounter(), fe.patient())), 422),
        (
            fe.body(
                fe.message("notification-admit", fe.encounter(), fe.patient(), system="urn:other")
            ),
            422,
        ),
        (fe.body(bad(ADMIT, entry=[ADMIT["entry"][0], *ADMIT["entry"][2:]])), 422),
    ],
    ids=["json", "type", "no-header", "no-resource", "invalid", "event", "system", "no-focus"],
)
def test_refused_messages_are_kept_as_rejected(
    api: TestClient, engine: Engine, payload: bytes, status: int
) -> None:
    answer = send(api, payload)
    assert answer.status_code == status
    assert answer.json()["resourceType"] == "OperationOutcome"
    (event,) = list_events(engine)
    assert (event.status, event.source, event.payload) == (EventStatus.REJECTED, SOURCE, payload)
    assert fe.snapshot(engine)[0] == 0 and fe.snapshot(engine)[3] == 0


def test_a_rejected_message_sent_again_corrected_is_processed(
    api: TestClient, engine: Engine
) -> None:
    broken = fe.message("notification-admit", fe.encounter(), fe.patient())
    broken["entry"][1]["resource"]["period"] = {"start": "whenever"}
    assert send(api, broken).status_code == 400
    assert send(api, ADMIT).status_code == 200
    (event,) = list_events(engine)
    assert (event.status, event.attempts) == (EventStatus.PROCESSED, 2)


def test_scopes_apply_to_the_carried_resources(
    events_app: FastAPI, engine: Engine, settings: Settings
) -> None:
    token = issue_token(engine, settings, "system/Encounter.cu system/Organization.cu")
    with TestClient(events_app, headers=bearer(token)) as api:
        answer = send(api, ADMIT)
    assert answer.status_code == 403
    (event,) = list_events(engine)
    assert event.status is EventStatus.REJECTED
    assert fe.snapshot(engine)[0:2] == (0, 0) and fe.automation_jobs(engine) == []


def test_a_failure_mid_transaction_stores_nothing_and_a_retry_succeeds_once(
    api: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = intake_module.record_event
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> tuple[int, bool]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_module, "record_event", failing)
    assert send(api, ADMIT).status_code == 503
    assert fe.snapshot(engine) == (0, 0, 0, 0)
    assert send(api, ADMIT).status_code == 200
    assert send(api, ADMIT).status_code == 200
    assert len(list_events(engine)) == 1 and len(fe.automation_jobs(engine)) == 1


def test_no_patient_data_in_the_logs(
    api: TestClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    send(api, fe.message("notification-admit", fe.encounter(), fe.patient(family="Zyxwvut")))
    broken = fe.message("notification-admit", fe.encounter(), fe.patient(family="Zyxwvut"))
    broken["entry"][2]["resource"]["birthDate"] = "Zyxwvut"
    send(api, broken)
    assert caplog.records
    assert "Zyxwvut" not in caplog.text and "MRN-pat-1" not in caplog.text
    assert EVENT_SYSTEM not in caplog.text
