"""PID/PV1 to Patient/Encounter, timestamps, header checks and ACKs: pure, no database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carecoord.fhir.validation import validate_resource
from integrations.hl7v2 import (
    AdtMessage,
    Authority,
    BadValue,
    FeedConfig,
    MissingField,
    Unparseable,
    UnsupportedMessageType,
    UnsupportedVersion,
    build_ack,
    encounter_resource,
    fhir_date,
    fhir_datetime,
    parse_message,
    patient_resource,
    read_adt,
)
from tests.events.messages import admit, adt, discharge

CHICAGO = FeedConfig(
    default_timezone="America/Chicago",
    patient_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.1"},
    visit_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.2"},
)


def read(raw: bytes, config: FeedConfig = CHICAGO) -> AdtMessage:
    return read_adt(parse_message(raw), config)


def apply(
    raw: bytes, patient: dict[str, Any] | None = None, encounter: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    message = read(raw)
    new_patient = patient_resource(patient, message)
    new_encounter = encounter_resource(encounter, message, "Patient/p1")
    validate_resource(new_patient, expected_type="Patient")
    if new_encounter is not None:
        validate_resource(new_encounter, expected_type="Encounter")
    return new_patient, new_encounter


# -- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", "2024"),
        ("202401", "2024-01"),
        ("20240115", "2024-01-15"),
        ("2024011510", "2024-01-15T10:00:00-06:00"),
        ("202401151030", "2024-01-15T10:30:00-06:00"),
        ("20240701103000", "2024-07-01T10:30:00-05:00"),  # daylight saving time
        ("20240115103045.25", "2024-01-15T10:30:45.250000-06:00"),
        ("20240115103000-0500", "2024-01-15T10:30:00-05:00"),  # an offset wins over the zone
        ("20240115103000+0000", "2024-01-15T10:30:00+00:00"),
    ],
)
def test_timestamps_keep_precision_and_read_local_times_in_the_default_zone(
    value: str, expected: str
) -> None:
    assert fhir_datetime(value, ZoneInfo("America/Chicago")) == expected


@pytest.mark.parametrize(
    "value", ["2024-01-15", "20241301", "20240230", "2024011525", "abc", "20240115103000-2500"]
)
def test_bad_timestamps_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        fhir_datetime(value, UTC)


def test_birth_date_is_the_date_as_written() -> None:
    assert fhir_date("198004122330-0500", UTC) == "1980-04-12"


def test_default_zone_is_utc() -> None:
    message = read(admit(), FeedConfig())
    assert message.visit.admitted_at == "2024-01-15T10:00:00+00:00"


# -- PID -> Patient ------------------------------------------------------------------------------


def test_pid_maps_to_a_valid_patient() -> None:
    patient, _ = apply(admit())
    assert patient["identifier"] == [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:2.16.840.1.113883.3.4711.1.1",
            "value": "MRN12345",
        },
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}
                ]
            },
            "system": "urn:hl7v2:SSA",
            "value": "123-45-6789",
        },
    ]
    assert patient["name"] == [
        {"use": "official", "family": "DOE", "given": ["JOHN", "QUINCY"], "suffix": ["JR"]},
        {"use": "nickname", "family": "DOE", "given": ["JOHNNY"]},
    ]
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1980-04-12"
    assert patient["address"] == [
        {
            "use": "home",
            "line": ["123 MAIN ST", "APT 4B"],
            "city": "SPRINGFIELD",
            "state": "IL",
            "postalCode": "62701",
            "country": "USA",
        }
    ]
    assert patient["telecom"] == [
        {"system": "phone", "value": "(217)555-0101", "use": "home"},
        {"system": "email", "value": "john.doe@example.org"},
        {"system": "phone", "value": "+1 (217) 5550123", "use": "mobile"},
    ]


def test_the_mrn_is_matched_on_whatever_its_position() -> None:
    message = read(
        admit().replace(
            b"MRN12345^^^GENHOSP^MR~123-45-6789^^^SSA^SS",
            b"123-45-6789^^^SSA^SS~MRN12345^^^GENHOSP^MR",
        )
    )
    assert message.patient_identifiers[0]["value"] == "MRN12345"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (Authority(namespace="GENHOSP"), "urn:oid:2.16.840.1.113883.3.4711.1.1"),
        (
            Authority(
                namespace="X", universal_id="2.16.840.1.113883.3.4711.1.1", universal_type="ISO"
            ),
            "urn:oid:2.16.840.1.113883.3.4711.1.1",
        ),
        (Authority(namespace="", universal_id="1.2.3.4", universal_type="ISO"), "urn:oid:1.2.3.4"),
        (Authority(namespace="ST MARY"), "urn:hl7v2:ST%20MARY"),
        (Authority(), "urn:hl7v2:GENHOSP"),  # no authority: the sending facility
    ],
)
def test_identifier_systems(authority: Authority, expected: str) -> None:
    config = FeedConfig(
        patient_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.1"}
    )
    assert config.identifier_system("patient", authority, fallback="GENHOSP") == expected
    assert FeedConfig().identifier_system("visit", Authority(namespace="A")) == "urn:hl7v2:A:visit"


def test_hl7_null_removes_and_an_empty_field_keeps() -> None:
    stored, _ = apply(admit())
    update = adt("A08", "A08-1", pid={11: '""', 13: ""})
    patient, _ = apply(update, patient=stored)
    assert "address" not in patient
    assert patient["telecom"] == stored["telecom"]


def test_an_a08_keeps_identifiers_from_other_sources() -> None:
    stored, _ = apply(admit())
    stored["identifier"].append({"system": "https://ehr.example.org/patient", "value": "e-1"})
    patient, _ = apply(adt("A08", "A08-1"), patient=stored)
    assert {"system": "https://ehr.example.org/patient", "value": "e-1"} in patient["identifier"]
    assert len(patient["identifier"]) == 3


def test_segments_ended_by_newlines_and_latin1_names() -> None:
    raw = adt("A01", pid={5: "MÜLLER^JÖRG"}, msh={18: "8859/1"}, separator="\r\n")
    patient, _ = apply(raw.decode().encode("latin-1"))
    assert patient["name"][0]["family"] == "MÜLLER"
    patient, _ = apply(adt("A01", pid={5: "MÜLLER^JÖRG"}, separator="\n"))  # UTF-8, undeclared
    assert patient["name"][0]["given"] == ["JÖRG"]


def test_escaped_separators_are_unescaped() -> None:
    patient, _ = apply(adt("A01", pid={11: "1 A\\S\\B ST^^TOWN"}))
    assert patient["address"][0]["line"] == ["1 A^B ST"]


# -- PV1 -> Encounter ----------------------------------------------------------------------------


def test_pv1_maps_to_a_valid_encounter() -> None:
    _, encounter = apply(admit())
    assert encounter is not None
    assert encounter["status"] == "in-progress"
    assert encounter["identifier"] == [
        {
            "use": "official",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}
                ]
            },
            "system": "urn:oid:2.16.840.1.113883.3.4711.1.2",
            "value": "V0001",
        }
    ]
    assert encounter["class"]["code"] == "IMP"
    assert encounter["subject"] == {"reference": "Patient/p1"}
    assert encounter["period"] == {"start": "2024-01-15T10:00:00-06:00"}
    assert encounter["location"] == [
        {
            "location": {"display": "4N 401 B (GENHOSP)"},
            "status": "active",
            "period": {"start": "2024-01-15T10:25:00-06:00"},
        }
    ]
    (attending,) = encounter["participant"]
    assert attending["type"][0]["coding"][0]["code"] == "ATND"
    assert attending["individual"] == {
        "display": "DR MARCUS A WELBY, MD",
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NPI"}
                ]
            },
            "system": "urn:hl7v2:NPI:practitioner",
            "value": "1234567890",
        },
    }


@pytest.mark.parametrize(
    ("pv1_2", "code"), [("I", "IMP"), ("O", "AMB"), ("E", "EMER"), ("P", "PRENC"), ("Z", "UNK")]
)
def test_patient_class(pv1_2: str, code: str) -> None:
    _, encounter = apply(adt("A04", pv1={2: pv1_2}))
    assert encounter is not None
    assert encounter["class"]["code"] == code


def test_discharge_finishes_with_end_and_disposition() -> None:
    _, admitted = apply(admit())
    _, encounter = apply(discharge(), encounter=admitted)
    assert encounter is not None
    assert encounter["status"] == "finished"
    assert encounter["period"] == {
        "start": "2024-01-15T10:00:00-06:00",
        "end": "2024-01-18T14:00:00-06:00",
    }
    codings = encounter["hospitalization"]["dischargeDisposition"]["coding"]
    assert [c["code"] for c in codings] == ["01", "home"]
    assert encounter["location"][0]["status"] == "completed"


def test_discharge_without_pv1_45_ends_at_the_event_time() -> None:
    _, admitted = apply(admit())
    _, encounter = apply(adt("A03", "A03-9", evn={6: "20240118090000"}), encounter=admitted)
    assert encounter is not None
    assert encounter["period"]["end"] == "2024-01-18T09:00:00-06:00"


def test_transfer_keeps_the_location_history() -> None:
    _, admitted = apply(admit())
    transfer = adt("A02", "A02-1", evn={6: "20240116080000"}, pv1={3: "ICU^12^A^GENHOSP"})
    _, encounter = apply(transfer, encounter=admitted)
    assert encounter is not None
    assert [(entry["location"]["display"], entry["status"]) for entry in encounter["location"]] == [
        ("4N 401 B (GENHOSP)", "completed"),
        ("ICU 12 A (GENHOSP)", "active"),
    ]
    assert encounter["location"][0]["period"]["end"] == "2024-01-16T08:00:00-06:00"
    _, again = apply(transfer.replace(b"A02-1", b"A02-2"), encounter=encounter)
    assert again == encounter  # the same transfer twice changes nothing


def test_cancel_admit_and_cancel_discharge() -> None:
    _, admitted = apply(admit())
    _, cancelled = apply(adt("A11", "A11-1"), encounter=admitted)
    assert cancelled is not None
    assert cancelled["status"] == "entered-in-error"
    _, discharged = apply(discharge(), encounter=admitted)
    _, reopened = apply(adt("A13", "A13-1"), encounter=discharged)
    assert reopened is not None
    assert reopened["status"] == "in-progress"
    assert "end" not in reopened["period"]
    assert "hospitalization" not in reopened
    assert reopened["location"][-1]["status"] == "active"
    assert "end" not in reopened["location"][-1].get("period", {})


def test_cancel_admit_of_an_unknown_visit_writes_no_encounter() -> None:
    _, encounter = apply(adt("A11", "A11-1"))
    assert encounter is None


def test_a08_keeps_the_status_and_without_visit_number_only_updates_the_patient() -> None:
    _, admitted = apply(admit())
    _, discharged = apply(discharge(), encounter=admitted)
    _, updated = apply(adt("A08", "A08-1"), encounter=discharged)
    assert updated is not None
    assert updated["status"] == "finished"
    assert updated["period"]["end"] == "2024-01-18T14:00:00-06:00"
    _, none = apply(adt("A08", "A08-2", pv1={19: ""}))
    assert none is None


def test_a04_registers_an_arrived_outpatient() -> None:
    _, encounter = apply(adt("A04", "A04-1", pv1={2: "O", 44: ""}))
    assert encounter is not None
    assert encounter["status"] == "arrived"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["period"] == {"start": "2024-01-15T10:25:00-06:00"}  # EVN-6


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error", "code", "where"),
    [
        (adt("A01", ""), MissingField, 101, "MSH-10"),
        (adt("A99"), UnsupportedMessageType, 201, "MSH-9.2"),
        (adt("A01", msh={9: "ORU^R01"}), UnsupportedMessageType, 200, "MSH-9.1"),
        (adt("A01", msh={12: "2.1"}), UnsupportedVersion, 203, "MSH-12"),
        (adt("A01", pv1={44: "2024-01-15"}), BadValue, 102, "PV1-44"),
        (adt("A01", pid={7: "19801345"}), BadValue, 102, "PID-7"),
        (adt("A01", pid={3: ""}), MissingField, 101, "PID-3"),
        (adt("A01", pv1={19: ""}), MissingField, 101, "PV1-19"),
    ],
)
def test_refusals_name_the_error_and_where(
    raw: bytes, error: type[Exception], code: int, where: str
) -> None:
    with pytest.raises(error) as info:
        read(raw)
    assert getattr(info.value, "error_code", None) == code
    assert str(getattr(info.value, "location", "")) == where


@pytest.mark.parametrize(
    "raw",
    [b"", b"hello world", b"\x00\xff\x10", b"PID|1||X", b"MSH|^~\\&|A\rMSH|^~\\&|B", b"MSH"],
)
def test_garbage_is_unparseable(raw: bytes) -> None:
    with pytest.raises(Unparseable):
        parse_message(raw)


def test_refusal_texts_never_echo_field_contents() -> None:
    with pytest.raises(UnsupportedMessageType) as info:
        read(adt("A01", msh={9: "DOE JOHN^A01"}))
    assert "DOE" not in str(info.value)


# -- acknowledgements ----------------------------------------------------------------------------


def segments(ack: bytes) -> dict[str, list[str]]:
    return {seg[:3]: seg.split("|") for seg in ack.decode().split("\r") if seg}


NOW = datetime(2024, 1, 15, 16, 30, tzinfo=UTC)


def test_aa_echoes_the_control_id_and_swaps_sender_and_receiver() -> None:
    ack = segments(build_ack(parse_message(admit("CTRL-77")), "AA", now=NOW))
    assert ack["MSA"][1:3] == ["AA", "CTRL-77"]
    assert ack["MSH"][2:6] == ["CARECOORD", "CC", "EPICADT", "GENHOSP"]
    assert ack["MSH"][6] == "20240115163000+0000"
    assert ack["MSH"][8] == "ACK^A01^ACK"
    assert "ERR" not in ack


def test_error_ack_carries_err_in_the_message_version() -> None:
    parsed = parse_message(adt("A01", pv1={44: "bad"}))
    with pytest.raises(BadValue) as info:
        read_adt(parsed, CHICAGO)
    ack = segments(build_ack(parsed, "AE", now=NOW, error=info.value))
    assert ack["MSA"][1:3] == ["AE", "MSG00001"]
    assert ack["ERR"][2] == "PV1^1^44^1"
    assert ack["ERR"][3] == "102^Data type error^HL70357"
    assert ack["ERR"][4] == "E"
    old = parse_message(adt("A01", msh={12: "2.3"}, pv1={44: "bad"}))
    ack = segments(build_ack(old, "AE", now=NOW, error=info.value))
    assert ack["ERR"][1] == "PV1^1^44^102&Data type error&HL70357"


def test_a_header_too_short_for_create_ack_gets_a_minimal_ack() -> None:
    parsed = parse_message(b"MSH|^~\\&|X|Y|||20240101||ADT|C-1")
    ack = segments(build_ack(parsed, "AR", now=NOW))
    assert ack["MSH"][2] == "CARECOORD"
    assert ack["MSA"][1:3] == ["AR", "C-1"]
    ack = segments(build_ack(None, "AE", now=NOW, error=Unparseable("not HL7")))
    assert ack["MSA"][1:4] == ["AE", "", "not HL7"]
    assert ack["ERR"][3].startswith("100^")


@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
def test_odd_escape_sequences_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patient, _ = apply(adt("A01", pid={5: "DOE\\Zqq\\SECRET^JOHN\\C2D1\\"}))
    assert patient["name"][0]["family"].startswith("DOE")
    assert "SECRET" not in caplog.text and "DOE" not in caplog.text
