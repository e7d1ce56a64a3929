"""Encounter events: the kind of a write, the store's write hook, and the job of each path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from carecoord.events import AUTOMATION_ENCOUNTER, AdtIntake, EncounterEvent, classify
from carecoord.events import encounters as encounters_module
from carecoord.events.encounters import current_locations, note_encounter_event
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.fhir.tables import resources
from carecoord.jobs import Registry, Worker, list_jobs
from tests.events import fhir_events as fe
from tests.events.conftest import SOURCE
from tests.events.messages import admit, adt, discharge

# --- the kind of an Encounter version (pure) ---------------------------------------------------


def enc(
    status: str, *, end: str | None = None, ward: str = "4N", cls: str = "IMP"
) -> dict[str, Any]:
    return fe.encounter(status=status, end=end, ward=ward, cls=cls)


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, enc("in-progress"), EncounterEvent.ADMIT),
        (None, enc("arrived"), EncounterEvent.ADMIT),
        (enc("planned"), enc("in-progress"), EncounterEvent.ADMIT),
        (None, enc("planned"), EncounterEvent.UPDATE),
        (None, enc("finished", end="2025-07-03"), EncounterEvent.DISCHARGE),
        (enc("in-progress"), enc("finished", end="2025-07-03"), EncounterEvent.DISCHARGE),
        (enc("in-progress"), enc("in-progress", end="2025-07-03"), EncounterEvent.DISCHARGE),
        (enc("in-progress"), enc("in-progress", ward="ICU"), EncounterEvent.TRANSFER),
        (enc("in-progress", cls="EMER"), enc("in-progress"), EncounterEvent.TRANSFER),
        (enc("in-progress"), enc("entered-in-error"), EncounterEvent.CANCEL),
        (enc("finished", end="2025-07-03"), enc("in-progress"), EncounterEvent.CANCEL),
        (enc("in-progress"), enc("in-progress"), EncounterEvent.UPDATE),
        (
            enc("finished", end="2025-07-03"),
            enc("finished", end="2025-07-04"),
            EncounterEvent.UPDATE,
        ),
        (enc("cancelled"), enc("cancelled"), EncounterEvent.UPDATE),
    ],
)
def test_classify(
    previous: dict[str, Any] | None, current: dict[str, Any], expected: EncounterEvent
) -> None:
    status = previous["status"] if previous is not None else None
    assert classify(previous, current, status) is expected


def test_current_location_is_the_active_entry_or_the_last_one() -> None:
    history = {
        "location": [
            {"location": {"reference": "Location/a"}, "status": "completed"},
            {"location": {"reference": "Location/b"}, "status": "active"},
        ]
    }
    assert current_locations(history) == {"ref:Location/b"}
    plain = {"location": [{"location": {"display": "4N"}}, {"location": {"display": "ICU"}}]}
    assert current_locations(plain) == {"display:ICU"}
    assert current_locations({}) == frozenset()


# --- the store's write hook ---------------------------------------------------------------------


def test_the_write_hook_sees_creates_and_updates_with_the_previous_status(
    store: FhirStore,
) -> None:
    seen: list[tuple[str, str, int, str | None]] = []

    def hook(w: Writer, res_type: str, stored: StoredResource, previous: str | None) -> None:
        seen.append((res_type, stored.res_id, stored.version_id, previous))

    store.on_written = hook
    store.update("Encounter", "e1", fe.encounter("e1"))
    store.update("Encounter", "e1", fe.discharged("e1"))
    store.update("Encounter", "e1", fe.discharged("e1"))  # unchanged: no version, no call
    created = store.create("Patient", fe.patient("p9"))
    store.delete("Encounter", "e1")  # deletes are not announced
    store.write(lambda w: w.audit({"resourceType": "AuditEvent"}))  # nor AuditEvents
    assert seen == [
        ("Encounter", "e1", 1, None),
        ("Encounter", "e1", 2, "in-progress"),
        ("Patient", created.resource.res_id, 1, None),
    ]
    store.update("Encounter", "e1", fe.encounter("e1"))  # re-created after the deletion
    assert seen[-1] == ("Encounter", "e1", 4, None)


def test_a_failing_hook_rolls_the_write_back(store: FhirStore, engine: Engine) -> None:
    def hook(w: Writer, res_type: str, stored: StoredResource, previous: str | None) -> None:
        raise RuntimeError("boom")

    store.on_written = hook
    with pytest.raises(RuntimeError):
        store.update("Encounter", "e1", fe.encounter("e1"))
    assert fe.count(engine, "Encounter") == 0


def test_a_unit_of_work_may_replace_the_hook(store: FhirStore) -> None:
    calls: list[str] = []
    store.on_written = lambda w, t, s, p: calls.append("store")

    def work(w: Writer) -> None:
        w.on_written = lambda w, t, s, p: calls.append("unit")
        w.update("Encounter", "e1", fe.encounter("e1"))

    store.write(work)
    assert calls == ["unit"]


def test_one_job_per_encounter_version(store: FhirStore, engine: Engine) -> None:
    stored = store.update("Encounter", "e1", fe.encounter("e1")).resource
    first = store.write(
        lambda w: note_encounter_event(
            w, source="test", encounter=stored, previous_status=None, request_id="r1"
        )
    )
    again = store.write(
        lambda w: note_encounter_event(
            w, source="test", encounter=stored, previous_status=None, request_id="r2"
        )
    )
    assert first is not None and again is None
    assert fe.automation_jobs(engine) == [
        {
            "encounter_id": "e1",
            "version": 1,
            "event": "admit",
            "source": "test",
            "status": "in-progress",
            "previous_status": None,
            "request_id": "r1",
        }
    ]


def test_the_previous_version_written_in_the_same_transaction_is_compared(
    store: FhirStore, engine: Engine
) -> None:
    def work(w: Writer) -> None:
        w.on_written = lambda w, t, s, p: note_encounter_event(
            w, source="test", encounter=s, previous_status=p, request_id=None
        )
        w.update("Encounter", "e1", fe.encounter("e1"))
        w.update("Encounter", "e1", fe.encounter("e1", ward="ICU"))

    store.write(work)
    assert [job["event"] for job in fe.automation_jobs(engine)] == ["admit", "transfer"]


def test_jobs_without_a_handler_wait_ready(store: FhirStore, engine: Engine) -> None:
    """No automation handler exists yet: workers leave these jobs alone (no dead letters)."""
    store.on_written = lambda w, t, s, p: note_encounter_event(
        w, source="test", encounter=s, previous_status=p, request_id=None
    )
    store.update("Encounter", "e1", fe.encounter("e1"))
    registry = Registry()
    registry.register("other.kind", lambda payload, ctx: None)
    worker = Worker(engine, registry)
    assert worker.claim() is None
    (job,) = list_jobs(engine, kind=AUTOMATION_ENCOUNTER)
    assert (job.status, job.attempts) == ("ready", 0)


# --- ADT ----------------------------------------------------------------------------------------


def audit_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.content)
            .where(resources.c.res_type == "AuditEvent")
            .order_by(resources.c.rid)
        ).scalars()
        return [orjson.loads(content) for content in rows]


def test_adt_admit_transfer_discharge_cancel(intake: AdtIntake, engine: Engine) -> None:
    admitted = intake.handle(admit())
    encounter_id = admitted.produced[1].split("/")[1]
    intake.handle(adt("A02", "A02-1", pv1={3: "ICU^12^A^GENHOSP"}))
    intake.handle(discharge())
    intake.handle(adt("A13", "A13-1"))
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"], j["source"]) for j in jobs] == [
        ("admit", 1, SOURCE),
        ("transfer", 2, SOURCE),
        ("discharge", 3, SOURCE),
        ("cancel", 4, SOURCE),
    ]
    assert {j["encounter_id"] for j in jobs} == {encounter_id}
    assert jobs[3]["previous_status"] == "finished"


def test_adt_replays_and_patient_updates_enqueue_nothing(intake: AdtIntake, engine: Engine) -> None:
    intake.handle(admit())
    before = fe.snapshot(engine)
    assert intake.handle(admit()).outcome == "replayed"
    intake.handle(admit("A01-0002"))  # the same content under another control id
    after = fe.snapshot(engine)
    assert after[:2] == before[:2] and after[3] == before[3]  # one more event, nothing else
    intake.handle(adt("A08", "A08-1", pid={11: "9 ELM RD^^CHAMPAIGN^IL^61820^USA^H"}))
    assert len(fe.automation_jobs(engine)) == 1  # the Patient changed, not the Encounter


def test_adt_writes_are_audited_with_the_listener_as_agent(
    intake: AdtIntake, engine: Engine
) -> None:
    admitted = intake.handle(admit())
    events = audit_events(engine)
    assert [e["subtype"][0]["code"] for e in events] == ["create", "create"]
    written = fe.stored(engine, *admitted.produced[1].split("/"))
    assert written is not None
    for event in events:
        who = event["agent"][0]["who"]["identifier"]
        assert who["value"] == SOURCE
        assert event["recorded"] == written["meta"]["lastUpdated"]  # the store's clock
    targets = {e["entity"][-1]["what"]["reference"] for e in events}
    assert admitted.produced[1] in targets
    patient_id = admitted.produced[0].split("/")[1]
    assert all(e["entity"][0]["what"]["reference"] == f"Patient/{patient_id}" for e in events)
    intake.handle(discharge())
    assert [e["subtype"][0]["code"] for e in audit_events(engine)][2:] == ["update"]
    intake.handle(discharge())  # replay: not audited again
    assert len(audit_events(engine)) == 3


def test_adt_failure_after_the_encounter_leaves_no_job(
    intake: AdtIntake, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = encounters_module.enqueue
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("queue down")
        return real(*args, **kwargs)

    monkeypatch.setattr(encounters_module, "enqueue", failing)
    result = intake.handle(admit())
    assert (result.ack_code, result.outcome) == ("AE", "error")
    assert fe.count(engine, "Encounter") == 0 and fe.automation_jobs(engine) == []
    again = intake.handle(admit())
    assert (again.ack_code, again.outcome) == ("AA", "processed")
    assert len(fe.automation_jobs(engine)) == 1


# --- FHIR REST API ------------------------------------------------------------------------------


def put(api: TestClient, resource: dict[str, Any], request_id: str = "req-1") -> int:
    headers = {**fe.FHIR, "X-Request-ID": request_id}
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    return api.put(url, content=fe.body(resource), headers=headers).status_code


def test_fhir_put_admit_transfer_discharge(api: TestClient, engine: Engine) -> None:
    assert put(api, fe.patient()) == 201
    assert put(api, fe.encounter(), "req-admit") == 201
    assert put(api, fe.encounter(ward="ICU"), "req-move") == 200
    assert put(api, fe.discharged(ward="ICU"), "req-out") == 200
    assert put(api, fe.discharged(ward="ICU"), "req-again") == 200  # unchanged: no new version
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"], j["request_id"], j["source"]) for j in jobs] == [
        ("admit", 1, "req-admit", "fhir-api"),
        ("transfer", 2, "req-move", "fhir-api"),
        ("discharge", 3, "req-out", "fhir-api"),
    ]


def test_fhir_post_and_bundles_enqueue_too(api: TestClient, engine: Engine) -> None:
    created = api.post("/fhir/Encounter", content=fe.body(fe.encounter()), headers=fe.FHIR)
    assert created.status_code == 201
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8c7a40-5a8e-4d0e-9d5e-3f1c0f6a1b21",
                "resource": fe.encounter("t1"),
                "request": {"method": "PUT", "url": "Encounter/t1"},
            },
            {
                "resource": fe.patient("t-pat"),
                "request": {"method": "PUT", "url": "Patient/t-pat"},
            },
        ],
    }
    assert api.post("/fhir", content=fe.body(transaction), headers=fe.FHIR).status_code == 200
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": fe.discharged("t1"), "request": {"method": "PUT", "url": "Encounter/t1"}}
        ],
    }
    assert api.post("/fhir", content=fe.body(batch), headers=fe.FHIR).status_code == 200
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"]) for j in jobs] == [
        ("admit", 1),
        ("admit", 1),
        ("discharge", 2),
    ]
    assert jobs[0]["encounter_id"] == created.json()["id"]
    assert [j["encounter_id"] for j in jobs[1:]] == ["t1", "t1"]


def test_fhir_write_without_credentials_enqueues_nothing(
    anonymous_api: TestClient, engine: Engine
) -> None:
    response = anonymous_api.put(
        "/fhir/Encounter/enc-1", content=fe.body(fe.encounter()), headers=fe.FHIR
    )
    assert response.status_code == 401
    assert fe.snapshot(engine) == (0, 0, 0, 0)


def test_a_failure_in_the_fhir_write_leaves_nothing_and_a_retry_succeeds_once(
    events_app: FastAPI,
    auth_header: dict[str, str],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = encounters_module.enqueue
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("queue down")
        return real(*args, **kwargs)

    monkeypatch.setattr(encounters_module, "enqueue", failing)
    with TestClient(events_app, headers=auth_header, raise_server_exceptions=False) as api:
        assert put(api, fe.encounter()) == 500
        assert fe.snapshot(engine) == (0, 0, 0, 0)  # no Encounter, no AuditEvent, no job
        assert put(api, fe.encounter()) == 201
        assert put(api, fe.encounter()) == 200
    assert len(fe.automation_jobs(engine)) == 1


def test_install_is_idempotent_and_keeps_process_message_ahead(
    events_app: FastAPI, api: TestClient, engine: Engine
) -> None:
    from carecoord.events.runtime import install

    routes = list(events_app.router.routes)
    install(events_app, events_app.state.settings, engine)
    assert events_app.router.routes == routes
    # Taken by the Da Vinci route, not by the FHIR API's create (which would say 404 type).
    answer = api.post("/fhir/$process-message", content=b'{"resourceType":"Bundle"}')
    assert answer.status_code == 400
    assert "message" in answer.json()["issue"][0]["diagnostics"]
