"""One stay, one Encounter; one person, one Patient: an HL7 v2 ADT message and the EHR's copy of
the same stay meet on the visit number and the MRN, whichever arrives first (ADR 0021)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from carecoord.events import AdtIntake
from carecoord.events.davinci import receive_message
from carecoord.fhir.access import AccessPolicy, Agent
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.tables import resource_versions, resources
from carecoord.sync.config import parse_population
from carecoord.sync.identity import ReferenceMapper, local_id
from carecoord.sync.pull import PullReport
from carecoord.sync.tables import sync_identities
from carecoord.sync.upsert import Origin, UpsertResult, from_source, upsert_from_source
from integrations.hl7v2 import FeedConfig
from tests.events import fhir_events as fe
from tests.events.messages import adt
from tests.sync.conftest import CONNECTION, RuntimeFactory, run
from tests.sync.ehr_data import LAB, ref
from tests.sync.fake_fhir import FakeFhir

pytestmark = pytest.mark.usefixtures("ehr_http")

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1.1"
VISIT_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1.2"
IMP = {"system": fe.ACT_CODE, "code": "IMP"}
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MLLP = "mllp:test"


@pytest.fixture
def intake(engine: Engine) -> AdtIntake:
    config = FeedConfig(
        default_timezone="America/Chicago",
        patient_identifier_systems={"GENHOSP": MRN_SYSTEM},
        visit_identifier_systems={"GENHOSP": VISIT_SYSTEM},
    )
    return AdtIntake(FhirStore(engine), source=MLLP, config=config, clock=lambda: NOW)


def admit(n: int = 1, control_id: str | None = None) -> bytes:
    """ADT^A01 of patient MRN{n} for visit V{n}."""
    return adt(
        "A01",
        control_id or f"A01-{n}",
        pid={3: f"MRN{n}^^^GENHOSP^MR~123-45-6789^^^SSA^SS"},
        pv1={19: f"V{n}^^^GENHOSP^VN"},
    )


def discharge(n: int = 1) -> bytes:
    return adt(
        "A03",
        f"A03-{n}",
        evn={2: "20240118141500", 6: "20240118140000"},
        pid={3: f"MRN{n}^^^GENHOSP^MR"},
        pv1={19: f"V{n}^^^GENHOSP^VN", 36: "01", 45: "20240118140000"},
    )


def ehr_patient(pid: str = "p1", mrn: str = "MRN1", family: str = "Ehrdata") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": family, "given": ["Ann"]}],
        "birthDate": "1980-04-12",
    }


def ehr_encounter(eid: str = "e1", pid: str = "p1", visit: str = "V1") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "identifier": [{"system": VISIT_SYSTEM, "value": visit}],
        "status": "in-progress",
        "class": IMP,
        "subject": ref(f"Patient/{pid}"),
        "period": {"start": "2024-01-15T10:00:00-06:00"},
        "serviceType": {"text": "from the EHR"},
    }


def ehr_condition(cid: str = "c1", pid: str = "p1", eid: str = "e1") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": ref(f"Patient/{pid}"),
        "encounter": ref(f"Encounter/{eid}"),
        "code": {"text": "heart failure"},
    }


def ehr_observation(oid: str = "o1", pid: str = "p1", eid: str = "e1") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [LAB],
        "code": {"text": "glucose"},
        "subject": ref(f"Patient/{pid}"),
        "encounter": ref(f"Encounter/{eid}"),
    }


@pytest.fixture
def chart(fake: FakeFhir) -> FakeFhir:
    """The EHR's chart of patient p1 and stay e1 (MRN1, V1), written before the first pull."""
    fake.advance(-3600)
    for resource in (ehr_patient(), ehr_encounter(), ehr_condition(), ehr_observation()):
        fake.put(resource)
    fake.advance(3600)
    return fake


def pull(make_runtime: RuntimeFactory, members: str = "p1") -> PullReport:
    runtime = make_runtime()

    async def go() -> PullReport:
        try:
            (report,) = await runtime.pull(CONNECTION, parse_population(f"patients:{members}"))
            return report
        finally:
            await runtime.aclose()

    return run(go())


def store_from_ehr(engine: Engine, *ehr: dict[str, Any]) -> UpsertResult:
    """What a notification or a ``sync.fetch`` of the connection stores (one transaction)."""
    mapper = ReferenceMapper(CONNECTION, FakeFhir().fhir_base)
    items = [from_source(mapper, {**r, "meta": {"versionId": "1"}}) for r in ehr]

    def work(w: Writer) -> UpsertResult:
        return upsert_from_source(w, CONNECTION, items, now=w.now)

    return FhirStore(engine).write(work)


