"""Incremental pull against the fake EHR: identity, references, checkpoints, de-duplication,
populations, and crashes between and inside page commits."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx
from sqlalchemy import Engine, func, select

from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resource_versions, resources
from carecoord.settings import Settings
from carecoord.sync.config import Population, parse_population
from carecoord.sync.errors import EhrServerError
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, local_id
from carecoord.sync.pull import PageReport, PullReport
from carecoord.sync.runtime import SyncRuntime
from carecoord.sync.state import FAILED, OK
from carecoord.sync.tables import sync_checkpoints, sync_identities, sync_runs
from tests.sync.conftest import CONNECTION, RuntimeFactory, run, write_sync_config
from tests.sync.ehr_data import EXPECTED, encounter, patient, seed
from tests.sync.fake_fhir import FakeFhir

pytestmark = pytest.mark.usefixtures("ehr_http")

P1_P2 = parse_population("patients:p1,p2")


def pull_once(runtime: SyncRuntime, population: Population = P1_P2, **kw: Any) -> PullReport:
    async def go() -> PullReport:
        try:
            (report,) = await runtime.pull(CONNECTION, population, **kw)
            return report
        finally:
            await runtime.aclose()

    return run(go())


def local(engine: Engine, res_type: str, source_id: str) -> dict[str, Any]:
    stored = FhirStore(engine).read(res_type, local_id(CONNECTION, res_type, source_id))
    assert stored.content is not None
    body: dict[str, Any] = orjson.loads(stored.content)
    return body


def local_keys(engine: Engine) -> set[tuple[str, str]]:
    """(type, source id) of every resource stored, through the identity map."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(sync_identities.c.res_type, sync_identities.c.source_id)
            .select_from(
                sync_identities.join(
                    resources,
                    (resources.c.res_type == sync_identities.c.res_type)
                    & (resources.c.res_id == sync_identities.c.local_id),
                )
            )
            .where(resources.c.deleted.is_(False))
        )
        return {(r[0], r[1]) for r in rows}


def totals(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(resources)).scalar_one()
        versions = conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
    return count, versions


def ref(res_type: str, source_id: str) -> str:
    return f"{res_type}/{local_id(CONNECTION, res_type, source_id)}"


@pytest.fixture
def seeded(fake: FakeFhir) -> FakeFhir:
    fake.advance(-3600)  # the chart was written an hour before the first pull
    seed(fake)
    fake.advance(3600)
    return fake


