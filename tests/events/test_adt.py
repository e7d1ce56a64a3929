"""ADT intake on the store: events and resources in one transaction, replays, refusals, crashes."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from carecoord.events import AdtIntake, EventNotStored, EventStatus, IntakeResult, list_events
from carecoord.events import adt as adt_module
from carecoord.fhir.store import FhirStore
from carecoord.fhir.tables import resource_versions, resources
from tests.events.conftest import SOURCE
from tests.events.messages import admit, adt, discharge


def ack_fields(result: IntakeResult) -> dict[str, list[str]]:
    return {seg[:3]: seg.split("|") for seg in result.ack.decode().split("\r") if seg}


def err_code(result: IntakeResult) -> str:
    """The HL7 error code of the ACK's ERR (ERR-3 from 2.5, inside ERR-1 before)."""
    err = ack_fields(result)["ERR"]
    if len(err) > 3 and err[3]:
        return err[3].split("^")[0]
    return err[1].split("^")[3].split("&")[0]


def current(store: FhirStore, res_type: str) -> list[dict[str, Any]]:
    page = store.search(store.parse(res_type, [("_count", "100")]))
    return [orjson.loads(content) for _, _, content in page.matches]


def counts(engine: Engine) -> tuple[int, int]:
    """Resources and versions, not counting the AuditEvents of the ADT writes."""
    with engine.connect() as conn:
        return (
            conn.execute(
                select(func.count())
                .select_from(resources)
                .where(resources.c.res_type != "AuditEvent")
            ).scalar_one(),
            conn.execute(
                select(func.count())
                .select_from(resource_versions)
                .where(resource_versions.c.res_type != "AuditEvent")
            ).scalar_one(),
        )


def read(store: FhirStore, reference: str) -> dict[str, Any]:
    res_type, res_id = reference.split("/")
    content = store.read(res_type, res_id).content
    assert content is not None
    return dict(orjson.loads(content))