def body(engine: Engine, res_type: str, res_id: str) -> dict[str, Any]:
    stored = FhirStore(engine).read(res_type, res_id)
    assert stored.content is not None
    found: dict[str, Any] = orjson.loads(stored.content)
    return found


def ids(engine: Engine, res_type: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.res_id).where(resources.c.res_type == res_type).order_by("rid")
        )
        return [row[0] for row in rows]


def version_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(resource_versions)).scalar_one())


def mapped(engine: Engine, res_type: str, source_id: str) -> tuple[str, bool] | None:
    """(local id, stored) of an EHR resource in the identity map."""
    t = sync_identities
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.local_id, t.c.pulled_at).where(
                t.c.connection == CONNECTION, t.c.res_type == res_type, t.c.source_id == source_id
            )
        ).first()
    return (row[0], row[1] is not None) if row is not None else None


def adt_ids(result: Any) -> tuple[str, str]:
    """(Patient id, Encounter id) an ADT message produced."""
    patient, encounter = result.produced
    return patient.removeprefix("Patient/"), encounter.removeprefix("Encounter/")


# -- ADT first, then the EHR --------------------------------------------------------------------


def test_an_admission_then_the_first_pull_make_one_encounter_and_one_patient(
    chart: FakeFhir, intake: AdtIntake, engine: Engine, make_runtime: RuntimeFactory
) -> None:
    admitted = intake.handle(admit())
    assert admitted.ack_code == "AA"
    patient_id, encounter_id = adt_ids(admitted)

    pull(make_runtime)

    assert ids(engine, "Patient") == [patient_id]
    assert ids(engine, "Encounter") == [encounter_id]
    assert mapped(engine, "Patient", "p1") == (patient_id, True)
    assert mapped(engine, "Encounter", "e1") == (encounter_id, True)
    encounter = body(engine, "Encounter", encounter_id)
    assert encounter["serviceType"] == {"text": "from the EHR"}  # the EHR's data applied
    assert encounter["meta"]["source"] == f"{chart.fhir_base}/Encounter/e1"
    # the EHR's copy is its next version (and one more when the Encounter page came before the
    # Patient's: its subject is then pointed at the adopted Patient)
    assert encounter["meta"]["versionId"] in {"2", "3"}
    assert encounter["subject"] == {"reference": f"Patient/{patient_id}"}
    patient = body(engine, "Patient", patient_id)
    assert patient["name"] == [{"family": "Ehrdata", "given": ["Ann"]}]
    # references of the other pulled resources resolve to the adopted ids
    for res_type, source_id in (("Condition", "c1"), ("Observation", "o1")):
        found = body(engine, res_type, local_id(CONNECTION, res_type, source_id))
        assert found["subject"] == {"reference": f"Patient/{patient_id}"}
        assert found["encounter"] == {"reference": f"Encounter/{encounter_id}"}
    # one stay: every automation job is about the one Encounter
    assert {job["encounter_id"] for job in fe.automation_jobs(engine)} == {encounter_id}

    # ... and the discharge finds it by visit number
    discharged = intake.handle(discharge())
    assert adt_ids(discharged) == (patient_id, encounter_id)
    assert body(engine, "Encounter", encounter_id)["status"] == "finished"
    assert (fe.count(engine, "Encounter"), fe.count(engine, "Patient")) == (1, 1)


def test_a_replayed_pull_after_an_adoption_writes_nothing(
    chart: FakeFhir, intake: AdtIntake, engine: Engine, make_runtime: RuntimeFactory
) -> None:
    intake.handle(admit())
    pull(make_runtime)
    before = (version_count(engine), fe.snapshot(engine))

    again = pull(make_runtime)

    assert again.counts.written == 0
    assert (version_count(engine), fe.snapshot(engine)) == before
    assert (fe.count(engine, "Encounter"), fe.count(engine, "Patient")) == (1, 1)
    # the same EHR versions arriving by notification change nothing either
    result = store_from_ehr(engine, ehr_patient(), ehr_encounter())
    assert result.written == () and result.adopted == ()
    assert (version_count(engine), fe.snapshot(engine)) == before