def test_first_pull_stores_everything_with_local_references(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    report = pull_once(make_runtime())
    assert local_keys(engine) == EXPECTED
    assert report.counts.written == len(EXPECTED) and report.counts.rejected == 0
    assert report.members == 2 and report.new_members == 2

    e1 = local(engine, "Encounter", "e1")
    assert e1["id"] == local_id(CONNECTION, "Encounter", "e1")
    assert e1["subject"] == {"reference": ref("Patient", "p1")}
    assert e1["participant"][0]["individual"] == {"reference": ref("PractitionerRole", "role1")}
    assert e1["location"][0]["location"] == {"reference": ref("Location", "loc1")}
    assert e1["serviceProvider"] == {"reference": ref("Organization", "org1")}  # was absolute
    assert e1["meta"]["source"] == "https://ehr.example.org/fhir/Encounter/e1"
    assert {"system": SOURCE_TAG_SYSTEM, "code": CONNECTION} in e1["meta"]["tag"]
    assert e1["meta"]["versionId"] == "1"
    c1 = local(engine, "Condition", "c1")
    assert c1["encounter"] == {"reference": ref("Encounter", "e1")}  # _history dropped
    role = local(engine, "PractitionerRole", "role1")
    assert role["practitioner"] == {"reference": ref("Practitioner", "dr2")}

    # what the API sees: the local references resolve
    store = FhirStore(engine)
    page = store.search(store.parse("Encounter", [("patient", ref("Patient", "p1"))]))
    assert [m[1] for m in page.matches] == [local_id(CONNECTION, "Encounter", "e1")]
    tagged = store.search(store.parse("Patient", [("_tag", f"{SOURCE_TAG_SYSTEM}|{CONNECTION}")]))
    assert len(tagged.matches) == 2


def test_observations_are_searched_as_labs_per_patient(
    seeded: FakeFhir, make_runtime: RuntimeFactory
) -> None:
    pull_once(make_runtime())
    (search,) = seeded.searches("Observation")
    params = dict(search.params)
    assert params["category"] == "laboratory" and params["patient"] == "p1,p2"
    assert "_lastUpdated" not in params  # a first pull takes everything
    # referenced types are fetched by id; an unreferenced practitioner is not
    practitioners = dict(seeded.searches("Practitioner")[0].params)
    assert practitioners["_id"] == "dr1,dr2"


def test_second_pull_fetches_only_changes(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    pull_once(make_runtime())
    first_sync = seeded.now
    before = totals(engine)
    seeded.advance(600)
    seeded.put(encounter("e1", "p1", status="finished"))
    seeded.advance(60)
    seeded.requests.clear()

    report = pull_once(make_runtime())
    for search in seeded.searches():
        params = dict(search.params)
        if "patient" in params or params.get("_id") == "p1,p2":
            since = first_sync.timestamp() - 300
            assert params["_lastUpdated"] == "gt" + _instant(since)
    assert report.by_type["Encounter"].fetched == 1
    assert report.counts.fetched == 1 and report.counts.written == 1
    assert totals(engine) == (before[0], before[1] + 1)
    e1 = local(engine, "Encounter", "e1")
    assert e1["status"] == "finished" and e1["meta"]["versionId"] == "2"


def _instant(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_same_source_version_is_skipped(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    pull_once(make_runtime())
    before = totals(engine)
    # an overlap that reaches back over everything: every resource comes again, same version
    report = pull_once(make_runtime(overlap_seconds=7200))
    assert report.counts.fetched >= len(EXPECTED)
    assert report.counts.written == 0 and report.counts.skipped == report.counts.fetched
    assert totals(engine) == before


def test_an_ehr_update_updates_the_local_resource(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    pull_once(make_runtime())
    seeded.advance(10)
    seeded.put(patient("p2", name=[{"family": "Renamed"}]))
    seeded.put(patient("p2", name=[{"family": "Renamed"}]))  # a new EHR version, same content
    seeded.advance(10)
    pull_once(make_runtime())
    p2 = local(engine, "Patient", "p2")
    assert p2["name"] == [{"family": "Renamed"}] and p2["meta"]["versionId"] == "2"
    store = FhirStore(engine)
    page = store.search(store.parse("Patient", [("_count", "100")]))
    assert len(page.matches) == 2  # no duplicate
    with engine.connect() as conn:
        row = conn.execute(
            select(sync_identities.c.source_version).where(
                sync_identities.c.res_type == "Patient", sync_identities.c.source_id == "p2"
            )
        ).one()
    assert row.source_version == "3"


def test_a_new_member_is_fetched_whole(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, connected: Settings
) -> None:
    write_sync_config(
        connected, '[connections.test-ehr]\npopulations = [{name = "pilot", patients = ["p1"]}]\n'
    )
    pull_once(make_runtime(), None)  # type: ignore[arg-type]
    assert ("Encounter", "e2") not in local_keys(engine)
    seeded.advance(600)
    write_sync_config(
        connected,
        '[connections.test-ehr]\npopulations = [{name = "pilot", patients = ["p1", "p2"]}]\n',
    )
    seeded.requests.clear()
    report = pull_once(make_runtime(), None)  # type: ignore[arg-type]
    assert report.new_members == 1
    assert {("Encounter", "e2"), ("Patient", "p2"), ("Appointment", "ap1")} <= local_keys(engine)
    whole = [s for s in seeded.searches("Encounter") if dict(s.params).get("patient") == "p2"]
    changed = [s for s in seeded.searches("Encounter") if dict(s.params).get("patient") == "p1"]
    assert "_lastUpdated" not in dict(whole[0].params)
    assert "_lastUpdated" in dict(changed[0].params)


def test_group_population(seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine) -> None:
    seeded.put(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": "Patient/p3"}, "inactive": True},
                {"entity": {"reference": "Practitioner/dr1"}},
            ],
        }
    )
    report = pull_once(make_runtime(), parse_population("group:g1"))
    assert report.members == 1
    keys = local_keys(engine)
    assert ("Patient", "p1") in keys and ("Patient", "p3") not in keys


def test_open_cases_population(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    pull_once(make_runtime())
    store = FhirStore(engine)
    for status, pid in (("active", "p1"), ("finished", "p2")):
        store.create(
            "EpisodeOfCare",
            {
                "resourceType": "EpisodeOfCare",
                "status": status,
                "patient": {"reference": ref("Patient", pid)},
            },
        )
    elsewhere = {"reference": "Patient/not-from-the-ehr"}
    store.create("EpisodeOfCare", {"resourceType": "EpisodeOfCare", "status": "waitlist",
                                   "patient": elsewhere})  # fmt: skip
    report = pull_once(make_runtime(), parse_population("open-cases"))
    assert report.members == 1 and report.new_members == 1


def test_invalid_resources_are_rejected_and_the_rest_stored(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine
) -> None:
    seeded.put({"resourceType": "Encounter", "id": "bad", "status": "finished", "period": 5,
                "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}})  # fmt: skip
    report = pull_once(make_runtime())
    assert report.counts.rejected == 1
    assert local_keys(engine) == EXPECTED


# -- crashes ---------------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dies (not an Exception: nothing catches it on the way out). Raised only on
    the event loop, never inside a write unit (the group committer's thread would die too)."""


class ConnectionLost(RuntimeError):
    """The transaction of a page fails before its commit."""


@pytest.mark.parametrize("crash_after", [1, 2, 5, 9, 14])
def test_crash_after_a_page_commit_resumes_without_gap_or_duplicate(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, crash_after: int
) -> None:
    # one type at a time, so that the EHR sees the requests in page order
    settings = {"page_size": 1, "ids_per_search": 2, "stream_concurrency": 1}
    committed = written = 0

    def die(page: PageReport) -> None:
        nonlocal committed, written
        committed += 1
        written += page.counts.written
        if committed == crash_after:
            raise Crash

    with pytest.raises(Crash):
        pull_once(make_runtime(**settings), progress=die)
    with engine.connect() as conn:
        (status,) = conn.execute(select(sync_runs.c.status)).one()
        cursors = conn.execute(
            select(sync_checkpoints.c.cursor_url).where(sync_checkpoints.c.cursor_url.is_not(None))
        ).all()
    assert status == "running"  # the run died with the process
    assert len(local_keys(engine)) == written  # every committed page is there
    searched = [(r.path, tuple(r.params)) for r in seeded.searches()]
    done_pages = set(searched[:crash_after])  # requests are made in page order
    seeded.requests.clear()

    report = pull_once(make_runtime(**settings))
    assert report.resumed
    assert local_keys(engine) == EXPECTED  # no gap
    assert totals(engine) == (len(EXPECTED), len(EXPECTED))  # one version each: no duplicate
    assert report.run_counts.written == len(EXPECTED)
    again = [(r.path, tuple(r.params)) for r in seeded.searches()]
    assert not done_pages & set(again)  # no committed page was fetched again
    if cursors:
        assert "_offset" in dict(again[0][1])  # it went on at the saved next link


@pytest.mark.parametrize("crash_after", [2, 6, 11])
def test_crash_while_types_are_pulled_side_by_side(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, crash_after: int
) -> None:
    settings = {"page_size": 1, "ids_per_search": 1, "stream_concurrency": 4}
    committed = 0

    def die(_: PageReport) -> None:
        nonlocal committed
        committed += 1
        if committed == crash_after:
            raise Crash

    with pytest.raises(Crash):
        pull_once(make_runtime(**settings), progress=die)
    pull_once(make_runtime(**settings))
    assert local_keys(engine) == EXPECTED
    assert totals(engine) == (len(EXPECTED), len(EXPECTED))


def test_crash_inside_a_page_transaction_loses_and_doubles_nothing(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import carecoord.sync.pull as pull_module

    original = pull_module.save_checkpoint
    calls = 0

    def die_before_commit(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        original(*args, **kwargs)
        if calls == 5:  # the page's resources and checkpoint are written, not yet committed
            raise ConnectionLost("the database went away")

    monkeypatch.setattr(pull_module, "save_checkpoint", die_before_commit)
    with pytest.raises(ConnectionLost):
        pull_once(make_runtime(page_size=1, ids_per_search=1, stream_concurrency=1))
    assert len(local_keys(engine)) == 4  # the fifth page rolled back with its checkpoint
    monkeypatch.setattr(pull_module, "save_checkpoint", original)
    report = pull_once(make_runtime(page_size=1, ids_per_search=1))
    assert report.resumed
    assert local_keys(engine) == EXPECTED
    assert totals(engine) == (len(EXPECTED), len(EXPECTED))


def test_a_temporary_failure_fails_the_run_and_the_next_pull_resumes_it(
    seeded: FakeFhir, make_runtime: RuntimeFactory, engine: Engine, ehr_http: respx.MockRouter
) -> None:
    settings = {"page_size": 1, "ids_per_search": 1, "max_retries": 0}
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 8:
            return httpx.Response(503)
        return seeded.handle(request)

    ehr_http.route(host="ehr.example.org").mock(side_effect=flaky)
    with pytest.raises(EhrServerError):
        pull_once(make_runtime(**settings))
    with engine.connect() as conn:
        first = conn.execute(select(sync_runs.c.id, sync_runs.c.status, sync_runs.c.error)).one()
    assert first.status == FAILED and "503" in first.error
    report = pull_once(make_runtime(**settings))
    assert report.resumed and report.run_id == first.id
    assert local_keys(engine) == EXPECTED
    with engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalar_one() == OK
