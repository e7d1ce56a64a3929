"""Bulk Data ``$export`` import against a fake export server (respx): kick-off, polling,
bounded parallel streamed downloads, crash and resume, export failure, bearer, next ``_since``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import respx
from sqlalchemy import Engine, func, select

from carecoord.events import AdtIntake
from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resource_versions, resources
from carecoord.jobs import Registry
from carecoord.sync.bulk import (
    BULK_KIND,
    BulkEvent,
    BulkExportFailed,
    BulkHandler,
    BulkOptions,
    BulkReport,
    ExportSpec,
    enqueue_bulk,
    register_bulk_handlers,
    run_bulk,
)
from carecoord.sync.bulk_tables import bulk_checkpoints, bulk_exports, bulk_files
from carecoord.sync.errors import SyncConfigError
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, local_id
from carecoord.sync.tables import sync_connections, sync_identities
from integrations.hl7v2 import FeedConfig
from tests.events.messages import admit
from tests.sync.conftest import CONNECTION, RuntimeFactory, Sleeps, run
from tests.sync.fake_fhir import FakeFhir

BASE = "https://ehr.example.org/fhir"
STATUS_URL = "https://ehr.example.org/fhir/$export-status/job-1"
FILES = "https://ehr.example.org/files"
TX_TIME = "2030-01-01T11:58:30.123Z"


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "meta": {"versionId": "1", "lastUpdated": "2030-01-01T10:00:00Z"},
        "name": [{"family": f"Bulkname{i}"}],
    }


def encounter(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"e{i}",
        "meta": {"versionId": "2"},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/p{i % 7}"},
        "serviceProvider": {"reference": f"{BASE}/Organization/org1"},
    }


def condition(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c{i}",
        "subject": {"reference": f"Patient/p{i % 7}"},
        "code": {"text": "something"},
    }


def observation(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"text": "a lab"},
        "subject": {"reference": f"Patient/p{i % 7}"},
    }


def default_files() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """name -> (type, resources): five files, 34 resources."""
    return {
        "patient-1.ndjson": ("Patient", [patient(i) for i in range(4)]),
        "patient-2.ndjson": ("Patient", [patient(i) for i in range(4, 7)]),
        "encounter-1.ndjson": ("Encounter", [encounter(i) for i in range(12)]),
        "condition-1.ndjson": ("Condition", [condition(i) for i in range(6)]),
        "observation-1.ndjson": ("Observation", [observation(i) for i in range(9)]),
    }


class Lines(httpx.AsyncByteStream):
    """An NDJSON body streamed a line at a time, counted as open while it is read."""

    def __init__(self, server: BulkServer, lines: list[bytes]) -> None:
        self.server = server
        self.lines = lines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.server.active += 1
        self.server.max_active = max(self.server.max_active, self.server.active)
        try:
            for line in self.lines:
                await asyncio.sleep(0)
                yield line
        finally:
            self.server.active -= 1


def outcome(code: str = "exception") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": "Patient Bulkname3 broke it"}],
    }


@dataclass
class BulkServer:
    """The EHR's Bulk Data endpoints: kick-off, a status URL that answers ``polls`` first, then
    the manifest (or ``status_failure``), the files, and DELETE."""

    files: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=default_files)
    polls: list[httpx.Response] = field(default_factory=list)
    status_failure: httpx.Response | None = None
    requires_token: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    kickoffs: list[httpx.Request] = field(default_factory=list)
    status_requests: list[httpx.Request] = field(default_factory=list)
    downloads: list[httpx.Request] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    deletes: int = 0
    active: int = 0
    max_active: int = 0

    def kick_off(self, request: httpx.Request) -> httpx.Response:
        self.kickoffs.append(request)
        return httpx.Response(202, headers={"Content-Location": STATUS_URL})

    def status(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            self.deletes += 1
            return httpx.Response(202)
        self.status_requests.append(request)
        if self.polls:
            return self.polls.pop(0)
        if self.status_failure is not None:
            return self.status_failure
        manifest = {
            "transactionTime": TX_TIME,
            "request": f"{BASE}/$export",
            "requiresAccessToken": self.requires_token,
            "output": [
                {"type": res_type, "url": f"{FILES}/{name}", "count": len(items)}
                for name, (res_type, items) in self.files.items()
                if res_type in self.exported_types()
            ],
            "error": [
                {"type": "OperationOutcome", "url": f"{FILES}/errors.ndjson"}
                for _ in self.errors[:1]
            ],
        }
        return httpx.Response(200, json=manifest)

    def exported_types(self) -> set[str]:
        asked = self.kickoffs[-1].url.params.get("_type")
        return set(asked.split(",")) if asked else {t for t, _ in self.files.values()}

    def download(self, request: httpx.Request) -> httpx.Response:
        self.downloads.append(request)
        name = request.url.path.rsplit("/", 1)[-1]
        if name in self.gone:
            return httpx.Response(410)
        if name == "errors.ndjson":
            items = self.errors
        else:
            _, items = self.files[name]
        body = [orjson.dumps(item) + b"\n" for item in items]
        return httpx.Response(
            200, stream=Lines(self, body), headers={"Content-Type": "application/fhir+ndjson"}
        )


@pytest.fixture
def server() -> BulkServer:
    return BulkServer()


@pytest.fixture
def bulk_http(server: BulkServer, fake: FakeFhir) -> Iterator[respx.MockRouter]:
    """Bulk endpoints first; SMART discovery and the token endpoint from the fake EHR."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(
            host="ehr.example.org", path__regex=r"/fhir/(Group/[^/]+/|Patient/)?\$export$"
        ).mock(side_effect=server.kick_off)
        mock.route(host="ehr.example.org", path__startswith="/fhir/$export-status/").mock(
            side_effect=server.status
        )
        mock.route(host="ehr.example.org", path__startswith="/files/").mock(
            side_effect=server.download
        )
        mock.route(host="ehr.example.org").mock(side_effect=fake.handle)
        yield mock