def test_resources_stored_before_the_adoption_are_pointed_at_the_adopted_ids(
    intake: AdtIntake, engine: Engine
) -> None:
    patient_id, encounter_id = adt_ids(intake.handle(admit()))
    # a Condition arrives before its Encounter and Patient: it refers to their derived ids
    store_from_ehr(engine, ehr_condition())
    condition_id = local_id(CONNECTION, "Condition", "c1")
    assert body(engine, "Condition", condition_id)["encounter"] == {
        "reference": f"Encounter/{local_id(CONNECTION, 'Encounter', 'e1')}"
    }

    result = store_from_ehr(engine, ehr_patient(), ehr_encounter())

    assert set(result.adopted) == {f"Patient/{patient_id}", f"Encounter/{encounter_id}"}
    assert result.repointed == (f"Condition/{condition_id}",)
    condition = body(engine, "Condition", condition_id)
    assert condition["subject"] == {"reference": f"Patient/{patient_id}"}
    assert condition["encounter"] == {"reference": f"Encounter/{encounter_id}"}
    assert condition["meta"]["versionId"] == "2"
    assert body(engine, "Encounter", encounter_id)["subject"] == {
        "reference": f"Patient/{patient_id}"
    }
    assert (fe.count(engine, "Encounter"), fe.count(engine, "Patient")) == (1, 1)
    # a later Observation refers to them through the identity map
    store_from_ehr(engine, ehr_observation())
    observation = body(engine, "Observation", local_id(CONNECTION, "Observation", "o1"))
    assert observation["encounter"] == {"reference": f"Encounter/{encounter_id}"}


def test_a_davinci_notification_of_an_admitted_stay_keeps_its_declared_event(
    intake: AdtIntake, engine: Engine
) -> None:
    _, encounter_id = adt_ids(intake.handle(admit()))
    message = fe.message("notification-transfer", ehr_encounter(), ehr_patient())
    outcome = receive_message(
        FhirStore(engine),
        fe.body(message),
        policy=None,
        received_at=NOW,
        origin=Origin(CONNECTION, FakeFhir().fhir_base),
    )
    assert f"Encounter/{encounter_id}" in outcome.produced
    assert fe.count(engine, "Encounter") == 1
    jobs = [(j["encounter_id"], j["version"], j["event"]) for j in fe.automation_jobs(engine)]
    assert jobs == [(encounter_id, 1, "admit"), (encounter_id, 2, "transfer")]


@pytest.mark.parametrize(
    ("scope", "tenant", "adopted"),
    [("system/*.crus", None, True), ("system/*.cruds", "clinic-2", False)],
)
def test_a_sender_adopts_only_what_its_policy_lets_it_see(
    intake: AdtIntake, engine: Engine, scope: str, tenant: str | None, adopted: bool
) -> None:
    _, encounter_id = adt_ids(intake.handle(admit()))  # stored outside any tenant
    policy = AccessPolicy.from_scope_string(scope, Agent("system", "sender"), tenant=tenant)
    outcome = receive_message(
        FhirStore(engine),
        fe.body(fe.message("notification-admit", ehr_encounter(), ehr_patient())),
        policy=policy,
        received_at=NOW,
        origin=Origin(CONNECTION, FakeFhir().fhir_base),
    )
    assert (f"Encounter/{encounter_id}" in outcome.produced) is adopted
    assert fe.count(engine, "Encounter") == (1 if adopted else 2)


# -- the EHR first, then ADT --------------------------------------------------------------------


def test_a_pull_then_an_admission_and_a_discharge_make_one_encounter(
    chart: FakeFhir, intake: AdtIntake, engine: Engine, make_runtime: RuntimeFactory
) -> None:
    pull(make_runtime)
    encounter_id = local_id(CONNECTION, "Encounter", "e1")
    patient_id = local_id(CONNECTION, "Patient", "p1")

    assert adt_ids(intake.handle(admit())) == (patient_id, encounter_id)
    assert adt_ids(intake.handle(discharge())) == (patient_id, encounter_id)

    assert ids(engine, "Encounter") == [encounter_id]
    assert ids(engine, "Patient") == [patient_id]
    encounter = body(engine, "Encounter", encounter_id)
    assert encounter["status"] == "finished"
    assert encounter["serviceType"] == {"text": "from the EHR"}  # ADT merges, keeps the rest


# -- no guessing ----------------------------------------------------------------------------------


