"""Subscription notifications over HTTP: backport Bundles, R4 rest-hooks, channels, failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.events import EventStatus, list_events
from carecoord.events import intake as intake_module
from carecoord.events.channels import load_channels
from carecoord.events.runtime import install
from carecoord.settings import ConfigError, Settings
from tests.auth.helpers import bearer, issue_token
from tests.events import fhir_events as fe
from tests.events.conftest import NOW
from tests.sync.conftest import copy_app_config

URL = "/notifications/subscription/epic"
SOURCE = "subscription:epic"


def post(api: TestClient, data: Any, url: str = URL) -> Any:
    content = data if isinstance(data, bytes) else fe.body(data)
    return api.post(url, content=content, headers=fe.FHIR)


def events(engine: Engine) -> list[tuple[str, str, str]]:
    return [(e.source, e.kind, e.status.value) for e in list_events(engine)]


# --- backport notification Bundles --------------------------------------------------------------


def test_full_resource_admit_then_discharge(api: TestClient, engine: Engine) -> None:
    answer = post(api, fe.full_resource("1", fe.encounter(), fe.patient()))
    assert answer.status_code == 200
    assert answer.json()["issue"][0]["severity"] == "information"
    encounter = fe.stored(engine, "Encounter", "enc-1")
    assert encounter is not None and encounter["subject"] == {"reference": "Patient/pat-1"}
    assert fe.stored(engine, "Patient", "pat-1") is not None
    assert post(api, fe.full_resource("2", fe.discharged(), fe.patient())).status_code == 200
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"], j["source"]) for j in jobs] == [
        ("admit", 1, SOURCE),
        ("discharge", 2, SOURCE),
    ]
    assert events(engine) == [
        (SOURCE, "subscription:event-notification", "processed"),
        (SOURCE, "subscription:event-notification", "processed"),
    ]
    first = list_events(engine)[0]
    assert first.produced == ("Encounter/enc-1", "Patient/pat-1")
    assert first.received_at == NOW


def test_a_replayed_notification_changes_nothing(api: TestClient, engine: Engine) -> None:
    notification = fe.full_resource("1", fe.encounter(), fe.patient())
    post(api, notification)
    before = fe.snapshot(engine)
    again = post(api, notification)
    assert again.status_code == 200
    assert "nothing changed" in again.json()["issue"][0]["diagnostics"]
    # A redelivery is a new Bundle (new ids, timestamp) of the same event: still a replay.
    redelivered = fe.full_resource("1", fe.encounter(ward="ICU"), fe.patient())
    assert post(api, redelivered).status_code == 200
    assert fe.snapshot(engine) == before
    assert len(fe.automation_jobs(engine)) == 1


def test_same_content_under_a_new_event_makes_no_version_and_no_job(
    api: TestClient, engine: Engine
) -> None:
    post(api, fe.full_resource("1", fe.encounter(), fe.patient()))
    assert post(api, fe.full_resource("2", fe.encounter(), fe.patient())).status_code == 200
    resources, versions, stored_events, _ = fe.snapshot(engine)
    assert (stored_events, len(fe.automation_jobs(engine))) == (2, 1)
    assert versions == resources  # every resource still at version 1


def test_transfer_through_a_notification(api: TestClient, engine: Engine) -> None:
    post(api, fe.full_resource("1", fe.encounter(), fe.patient()))
    post(api, fe.full_resource("2", fe.encounter(ward="ICU"), fe.patient()))
    assert [j["event"] for j in fe.automation_jobs(engine)] == ["admit", "transfer"]


def test_id_only_enqueues_fetches_for_the_sync_engine(api: TestClient, engine: Engine) -> None:
    assert post(api, fe.id_only("7")).status_code == 200
    assert fe.job_payloads(engine, "sync.fetch") == [
        {"connection": "epic", "reference": f"{fe.EHR}/Encounter/enc-1"},
        {"connection": "epic", "reference": f"{fe.EHR}/Patient/pat-1"},
    ]
    assert fe.count(engine, "Encounter") == 0 and fe.automation_jobs(engine) == []
    before = fe.snapshot(engine)
    assert post(api, fe.id_only("7")).status_code == 200
    assert fe.snapshot(engine) == before


def test_r4b_subscription_status_is_read_too(api: TestClient, engine: Engine) -> None:
    focus = f"{fe.EHR}/Encounter/enc-1"
    bundle = fe.notification(
        fe.status_r4b(number="3", focus=focus),
        fe.full_entry(fe.encounter()),
        fe.full_entry(fe.patient()),
    )
    assert post(api, bundle).status_code == 200
    assert [j["event"] for j in fe.automation_jobs(engine)] == ["admit"]
    assert fe.job_payloads(engine, "sync.fetch") == []


def test_resources_of_other_types_are_fetched_not_written(api: TestClient, engine: Engine) -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/pat-1"},
        "code": {"text": "Pneumonia"},
    }
    focus = f"{fe.EHR}/Condition/c1"
    status = fe.status_parameters(number="4", focus=focus)
    assert post(api, fe.notification(status, fe.full_entry(condition))).status_code == 200
    assert fe.count(engine, "Condition") == 0
    assert fe.job_payloads(engine, "sync.fetch") == [{"connection": "epic", "reference": focus}]


@pytest.mark.parametrize("kind", ["handshake", "heartbeat", "query-status"])
def test_handshake_and_heartbeat_are_answered_and_recorded(
    api: TestClient, engine: Engine, kind: str
) -> None:
    answer = post(api, fe.notification(fe.status_parameters(kind, number="0")))
    assert answer.status_code == 200
    assert events(engine) == [(SOURCE, f"subscription:{kind}", "processed")]
    assert fe.snapshot(engine)[3] == 0  # no jobs


def test_the_writes_are_audited_with_the_caller(api: TestClient, engine: Engine) -> None:
    post(api, fe.full_resource("1", fe.encounter(), fe.patient()))
    audits = fe.stored_all(engine, "AuditEvent")
    assert sorted(a["subtype"][0]["code"] for a in audits) == ["create", "create"]
    assert {a["agent"][0]["who"]["identifier"]["value"] for a in audits} == {"test-system"}
    assert all(a["entity"][0]["what"]["reference"] == "Patient/pat-1" for a in audits)


# --- R4 rest-hook -------------------------------------------------------------------------------


def test_an_empty_rest_hook_post_is_recorded(api: TestClient, engine: Engine) -> None:
    assert api.post(URL).status_code == 200
    assert api.post(URL).status_code == 200
    assert events(engine) == [(SOURCE, "rest-hook:ping", "processed")] * 2


def test_a_rest_hook_with_the_resource_as_payload(api: TestClient, engine: Engine) -> None:
    sent = api.put(f"{URL}/Encounter/enc-1", content=fe.body(fe.encounter()), headers=fe.FHIR)
    assert sent.status_code == 200
    posted = post(api, {**fe.discharged(), "meta": {"versionId": "2"}})
    assert posted.status_code == 200
    assert post(api, {**fe.discharged(), "meta": {"versionId": "2"}}).status_code == 200
    assert [j["event"] for j in fe.automation_jobs(engine)] == ["admit", "discharge"]
    kinds = [kind for _, kind, _ in events(engine)]
    assert kinds == ["rest-hook:Encounter", "rest-hook:Encounter"]
    mismatch = api.put(f"{URL}/Encounter/other", content=fe.body(fe.encounter()), headers=fe.FHIR)
    assert mismatch.status_code == 400


def test_a_rest_hook_resource_of_another_type_is_fetched(api: TestClient, engine: Engine) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Sodium"},
        "subject": {"reference": "Patient/pat-1"},
    }
    sent = api.put(f"{URL}/Observation/o1", content=fe.body(observation), headers=fe.FHIR)
    assert sent.status_code == 200
    assert fe.count(engine, "Observation") == 0
    assert fe.job_payloads(engine, "sync.fetch") == [
        {"connection": "epic", "reference": "Observation/o1"}
    ]


# --- refusals and failures ----------------------------------------------------------------------


def test_without_credentials_401_and_nothing_is_kept(
    anonymous_api: TestClient, engine: Engine
) -> None:
    answer = post(anonymous_api, fe.full_resource("1", fe.encounter(), fe.patient()))
    assert answer.status_code == 401
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert fe.snapshot(engine) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"resourceType": "Bundle", "type": ',
        fe.body(fe.notification({"resourceType": "Patient", "id": "x"})),
        fe.body({"resourceType": "Bundle", "type": "history", "entry": []}),
        fe.body(
            fe.full_resource("1", {**fe.encounter(), "period": {"start": "soon"}}, fe.patient())
        ),
        fe.body(fe.notification(fe.status_parameters("unknown-type"))),
        fe.body({"resourceType": "Encounter", "status": "in-progress"}),
    ],
    ids=["json", "status", "empty", "invalid", "type", "no-id"],
)
def test_malformed_notifications_are_400_and_kept_as_rejected(
    api: TestClient, engine: Engine, payload: bytes
) -> None:
    answer = post(api, payload)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["severity"] == "error"
    (event,) = list_events(engine)
    assert (event.status, event.source, event.payload) == (EventStatus.REJECTED, SOURCE, payload)
    assert event.error is not None and event.error.startswith("400")
    assert fe.snapshot(engine)[0:2] == (0, 0) and fe.snapshot(engine)[3] == 0


def test_a_token_without_the_write_scope_is_403_and_kept(
    events_app: FastAPI, engine: Engine, settings: Settings
) -> None:
    token = issue_token(engine, settings, "system/Patient.cru system/Encounter.r")
    with TestClient(events_app, headers=bearer(token)) as api:
        answer = post(api, fe.full_resource("1", fe.encounter(), fe.patient()))
    assert answer.status_code == 403
    (event,) = list_events(engine)
    assert event.status is EventStatus.REJECTED
    assert fe.count(engine, "Patient") == 0 and fe.automation_jobs(engine) == []


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
    notification = fe.full_resource("1", fe.encounter(), fe.patient())
    answer = post(api, notification)
    assert answer.status_code == 503
    assert fe.snapshot(engine) == (0, 0, 0, 0)  # no event, resource, AuditEvent or job
    assert post(api, notification).status_code == 200
    assert post(api, notification).status_code == 200
    assert len(list_events(engine)) == 1 and len(fe.automation_jobs(engine)) == 1


# --- channels -----------------------------------------------------------------------------------


@pytest.fixture
def channel_settings(settings: Settings, tmp_path: Path) -> Settings:
    folder = tmp_path / "config" / "notifications"
    folder.mkdir(parents=True)
    (folder / "epic.toml").write_text(
        'connection = "epic-prod"\n'
        'clients = ["epic-notifier"]\n'
        'secret_env = "TEST_EPIC_CHANNEL_SECRET"\n'
        'scope = "system/Patient.cu system/Encounter.cu"\n'
    )
    (folder / "example.toml.example").write_text("not = [valid")
    return settings.model_copy(update={"config_dir": copy_app_config(tmp_path / "config")})


SECRET = "s3cret-0123456789-abcdefghij-0123456789"


@pytest.fixture
def channel_app(
    channel_settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FastAPI]:
    monkeypatch.setenv("TEST_EPIC_CHANNEL_SECRET", SECRET)
    app = create_app(channel_settings, engine=engine)
    install(app, channel_settings, engine)
    yield app


def test_a_channel_secret_authenticates_the_ehr(channel_app: FastAPI, engine: Engine) -> None:
    with TestClient(channel_app, headers=bearer(SECRET)) as api:
        assert post(api, fe.id_only("1")).status_code == 200
        assert post(api, fe.full_resource("2", fe.encounter(), fe.patient())).status_code == 200
    assert fe.job_payloads(engine, "sync.fetch")[0]["connection"] == "epic-prod"
    audits = fe.stored_all(engine, "AuditEvent")
    assert {a["agent"][0]["who"]["identifier"]["value"] for a in audits} == {"channel:epic"}
    with TestClient(channel_app, headers=bearer("wrong-" + SECRET)) as api:
        assert post(api, fe.id_only("3")).status_code == 401
    with TestClient(channel_app, headers={"Authorization": SECRET}) as api:
        assert post(api, fe.id_only("3")).status_code == 401
    assert len(list_events(engine)) == 2


def test_a_channel_takes_only_its_clients(
    channel_app: FastAPI, engine: Engine, channel_settings: Settings
) -> None:
    other = issue_token(engine, channel_settings, "system/*.cruds", client_id="someone-else")
    mine = issue_token(engine, channel_settings, "system/*.cruds", client_id="epic-notifier")
    with TestClient(channel_app, headers=bearer(other)) as api:
        assert post(api, fe.id_only("1")).status_code == 403
        elsewhere = post(api, fe.id_only("1"), url="/notifications/subscription/other")
        assert elsewhere.status_code == 200
    with TestClient(channel_app, headers=bearer(mine)) as api:
        assert post(api, fe.id_only("1")).status_code == 200
    assert [e.source for e in list_events(engine)] == ["subscription:other", SOURCE]


def test_channel_files_are_validated(tmp_path: Path) -> None:
    folder = tmp_path / "notifications"
    folder.mkdir()
    (folder / "bad.toml").write_text('upsert_types = ["Patient", "Nope"]\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: upsert_types: unknown resource type"):
        load_channels(tmp_path)
    (folder / "bad.toml").write_text('secret = "in the file"\n')
    with pytest.raises(ConfigError, match="secret: secrets are not kept"):
        load_channels(tmp_path)
    (folder / "bad.toml").write_text('secret_env = "TEST_UNSET_SECRET_VARIABLE"\n')
    with pytest.raises(ConfigError, match="secret_env: environment variable"):
        load_channels(tmp_path, environ={})
    (folder / "bad.toml").write_text("clients = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_channels(tmp_path)
    (folder / "bad.toml").write_text('connection = "epic prod"\n')
    with pytest.raises(ConfigError, match="connection: letters"):
        load_channels(tmp_path)
    (folder / "bad.toml").unlink()
    (folder / "ok.toml").write_text('upsert_types = ["Patient"]\n')
    assert load_channels(tmp_path)["ok"].effective_connection == "ok"


def test_an_impossible_channel_name_is_404(api: TestClient) -> None:
    assert post(api, fe.id_only("1"), url="/notifications/subscription/-bad-").status_code == 404


def test_the_example_channel_file_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "config" / "notifications" / "example.toml.example"
    (tmp_path / "notifications").mkdir()
    (tmp_path / "notifications" / "example.toml").write_bytes(example.read_bytes())
    channel = load_channels(tmp_path)["example"]
    assert (channel.effective_connection, channel.clients) == ("epic-prod", ("epic-notifier",))