pytestmark = pytest.mark.usefixtures("bulk_http")

OPTIONS = BulkOptions(parallel=3, batch_lines=2)
TOTAL = 34


def import_once(
    make_runtime: RuntimeFactory,
    sleeps: Sleeps,
    spec: ExportSpec,
    *,
    events: list[BulkEvent] | None = None,
    crash_after: int | None = None,
    options: BulkOptions = OPTIONS,
) -> BulkReport:
    batches = 0

    def progress(event: BulkEvent) -> None:
        nonlocal batches
        if events is not None:
            events.append(event)
        if event.phase == "batch":
            batches += 1
            if crash_after is not None and batches >= crash_after:
                raise Crash("the worker died")

    async def go() -> BulkReport:
        runtime = make_runtime()
        try:
            return await run_bulk(
                runtime, CONNECTION, spec, options=options, progress=progress, sleep=sleeps
            )
        finally:
            await runtime.aclose()

    return run(go())


class Crash(Exception):
    pass


def totals(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(resources)).scalar_one()
        versions = conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
    return count, versions


def offsets(engine: Engine) -> dict[int, tuple[int, bool]]:
    with engine.connect() as conn:
        rows = conn.execute(select(bulk_files.c.seq, bulk_files.c.line_offset, bulk_files.c.done))
        return {r.seq: (int(r.line_offset), bool(r.done)) for r in rows}


def export_row(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(bulk_exports).order_by(bulk_exports.c.id.desc())).first()