def test_two_local_candidates_are_not_merged(
    chart: FakeFhir,
    engine: Engine,
    make_runtime: RuntimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FhirStore(engine)
    twins = [
        store.create("Patient", {"resourceType": "Patient", "identifier": [
            {"system": MRN_SYSTEM, "value": "MRN1"}], "name": [{"family": family}]}
        ).resource.res_id
        for family in ("Local", "Other")
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="carecoord.sync.upsert"):
        report = pull(make_runtime)

    assert report.counts.rejected == 0
    pulled = local_id(CONNECTION, "Patient", "p1")
    assert sorted(ids(engine, "Patient")) == sorted([*twins, pulled])
    assert mapped(engine, "Patient", "p1") == (pulled, True)
    for twin in twins:
        assert body(engine, "Patient", twin)["meta"]["versionId"] == "1"
    (warning,) = [r.getMessage() for r in caplog.records if "instead of guessing" in r.getMessage()]
    assert "2 local Patient" in warning and pulled in warning
    for phi in ("MRN1", "Ehrdata", "Ann", MRN_SYSTEM):
        assert phi not in warning


def test_a_local_resource_that_stands_for_another_ehr_resource_is_not_merged(
    chart: FakeFhir, engine: Engine, make_runtime: RuntimeFactory
) -> None:
    pull(make_runtime)
    # the EHR now has a second patient with the same MRN (a duplicate chart at the EHR)
    chart.advance(60)
    chart.put(ehr_patient("p9", family="Duplicate"))

    pull(make_runtime, "p1,p9")

    first, second = local_id(CONNECTION, "Patient", "p1"), local_id(CONNECTION, "Patient", "p9")
    assert sorted(ids(engine, "Patient")) == sorted([first, second])
    assert mapped(engine, "Patient", "p9") == (second, True)
    assert body(engine, "Patient", first)["name"][0]["family"] == "Ehrdata"
    assert body(engine, "Patient", second)["name"][0]["family"] == "Duplicate"


def test_two_ehr_resources_in_one_batch_never_share_an_adopted_resource(
    intake: AdtIntake, engine: Engine
) -> None:
    _, encounter_id = adt_ids(intake.handle(admit()))
    twin = ehr_encounter("e2")  # another EHR Encounter with the same visit number

    result = store_from_ehr(engine, ehr_patient(), ehr_encounter(), twin)

    assert f"Encounter/{encounter_id}" in result.adopted
    assert result.stored_as[("Encounter", "e1")] == encounter_id
    assert result.stored_as[("Encounter", "e2")] == local_id(CONNECTION, "Encounter", "e2")
    assert fe.count(engine, "Encounter") == 2


# -- at the same moment ----------------------------------------------------------------------------


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released together; their results (or the exceptions raised)."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run_one(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_an_admission_and_the_ehr_copy_at_the_same_moment_make_one_stay(
    intake: AdtIntake, engine: Engine
) -> None:
    store = FhirStore(engine)
    for n in range(1, 13):
        patient = ehr_patient(f"p{n}", f"MRN{n}")
        encounter = ehr_encounter(f"e{n}", f"p{n}", f"V{n}")
        admitted, stored = at_once(
            partial(intake.handle, admit(n)),
            partial(store_from_ehr, engine, patient, encounter),
        )
        assert admitted.ack_code == "AA" and isinstance(stored, UpsertResult)
        for res_type, system, value in (
            ("Encounter", VISIT_SYSTEM, f"V{n}"),
            ("Patient", MRN_SYSTEM, f"MRN{n}"),
        ):
            page = store.search(store.parse(res_type, [("identifier", f"{system}|{value}")]))
            assert len(page.matches) == 1, (n, res_type)
            source_id = f"{res_type[0].lower()}{n}"
            assert mapped(engine, res_type, source_id) == (page.matches[0][1], True)


def test_a_reference_written_while_its_target_is_adopted_points_at_the_adopted_id(
    intake: AdtIntake, engine: Engine
) -> None:
    for n in range(1, 13):
        patient_id, encounter_id = adt_ids(intake.handle(admit(n)))
        condition = ehr_condition(f"c{n}", f"p{n}", f"e{n}")
        adopting = (ehr_patient(f"p{n}", f"MRN{n}"), ehr_encounter(f"e{n}", f"p{n}", f"V{n}"))
        results = at_once(
            partial(store_from_ehr, engine, condition),
            partial(store_from_ehr, engine, *adopting),
        )
        assert all(isinstance(result, UpsertResult) for result in results)
        stored = body(engine, "Condition", local_id(CONNECTION, "Condition", f"c{n}"))
        assert stored["subject"] == {"reference": f"Patient/{patient_id}"}, n
        assert stored["encounter"] == {"reference": f"Encounter/{encounter_id}"}, n