def test_admit_then_discharge_makes_one_finished_encounter(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    admitted = intake.handle(admit())
    assert (admitted.ack_code, admitted.outcome) == ("AA", "processed")
    assert ack_fields(admitted)["MSA"][1:3] == ["AA", "A01-0001"]
    patient_ref, encounter_ref = admitted.produced
    assert patient_ref.startswith("Patient/") and encounter_ref.startswith("Encounter/")

    discharged = intake.handle(discharge())
    assert discharged.ack_code == "AA"
    assert discharged.produced == (patient_ref, encounter_ref)
    encounter = read(store, encounter_ref)
    assert encounter["status"] == "finished"
    assert encounter["period"]["end"] == "2024-01-18T14:00:00-06:00"
    assert encounter["subject"] == {"reference": patient_ref}
    assert encounter["meta"]["versionId"] == "2"
    assert counts(engine)[0] == 2  # one Patient, one Encounter

    events = list_events(engine)
    assert [(e.kind, e.status, e.source) for e in events] == [
        ("ADT^A01", EventStatus.PROCESSED, SOURCE),
        ("ADT^A03", EventStatus.PROCESSED, SOURCE),
    ]
    assert events[0].key == "GENHOSP|A01-0001"
    assert events[1].payload == discharge()
    assert events[1].produced == (patient_ref, encounter_ref)


def test_a_replayed_discharge_changes_nothing(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    intake.handle(admit())
    first = intake.handle(discharge())
    intake.handle(adt("A13", "A13-1"))  # the discharge is cancelled after it
    before = counts(engine)
    replay = intake.handle(discharge())
    assert (replay.ack_code, replay.outcome, replay.event_id) == ("AA", "replayed", first.event_id)
    assert ack_fields(replay)["MSA"][1:3] == ["AA", "A03-0001"]
    assert counts(engine) == before  # no new version of anything
    assert read(store, first.produced[1])["status"] == "in-progress"
    assert len(list_events(engine)) == 3


def test_cancel_admit_marks_the_encounter_entered_in_error(
    intake: AdtIntake, store: FhirStore
) -> None:
    admitted = intake.handle(admit())
    cancelled = intake.handle(adt("A11", "A11-1"))
    assert cancelled.ack_code == "AA"
    assert read(store, admitted.produced[1])["status"] == "entered-in-error"


def test_cancel_discharge_puts_the_encounter_back_in_progress(
    intake: AdtIntake, store: FhirStore
) -> None:
    intake.handle(admit())
    intake.handle(discharge())
    reopened = intake.handle(adt("A13", "A13-1"))
    encounter = read(store, reopened.produced[1])
    assert encounter["status"] == "in-progress"
    assert "end" not in encounter["period"]
    assert "hospitalization" not in encounter


def test_update_changes_the_patients_address(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    admitted = intake.handle(admit())
    moved = "9 ELM RD^^CHAMPAIGN^IL^61820^USA^H"
    updated = intake.handle(adt("A08", "A08-1", pid={11: moved}))
    assert updated.produced == admitted.produced
    patient = read(store, admitted.produced[0])
    assert patient["address"][0]["line"] == ["9 ELM RD"]
    assert patient["address"][0]["city"] == "CHAMPAIGN"
    assert patient["meta"]["versionId"] == "2"
    assert len(current(store, "Patient")) == 1
    # The same content under another control id: stored as an event, no new version.
    before = counts(engine)
    same = intake.handle(adt("A08", "A08-2", pid={11: moved}))
    assert same.outcome == "processed"
    assert counts(engine) == before


def test_transfer_and_registration(intake: AdtIntake, store: FhirStore) -> None:
    admitted = intake.handle(admit())
    intake.handle(adt("A02", "A02-1", pv1={3: "ICU^12^A^GENHOSP"}))
    encounter = read(store, admitted.produced[1])
    assert [entry["status"] for entry in encounter["location"]] == ["completed", "active"]
    registered = intake.handle(adt("A04", "A04-1", pv1={2: "O", 19: "V0002^^^GENHOSP^VN"}))
    outpatient = read(store, registered.produced[1])
    assert (outpatient["status"], outpatient["class"]["code"]) == ("arrived", "AMB")
    assert registered.produced[0] == admitted.produced[0]  # the same patient
    assert len(current(store, "Encounter")) == 2


def test_patient_only_update_and_cancel_of_an_unknown_visit(
    intake: AdtIntake, engine: Engine
) -> None:
    result = intake.handle(adt("A08", "A08-1", pv1={19: ""}))
    assert result.ack_code == "AA" and len(result.produced) == 1
    cancel = intake.handle(adt("A11", "A11-1", pv1={19: "V9999^^^GENHOSP^VN"}))
    assert cancel.ack_code == "AA" and len(cancel.produced) == 1
    assert counts(engine)[0] == 1


MALFORMED = [
    (b"this is not HL7 at all", "AE", "100"),
    (b"\x00\x01\x02\xff", "AE", "100"),
    (adt("A01", ""), "AE", "101"),  # no MSH-10
    (adt("A99", "A99-1"), "AR", "201"),
    (adt("A01", "R01-1", msh={9: "ORU^R01^ORU_R01"}), "AR", "200"),
    (adt("A01", "V21-1", msh={12: "2.1"}), "AR", "203"),
    (adt("A01", "BAD-DATE", pv1={44: "2024-01-15 10:00"}), "AE", "102"),
    (adt("A01", "NO-PID", pid={3: ""}), "AE", "101"),
]


def test_malformed_messages_get_an_error_ack_and_are_kept_for_review(
    intake: AdtIntake, engine: Engine
) -> None:
    for number, (raw, ack_code, error_code) in enumerate(MALFORMED, start=1):
        result = intake.handle(raw)
        assert (result.ack_code, result.outcome, err_code(result)) == (
            ack_code,
            "rejected",
            error_code,
        ), raw
        assert ack_fields(result)["MSA"][1] == ack_code
        events = list_events(engine)
        assert len(events) == number
        assert events[-1].id == result.event_id
        assert events[-1].status is EventStatus.REJECTED
        assert events[-1].payload == raw
        assert events[-1].error
        again = intake.handle(raw)  # the same bad frame again: still one record
        assert (again.ack_code, again.event_id) == (ack_code, result.event_id)
        assert len(list_events(engine)) == number
    assert counts(engine) == (0, 0)  # nothing else written


def test_a_corrected_message_with_the_rejected_control_id_is_processed(
    intake: AdtIntake, engine: Engine
) -> None:
    bad = intake.handle(adt("A01", "FIX-1", pv1={44: "tomorrow"}))
    assert bad.ack_code == "AE"
    good = intake.handle(adt("A01", "FIX-1"))
    assert (good.ack_code, good.event_id) == ("AA", bad.event_id)
    (event,) = list_events(engine)
    assert (event.status, event.attempts, event.error) == (EventStatus.PROCESSED, 2, None)


def test_a_failed_write_leaves_nothing_half_written_and_no_aa(
    intake: AdtIntake, store: FhirStore, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = adt_module.encounter_resource

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    # The Patient is written first in the same transaction; the Encounter step then fails.
    monkeypatch.setattr(adt_module, "encounter_resource", crash)
    result = intake.handle(admit())
    assert (result.ack_code, result.outcome) == ("AE", "error")
    assert err_code(result) == "207"
    assert counts(engine) == (0, 0)  # no orphan Patient, no Encounter
    (event,) = list_events(engine)
    assert event.status is EventStatus.ERROR
    assert event.error == "The message could not be stored (RuntimeError)"
    assert event.payload == admit()

    monkeypatch.setattr(adt_module, "encounter_resource", real)
    retried = intake.handle(admit())  # the sender sends it again
    assert (retried.ack_code, retried.event_id) == ("AA", event.id)
    assert counts(engine)[0] == 2
    (event,) = list_events(engine)
    assert (event.status, event.attempts) == (EventStatus.PROCESSED, 2)


def test_a_crash_while_recording_the_event_rolls_back_the_resources(
    intake: AdtIntake, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(adt_module, "record_event", crash)
    with pytest.raises(EventNotStored):  # not even the error record: no ACK at all
        intake.handle(admit())
    assert counts(engine) == (0, 0)
    assert list_events(engine) == []


def test_ambiguous_identifiers_are_an_error_for_review(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    twin = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.4711.1.1", "value": "MRN12345"}],
    }
    store.create("Patient", twin)
    store.create("Patient", twin)
    result = intake.handle(admit())
    assert (result.ack_code, result.outcome) == ("AE", "error")
    assert err_code(result) == "205"
    assert counts(engine)[0] == 2


def test_logs_carry_no_patient_data(intake: AdtIntake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    intake.handle(admit())
    intake.handle(adt("A01", "BAD", pv1={44: "nonsense"}))
    intake.handle(b"MSH|^~\\&|X|Y|||20240101||DOE^JOHN|C-1|P|2.5\rPID|1||MRN12345")
    text = caplog.text
    assert "ADT^A01" in text
    for secret in ("DOE", "JOHN", "MRN12345", "A01-0001", "nonsense", "SPRINGFIELD"):
        assert secret not in text
