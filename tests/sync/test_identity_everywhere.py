"""One EHR resource, one local resource: notifications, Da Vinci messages, pulls and fetches of a
configured connection all go through the sync identity map (ADR 0021)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from carecoord.app import create_app
from carecoord.events import SYNC_FETCH, list_events
from carecoord.events.channels import Channel
from carecoord.events.notifications import receive_notification
from carecoord.events.senders import load_senders
from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resource_versions, resources
from carecoord.jobs import Registry, Worker, list_jobs
from carecoord.jobs.clock import Clock as JobClock
from carecoord.settings import ConfigError, Settings
from carecoord.sync.config import SyncConfig, parse_population
from carecoord.sync.fetch import register_fetch_handlers
from carecoord.sync.handlers import PULL_KIND
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, local_id
from carecoord.sync.runtime import SyncRuntime
from carecoord.sync.tables import sync_checkpoints, sync_identities
from carecoord.sync.upsert import Origin
from tests.auth.helpers import bearer, issue_token
from tests.events import fhir_events as fe
from tests.sync.conftest import CONNECTION, Clock, RuntimeFactory, Sleeps, run
from tests.sync.fake_fhir import FakeFhir

pytestmark = pytest.mark.usefixtures("ehr_http")

CHANNEL_URL = f"/notifications/subscription/{CONNECTION}"
ENC = local_id(CONNECTION, "Encounter", "enc-1")
PAT = local_id(CONNECTION, "Patient", "pat-1")
SENDER = "adt-notifier"


@pytest.fixture
def api(connected: Settings, engine: Engine) -> Iterator[TestClient]:
    """The app (with the fake EHR's connection configured) and a system client's token."""
    folder = connected.config_dir / "davinci"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "senders.toml").write_text(f'[senders.{SENDER}]\nconnection = "{CONNECTION}"\n')
    channels = connected.config_dir / "notifications"
    channels.mkdir(parents=True, exist_ok=True)
    (channels / "admissions.toml").write_text(f'connection = "{CONNECTION}"\n')
    app = create_app(connected, engine=engine)
    token = issue_token(engine, connected, "system/*.cruds", client_id="test-system")
    with TestClient(app, base_url="http://testserver", headers=bearer(token)) as client:
        yield client


def notify(api: TestClient, data: dict[str, Any], url: str = CHANNEL_URL) -> Any:
    answer = api.post(url, content=fe.body(data), headers=fe.FHIR)
    assert answer.status_code == 200, answer.text
    return answer


def pull(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    async def go() -> None:
        try:
            await runtime.pull(CONNECTION, parse_population("patients:pat-1"))
        finally:
            await runtime.aclose()

    run(go())


def versions(engine: Engine, res_type: str, res_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(
                    resource_versions.join(resources, resources.c.rid == resource_versions.c.rid)
                )
                .where(resources.c.res_type == res_type, resources.c.res_id == res_id)
            ).scalar_one()
        )


def jobs_of(engine: Engine) -> list[tuple[str, int, str]]:
    return [(j["event"], j["version"], j["source"]) for j in fe.automation_jobs(engine)]


def chart(fake: FakeFhir, **encounter: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The EHR's patient and encounter (stored at the EHR: versionId, lastUpdated)."""
    patient = fake.put(fe.patient())
    enc = fake.put(fe.encounter(**encounter))
    return enc, patient


def local_encounter(engine: Engine) -> dict[str, Any]:
    found = fe.stored(engine, "Encounter", ENC)
    assert found is not None
    return found


# -- full-resource notifications and pulls ------------------------------------------------------


def test_notification_then_pull_make_one_encounter_and_one_job_per_version(
    api: TestClient, engine: Engine, fake: FakeFhir, make_runtime: RuntimeFactory
) -> None:
    enc, patient = chart(fake)
    notify(api, fe.full_resource("1", enc, patient))
    assert fe.count(engine, "Encounter") == 1
    stored = local_encounter(engine)
    assert stored["subject"] == {"reference": f"Patient/{PAT}"}
    assert stored["meta"]["source"] == f"{fake.fhir_base}/Encounter/enc-1"
    assert {"system": SOURCE_TAG_SYSTEM, "code": CONNECTION} in stored["meta"]["tag"]
    assert list_events(engine)[0].produced == (f"Encounter/{ENC}", f"Patient/{PAT}")

    pull(make_runtime)  # the same version again: nothing new
    assert (fe.count(engine, "Encounter"), fe.count(engine, "Patient")) == (1, 1)
    assert versions(engine, "Encounter", ENC) == 1
    assert jobs_of(engine) == [("admit", 1, f"subscription:{CONNECTION}")]

    fake.advance(60)
    fake.put(fe.discharged())  # a real change at the EHR, seen by the pull first
    pull(make_runtime)
    assert versions(engine, "Encounter", ENC) == 2
    discharged = fake.resources[("Encounter", "enc-1")]
    notify(api, fe.full_resource("2", discharged, patient))  # ... then notified: nothing new
    assert versions(engine, "Encounter", ENC) == 2
    assert fe.count(engine, "Encounter") == 1
    assert jobs_of(engine) == [
        ("admit", 1, f"subscription:{CONNECTION}"),
        ("discharge", 2, f"sync:{CONNECTION}"),
    ]


def test_pull_then_notification_make_one_encounter(
    api: TestClient, engine: Engine, fake: FakeFhir, make_runtime: RuntimeFactory
) -> None:
    enc, patient = chart(fake)
    pull(make_runtime)
    before = fe.snapshot(engine)
    notify(api, fe.full_resource("1", enc, patient))
    assert (fe.count(engine, "Encounter"), versions(engine, "Encounter", ENC)) == (1, 1)
    assert jobs_of(engine) == [("admit", 1, f"sync:{CONNECTION}")]
    # Only the event record is new: no resource, version or job.
    after = fe.snapshot(engine)
    assert sum(after) - sum(before) == 1

    fake.advance(60)
    discharged = fake.put(fe.discharged())
    notify(api, fe.full_resource("2", discharged, patient))
    pull(make_runtime)
    assert (fe.count(engine, "Encounter"), versions(engine, "Encounter", ENC)) == (1, 2)
    assert [e for e, _, _ in jobs_of(engine)] == ["admit", "discharge"]
    assert local_encounter(engine)["status"] == "finished"


def test_an_older_notification_after_a_newer_pull_changes_nothing(
    api: TestClient, engine: Engine, fake: FakeFhir, make_runtime: RuntimeFactory
) -> None:
    old, patient = chart(fake)
    fake.advance(60)
    fake.put(fe.discharged())
    pull(make_runtime)
    notify(api, fe.full_resource("1", old, patient))  # delivered late
    assert local_encounter(engine)["status"] == "finished"
    assert versions(engine, "Encounter", ENC) == 1
    assert jobs_of(engine) == [("discharge", 1, f"sync:{CONNECTION}")]


def test_a_replayed_notification_changes_nothing(
    api: TestClient, engine: Engine, fake: FakeFhir
) -> None:
    enc, patient = chart(fake)
    notification = fe.full_resource("1", enc, patient)
    notify(api, notification)
    before = fe.snapshot(engine)
    assert "nothing changed" in notify(api, notification).json()["issue"][0]["diagnostics"]
    assert fe.snapshot(engine) == before


def test_rest_hook_resource_goes_through_the_identity_map(
    api: TestClient, engine: Engine, fake: FakeFhir
) -> None:
    fake.put(fe.patient())
    enc = fake.put(fe.encounter())
    notify(api, enc, url=f"{CHANNEL_URL}/Encounter/enc-1")
    assert fe.stored(engine, "Encounter", "enc-1") is None
    assert local_encounter(engine)["subject"] == {"reference": f"Patient/{PAT}"}


def test_a_channel_file_names_the_connection(
    api: TestClient, engine: Engine, fake: FakeFhir
) -> None:
    enc, patient = chart(fake)
    notify(api, fe.full_resource("1", enc, patient), url="/notifications/subscription/admissions")
    assert fe.stored(engine, "Encounter", "enc-1") is None
    assert local_encounter(engine)["subject"] == {"reference": f"Patient/{PAT}"}


def test_senders_file_is_validated(tmp_path: Path) -> None:
    folder = tmp_path / "davinci"
    folder.mkdir()
    (folder / "senders.toml").write_text('[senders.x]\nconnection = "Not A Name"\n')
    with pytest.raises(ConfigError, match=r"senders.toml: senders.x.connection"):
        load_senders(tmp_path)
    (folder / "senders.toml").write_text('[senders.x]\nconection = "epic"\n')
    with pytest.raises(ConfigError, match=r"senders.x.conection"):
        load_senders(tmp_path)
    assert load_senders(tmp_path / "none").connection_of("x") is None


def test_a_rest_hook_without_payload_queues_a_pull(api: TestClient, engine: Engine) -> None:
    api.post(CHANNEL_URL, content=b"")
    api.post("/notifications/subscription/other", content=b"")  # no such connection
    assert fe.job_payloads(engine, PULL_KIND) == [{"connection": CONNECTION, "population": None}]
    assert [e.kind for e in list_events(engine)] == ["rest-hook:ping", "rest-hook:ping"]


def test_a_burst_of_payloadless_notifications_queues_one_pull_per_minute(
    engine: Engine, fake: FakeFhir
) -> None:
    store = FhirStore(engine)
    origin = Origin(CONNECTION, fake.fhir_base)
    channel = Channel(name=CONNECTION)
    for second, request_id in ((5, "a"), (40, "b"), (59, "c"), (70, "d")):
        receive_notification(
            store,
            b"",
            channel=channel,
            policy=None,
            received_at=datetime(2030, 1, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=second),
            request_id=request_id,
            origin=origin,
        )
    assert len(fe.job_payloads(engine, PULL_KIND)) == 2  # 12:00 and 12:01
    assert len(list_events(engine)) == 4


def test_an_unconfigured_channel_keeps_the_senders_ids(api: TestClient, engine: Engine) -> None:
    other = "/notifications/subscription/other"
    notify(api, fe.full_resource("1", fe.encounter(), fe.patient()), url=other)
    assert fe.stored(engine, "Encounter", "enc-1") is not None
    assert fe.stored(engine, "Encounter", ENC) is None


def test_a_referenced_patient_not_known_yet_is_fetched(
    api: TestClient, engine: Engine, fake: FakeFhir
) -> None:
    enc = fake.put(fe.encounter())
    status = fe.status_parameters(number="1", focus=f"{fe.EHR}/Encounter/enc-1")
    notify(api, fe.notification(status, fe.full_entry(enc)))
    fetches = fe.job_payloads(engine, SYNC_FETCH)
    assert fetches == [{"connection": CONNECTION, "reference": "Patient/pat-1"}]
    with engine.connect() as conn:
        pending: int | None = conn.execute(
            select(sync_identities.c.pulled_at).where(
                sync_identities.c.res_type == "Patient", sync_identities.c.source_id == "pat-1"
            )
        ).scalar_one()
    assert pending is None  # known as referenced, not stored yet


# -- Da Vinci ------------------------------------------------------------------------------------


def test_davinci_from_a_mapped_sender_and_a_pull_make_one_encounter(
    api: TestClient,
    connected: Settings,
    engine: Engine,
    fake: FakeFhir,
    make_runtime: RuntimeFactory,
) -> None:
    enc, patient = chart(fake)
    token = issue_token(engine, connected, "system/*.cruds", client_id=SENDER)
    answer = api.post(
        "/fhir/$process-message",
        content=fe.body(fe.message("notification-admit", enc, patient)),
        headers={**fe.FHIR, **bearer(token)},
    )
    assert answer.status_code == 200, answer.text
    assert fe.stored(engine, "Encounter", "enc-1") is None
    assert local_encounter(engine)["subject"] == {"reference": f"Patient/{PAT}"}
    pull(make_runtime)
    assert (fe.count(engine, "Encounter"), versions(engine, "Encounter", ENC)) == (1, 1)
    assert jobs_of(engine) == [("admit", 1, f"davinci:{SENDER}")]


def test_davinci_from_an_unmapped_sender_keeps_its_ids(
    api: TestClient, engine: Engine, fake: FakeFhir
) -> None:
    enc, patient = chart(fake)
    answer = api.post(
        "/fhir/$process-message",
        content=fe.body(fe.message("notification-admit", enc, patient)),
        headers=fe.FHIR,
    )
    assert answer.status_code == 200, answer.text
    assert fe.stored(engine, "Encounter", "enc-1") is not None
    assert fe.stored(engine, "Encounter", ENC) is None


# -- id-only notifications and the sync.fetch job ------------------------------------------------


@pytest.fixture
def worker(connected: Settings, engine: Engine, sleeps: Sleeps, clock: Clock) -> Worker:
    def runtime(settings: Settings, engine: Engine, job_clock: JobClock) -> SyncRuntime:
        config = SyncConfig({"max_retries": 0, "backoff_base_seconds": 0})
        return SyncRuntime(settings, engine, config=config, sleep=sleeps, clock=job_clock)

    registry = Registry()
    register_fetch_handlers(registry, settings=connected, runtime_factory=runtime)
    return Worker(engine, registry, clock=clock, backoff_base=1, backoff_cap=1)


def fetch_jobs(engine: Engine) -> list[Any]:
    return list_jobs(engine, statuses=("ready", "running", "done", "dead"), kind=SYNC_FETCH)


def test_id_only_notification_is_fetched_once_through_the_identity_map(
    api: TestClient, engine: Engine, fake: FakeFhir, worker: Worker, make_runtime: RuntimeFactory
) -> None:
    chart(fake)
    notify(api, fe.id_only("1"))
    assert sorted(j["reference"] for j in fe.job_payloads(engine, SYNC_FETCH)) == [
        f"{fe.EHR}/Encounter/enc-1",
        f"{fe.EHR}/Patient/pat-1",
    ]
    assert worker.run_once() == 2
    assert [j.status for j in fetch_jobs(engine)] == ["done", "done"]
    assert local_encounter(engine)["subject"] == {"reference": f"Patient/{PAT}"}
    assert fe.stored(engine, "Patient", PAT) is not None
    assert jobs_of(engine) == [("admit", 1, f"sync:{CONNECTION}")]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_checkpoints)).scalar_one() == 0
    reads = [r.path for r in fake.requests if r.path.count("/") == 3 and "well-known" not in r.path]
    assert sorted(reads) == ["/fhir/Encounter/enc-1", "/fhir/Patient/pat-1"]

    # The notification again: nothing; the same event under a new number: fetched, unchanged.
    notify(api, fe.id_only("1"))
    assert len(fetch_jobs(engine)) == 2
    notify(api, fe.id_only("2"))
    while worker.run_once():
        pass
    assert versions(engine, "Encounter", ENC) == 1
    assert len(fe.automation_jobs(engine)) == 1
    pull(make_runtime)  # and the pull agrees
    assert (fe.count(engine, "Encounter"), versions(engine, "Encounter", ENC)) == (1, 1)