def test_group_export_polls_downloads_in_parallel_and_stores_with_local_identity(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    server.polls = [
        httpx.Response(202, headers={"Retry-After": "2", "X-Progress": "10% done"}),
        httpx.Response(202, headers={"Retry-After": "3", "X-Progress": "60% done"}),
    ]
    events: list[BulkEvent] = []
    spec = ExportSpec.of(group="g1", types=["Patient,Encounter", "Condition", "Observation"])
    report = import_once(make_runtime, sleeps, spec, events=events)

    (kick,) = server.kickoffs
    assert kick.url.path == "/fhir/Group/g1/$export"
    assert kick.headers["Prefer"] == "respond-async"
    assert kick.headers["Accept"] == "application/fhir+json"
    assert dict(kick.url.params) == {"_type": "Condition,Encounter,Observation,Patient"}
    assert sleeps == [2.0, 3.0]  # Retry-After honoured, through the injected sleep
    assert [e.progress for e in events if e.phase == "poll"] == ["10% done", "60% done"]
    assert len(server.downloads) == 5
    assert server.max_active == 3  # bounded: never more than three files at once
    assert server.deletes == 1

    assert report.kicked_off and not report.resumed
    assert report.counts.fetched == TOTAL and report.counts.written == TOTAL
    assert report.counts.rejected == 0
    assert report.transaction_time == TX_TIME
    assert totals(engine) == (TOTAL, TOTAL)
    assert set(offsets(engine).values()) == {(4, True), (3, True), (12, True), (6, True), (9, True)}

    store = FhirStore(engine)
    stored = store.read("Encounter", local_id(CONNECTION, "Encounter", "e8"))
    assert stored.content is not None
    e8 = orjson.loads(stored.content)
    assert e8["subject"] == {"reference": f"Patient/{local_id(CONNECTION, 'Patient', 'p1')}"}
    assert e8["serviceProvider"] == {
        "reference": f"Organization/{local_id(CONNECTION, 'Organization', 'org1')}"
    }
    assert e8["meta"]["source"] == f"{BASE}/Encounter/e8"
    assert {"system": SOURCE_TAG_SYSTEM, "code": CONNECTION} in e8["meta"]["tag"]
    with engine.connect() as conn:
        org = conn.execute(
            select(sync_identities).where(sync_identities.c.res_type == "Organization")
        ).one()
        assert org.pulled_at is None  # referenced, to be fetched later
        row = conn.execute(select(bulk_exports)).one()
        assert row.status == "done" and row.scope == "group:g1"
        assert row.progress == "60% done"


def test_crash_in_the_middle_resumes_from_the_committed_offsets(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    spec = ExportSpec.of(types=["Patient", "Encounter", "Condition", "Observation"])
    with pytest.raises(Crash):
        import_once(make_runtime, sleeps, spec, crash_after=4)
    after_crash = offsets(engine)
    committed = sum(offset for offset, _ in after_crash.values())
    assert 0 < committed < TOTAL
    assert any(offset > 0 and not done for offset, done in after_crash.values())  # mid-file
    count, versions = totals(engine)
    assert count == versions == committed
    row = export_row(engine)
    assert row.status == "downloading" and row.manifest is not None

    polls = len(server.status_requests)
    report = import_once(make_runtime, sleeps, spec)
    assert len(server.kickoffs) == 1  # the stored manifest is reused
    assert len(server.status_requests) == polls
    assert report.resumed and not report.kicked_off
    # exactly the lines not committed before the crash were read and stored again
    assert report.counts.fetched == TOTAL - committed
    assert report.counts.written == TOTAL - committed
    assert totals(engine) == (TOTAL, TOTAL)  # no duplicate version, no gap
    assert all(done for _, done in offsets(engine).values())
    assert export_row(engine).status == "done"


def test_a_crash_while_polling_re_polls_the_stored_status_url(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    server.polls = [httpx.Response(202, headers={"X-Progress": "busy"})]
    spec = ExportSpec.of(patient=True, types=["Patient"])

    def stop(event: BulkEvent) -> None:
        raise Crash("the worker died while polling")

    async def go() -> None:
        runtime = make_runtime()
        try:
            await run_bulk(runtime, CONNECTION, spec, progress=stop, sleep=sleeps)
        finally:
            await runtime.aclose()

    with pytest.raises(Crash):
        run(go())
    assert export_row(engine).status == "polling"
    report = import_once(make_runtime, sleeps, spec)
    assert len(server.kickoffs) == 1 and report.resumed
    assert server.kickoffs[0].url.path == "/fhir/Patient/$export"
    assert report.counts.written == 7


def test_export_error_is_fatal_and_recorded_without_diagnostics(
    server: BulkServer,
    make_runtime: RuntimeFactory,
    sleeps: Sleeps,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.status_failure = httpx.Response(500, json=outcome("exception"))
    spec = ExportSpec.of(types=["Patient"])
    with pytest.raises(BulkExportFailed) as failed:
        import_once(make_runtime, sleeps, spec)
    assert failed.value.status == 500
    assert len(server.status_requests) == 1  # not retried: the export itself failed
    row = export_row(engine)
    assert row.status == "failed"
    assert "500" in row.error and "error/exception" in row.error
    assert "Bulkname" not in row.error and "Bulkname" not in caplog.text
    with engine.connect() as conn:
        health = conn.execute(select(sync_connections)).one()
    assert health.consecutive_failures == 1 and "BulkExportFailed" in health.last_error
    assert not server.downloads

    server.status_failure = None  # the next run starts a new export
    report = import_once(make_runtime, sleeps, spec)
    assert report.kicked_off and len(server.kickoffs) == 2


def test_a_5xx_without_outcome_while_polling_is_retried(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    server.polls = [httpx.Response(502), httpx.Response(429, headers={"Retry-After": "7"})]
    report = import_once(make_runtime, sleeps, ExportSpec.of(types=["Condition"]))
    assert report.counts.written == 6
    assert 7.0 in sleeps


def test_requires_access_token_sends_the_bearer_on_downloads(
    server: BulkServer, fake: FakeFhir, make_runtime: RuntimeFactory, sleeps: Sleeps
) -> None:
    server.requires_token = True
    import_once(make_runtime, sleeps, ExportSpec.of(types=["Patient"]))
    assert server.downloads
    for request in server.downloads:
        assert request.headers["Authorization"] == f"Bearer token-{fake.tokens_issued}"
        assert request.headers["Accept"] == "application/fhir+ndjson"


def test_no_bearer_on_downloads_unless_required(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps
) -> None:
    import_once(make_runtime, sleeps, ExportSpec.of(types=["Patient"]))
    assert server.downloads
    assert all("Authorization" not in r.headers for r in server.downloads)
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in server.status_requests)


def test_next_since_is_the_transaction_time_and_errors_are_counted(
    server: BulkServer,
    make_runtime: RuntimeFactory,
    sleeps: Sleeps,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.errors = [outcome("not-found"), outcome("processing")]
    spec = ExportSpec.of(types=["Observation"])
    first = import_once(make_runtime, sleeps, spec)
    assert "_since" not in dict(server.kickoffs[0].url.params)
    assert (first.error_files, first.error_lines) == (1, 2)
    assert "Bulkname" not in caplog.text
    with engine.connect() as conn:
        (since,) = conn.execute(select(bulk_checkpoints.c.since)).one()
        assert since == TX_TIME
        assert conn.execute(select(bulk_exports.c.error_lines)).scalar_one() == 2

    second = import_once(make_runtime, sleeps, spec)
    assert dict(server.kickoffs[1].url.params) == {"_type": "Observation", "_since": TX_TIME}
    assert second.since == TX_TIME
    assert second.counts.skipped == 9 and second.counts.written == 0  # same versions again
    assert totals(engine) == (9, 9)


def test_an_expired_file_fails_the_export(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    server.gone.add("condition-1.ndjson")
    with pytest.raises(BulkExportFailed):
        import_once(make_runtime, sleeps, ExportSpec.of(types=["Condition"]))
    assert export_row(engine).status == "failed"


def test_spec_validation_and_job_wiring(engine: Engine) -> None:
    with pytest.raises(SyncConfigError):
        ExportSpec.of(types=["NotAType"])
    with pytest.raises(SyncConfigError):
        ExportSpec.of(group="a/b")
    with pytest.raises(SyncConfigError):
        ExportSpec.of(group="g", patient=True)
    assert ExportSpec.of().path() == "$export"

    registry = Registry()
    register_bulk_handlers(registry)
    register_bulk_handlers(registry)
    assert isinstance(registry.get(BULK_KIND), BulkHandler)
    spec = ExportSpec.of(group="g1", types=["Patient"])
    with engine.begin() as conn:
        first = enqueue_bulk(conn, connection=CONNECTION, spec=spec, slot="2030-01-01")
        again = enqueue_bulk(conn, connection=CONNECTION, spec=spec, slot="2030-01-01")
    assert first is not None and again is None


def test_an_import_adopts_the_patient_and_encounter_an_adt_message_created(
    server: BulkServer, make_runtime: RuntimeFactory, sleeps: Sleeps, engine: Engine
) -> None:
    feed = FeedConfig(
        patient_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.1"},
        visit_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.2"},
    )
    intake = AdtIntake(FhirStore(engine), source="mllp:test", config=feed)
    patient_ref, encounter_ref = intake.handle(admit()).produced  # MRN12345, visit V0001
    mrn = {"system": "urn:oid:2.16.840.1.113883.3.4711.1.1", "value": "MRN12345"}
    visit = {"system": "urn:oid:2.16.840.1.113883.3.4711.1.2", "value": "V0001"}
    server.files = {
        "patient.ndjson": ("Patient", [{**patient(1), "identifier": [mrn]}]),
        "encounter.ndjson": ("Encounter", [{**encounter(1), "identifier": [visit]}]),
        "condition.ndjson": ("Condition", [{**condition(1), "encounter": {
            "reference": "Encounter/e1"}}]),
    }  # fmt: skip

    import_once(make_runtime, sleeps, ExportSpec.of(types=["Patient,Encounter,Condition"]))

    store = FhirStore(engine)
    for reference in (patient_ref, encounter_ref):
        res_type, _, res_id = reference.partition("/")
        (only,) = store.search(store.parse(res_type, [])).matches
        assert only[1] == res_id
    stored = store.read("Condition", local_id(CONNECTION, "Condition", "c1")).content
    assert stored is not None
    found = orjson.loads(stored)
    assert (found["subject"], found["encounter"]) == (
        {"reference": patient_ref},
        {"reference": encounter_ref},
    )
    encounter_body = store.read(*encounter_ref.split("/")).content
    assert encounter_body is not None
    assert orjson.loads(encounter_body)["meta"]["source"] == f"{BASE}/Encounter/e1"