def test_fetch_of_a_resource_the_ehr_no_longer_has_ends_quietly(
    api: TestClient, engine: Engine, worker: Worker
) -> None:
    status = fe.status_parameters(number="1", focus=f"{fe.EHR}/Encounter/gone-1")
    notify(api, fe.notification(status))
    assert worker.run_once() == 1
    assert [j.status for j in fetch_jobs(engine)] == ["done"]
    assert fe.count(engine, "Encounter") == 0


def test_fetch_honours_retry_after_and_then_stores(
    api: TestClient, engine: Engine, fake: FakeFhir, worker: Worker, clock: Clock
) -> None:
    chart(fake)
    status = fe.status_parameters(number="1", focus=f"{fe.EHR}/Encounter/enc-1")
    notify(api, fe.notification(status))
    fake.failures.append(httpx.Response(429, headers={"Retry-After": "30"}))
    assert worker.run_once() == 1
    (job,) = fetch_jobs(engine)
    assert job.status == "ready" and job.attempts == 1
    assert job.run_at >= clock.now + timedelta(seconds=30)
    clock.now = job.run_at
    assert worker.run_once() == 1
    assert [j.status for j in fetch_jobs(engine)] == ["done"]
    assert local_encounter(engine)["status"] == "in-progress"


def test_fetch_of_another_servers_resource_is_dead_lettered(
    api: TestClient, engine: Engine, worker: Worker
) -> None:
    status = fe.status_parameters(
        number="1", focus="https://elsewhere.example.net/fhir/Encounter/x"
    )
    notify(api, fe.notification(status))
    assert worker.run_once() == 1
    (job,) = fetch_jobs(engine)
    assert job.status == "dead" and job.last_error is not None
    assert "not to a resource of EHR" in job.last_error


def test_fetch_stores_nothing_when_the_ehr_answers_an_invalid_resource(
    api: TestClient, engine: Engine, fake: FakeFhir, worker: Worker
) -> None:
    fake.resources[("Encounter", "enc-1")] = {"resourceType": "Encounter", "id": "enc-1",
                                              "status": 7, "meta": {"versionId": "1"}}  # fmt: skip
    status = fe.status_parameters(number="1", focus=f"{fe.EHR}/Encounter/enc-1")
    notify(api, fe.notification(status))
    assert worker.run_once() == 1
    (job,) = fetch_jobs(engine)
    assert job.status == "dead"
    assert fe.count(engine, "Encounter") == 0
