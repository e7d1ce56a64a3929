"""ADT messages (A01 A02 A03 A04 A08 A11 A13): checked header, PID and PV1 read into FHIR parts.

Each PID/PV1 part is a *change*: ``None`` when the field is empty (keep what is stored),
:data:`DELETE` when the sender sent the HL7 null ``""`` (remove it), else the new FHIR value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar

from integrations.hl7v2 import codes
from integrations.hl7v2.config import Authority, FeedConfig, IdentifierKind
from integrations.hl7v2.errors import (
    BadValue,
    ErrorLocation,
    MissingField,
    UnsupportedMessageType,
    UnsupportedVersion,
)
from integrations.hl7v2.reading import (
    MESSAGE_TYPES,
    TRIGGER,
    VERSION,
    Header,
    ParsedMessage,
    Segment,
    loggable_code,
)
from integrations.hl7v2.timestamps import fhir_date, fhir_datetime

__all__ = [
    "DELETE",
    "SUPPORTED_EVENTS",
    "AdtMessage",
    "Change",
    "Visit",
    "check_header",
    "read_adt",
]

#: Trigger events the feed takes, and what each does to the Encounter.
SUPPORTED_EVENTS = {
    "A01": "admit",
    "A02": "transfer",
    "A03": "discharge",
    "A04": "register",
    "A08": "update",
    "A11": "cancel admit",
    "A13": "cancel discharge",
}


class _Delete(enum.Enum):
    DELETE = "delete"


DELETE = _Delete.DELETE
T = TypeVar("T")
Change: TypeAlias = T | Literal[_Delete.DELETE] | None


@dataclass(frozen=True, slots=True)
class Visit:
    """The Encounter parts of PV1 (each a change) and the visit number that identifies it."""

    identifier: dict[str, Any] | None
    encounter_class: Change[dict[str, Any]] = None
    location: Change[str] = None
    attending: Change[list[dict[str, Any]]] = None
    admitted_at: Change[str] = None
    discharged_at: Change[str] = None
    disposition: Change[dict[str, Any]] = None


@dataclass(frozen=True, slots=True)
class AdtMessage:
    """One ADT event, read and checked; holds patient data (never log it)."""

    header: Header
    event: str
    occurred_at: str | None  # EVN-6, else EVN-2, else MSH-7 (FHIR dateTime)
    patient_identifiers: tuple[dict[str, Any], ...] = field(repr=False)  # first: matched on
    patient: dict[str, Any] = field(repr=False)  # element -> value or DELETE
    visit: Visit = field(repr=False)

    @property
    def kind(self) -> str:
        """``ADT^A03`` (the event also when only EVN-1 names it)."""
        return f"ADT^{self.event}"


def check_header(parsed: ParsedMessage, config: FeedConfig) -> Header:
    """Refuse what the feed does not take: no control id, not ADT, another event or version."""
    header = parsed.header
    msh = Segment(parsed.message[0])
    if not header.control_id:
        raise MissingField("MSH-10 (message control id) is empty", location=msh.where(10))
    if header.message_code != "ADT":
        raise UnsupportedMessageType(
            f"Message type {loggable_code(header.message_code, MESSAGE_TYPES)} is not taken",
            location=msh.where(9, 1),
        )
    trigger = header.trigger or _evn_trigger(parsed)
    if trigger not in SUPPORTED_EVENTS:
        raise UnsupportedMessageType(
            f"ADT event {loggable_code(trigger, TRIGGER)} is not taken",
            location=msh.where(9, 2),
            event=True,
        )
    if header.version not in config.versions:
        raise UnsupportedVersion(
            f"HL7 version {loggable_code(header.version, VERSION)} is not taken",
            location=msh.where(12),
        )
    return header


def _evn_trigger(parsed: ParsedMessage) -> str:
    """Old feeds leave MSH-9.2 empty and name the event in EVN-1 only."""
    evn = parsed.segment("EVN")
    return evn.get(1).upper() if evn is not None else ""


def read_adt(parsed: ParsedMessage, config: FeedConfig) -> AdtMessage:
    """Read a supported ADT message into FHIR parts; raises the feed's errors."""
    header = check_header(parsed, config)
    event = header.trigger or _evn_trigger(parsed)
    pid = parsed.segment("PID")
    if pid is None:
        raise MissingField("The PID segment is missing", location=ErrorLocation("PID"))
    pv1 = parsed.segment("PV1")
    if pv1 is None:
        raise MissingField("The PV1 segment is missing", location=ErrorLocation("PV1"))
    identifiers = _patient_identifiers(pid, header, config)
    visit = _visit(pv1, header, config, required=event != "A08")
    return AdtMessage(
        header=header,
        event=event,
        occurred_at=_occurred_at(parsed, config),
        patient_identifiers=identifiers,
        patient=_patient(pid, config),
        visit=visit,
    )


def _occurred_at(parsed: ParsedMessage, config: FeedConfig) -> str | None:
    evn = parsed.segment("EVN")
    candidates: list[tuple[Segment, int]] = []
    if evn is not None:
        candidates += [(evn, 6), (evn, 2)]
    candidates.append((Segment(parsed.message[0]), 7))
    for seg, number in candidates:
        if seg.get(number):
            return _datetime(seg, number, config)
    return None


def _datetime(seg: Segment, number: int, config: FeedConfig) -> str:
    try:
        return fhir_datetime(seg.get(number, 1, 1), config.zone)
    except ValueError:
        raise BadValue(
            f"{seg.name}-{number} is not a valid HL7 timestamp", location=seg.where(number)
        ) from None


def _change(seg: Segment, number: int, value: T | None) -> Change[T]:
    state = seg.state(number)
    if state == "null":
        return DELETE
    return value if state == "value" else None


def _authority(seg: Segment, number: int, rep: int, component: int) -> Authority:
    return Authority(
        namespace=seg.get(number, rep, component, 1),
        universal_id=seg.get(number, rep, component, 2),
        universal_type=seg.get(number, rep, component, 3),
    )


def _identifier(
    seg: Segment,
    number: int,
    rep: int,
    *,
    kind: IdentifierKind,
    config: FeedConfig,
    fallback: str,
    value_component: int = 1,
    authority_component: int = 4,
    type_component: int = 5,
) -> dict[str, Any] | None:
    value = seg.get(number, rep, value_component)
    if not value:
        return None
    system = config.identifier_system(
        kind, _authority(seg, number, rep, authority_component), fallback=fallback
    )
    identifier: dict[str, Any] = {}
    type_code = seg.get(number, rep, type_component).upper()
    if type_code:
        identifier["type"] = {"coding": [{"system": codes.V2_0203, "code": type_code}]}
    identifier["system"] = system
    identifier["value"] = value
    return identifier


# -- PID -> Patient ------------------------------------------------------------------------------


def _patient_identifiers(
    pid: Segment, header: Header, config: FeedConfig
) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for rep in range(1, pid.repetitions(3) + 1):
        identifier = _identifier(
            pid, 3, rep, kind="patient", config=config, fallback=header.facility_namespace
        )
        if identifier is not None and identifier not in found:
            found.append(identifier)
    if not found:
        raise MissingField("PID-3 (patient identifier list) is empty", location=pid.where(3))
    # Match on the medical record number when the sender marks one (CX-5 = MR).
    found.sort(key=lambda ident: _type_code(ident) != "MR")
    return tuple(found)


def _type_code(identifier: dict[str, Any]) -> str:
    coding = (identifier.get("type") or {}).get("coding") or [{}]
    return str(coding[0].get("code", ""))


def _patient(pid: Segment, config: FeedConfig) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    parts: dict[str, Any] = {
        "name": (5, _names(pid)),
        "gender": (8, codes.GENDER.get(pid.get(8).upper(), "unknown") if pid.get(8) else None),
        "birthDate": (7, _birth_date(pid, config)),
        "address": (11, _addresses(pid)),
        "telecom": (13, _telecoms(pid, 13)),
    }
    for element, (number, value) in parts.items():
        change = _change(pid, number, value or None)
        if change is not None:
            changes[element] = change
    death = pid.get(29)
    if death:
        changes["deceasedDateTime"] = _datetime(pid, 29, config)
    elif pid.get(30).upper() in ("Y", "N"):
        changes["deceasedBoolean"] = pid.get(30).upper() == "Y"
    return changes


def _birth_date(pid: Segment, config: FeedConfig) -> str | None:
    if not pid.get(7):
        return None
    try:
        return fhir_date(pid.get(7, 1, 1), config.zone)
    except ValueError:
        raise BadValue("PID-7 is not a valid HL7 date", location=pid.where(7)) from None


def _names(pid: Segment) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    for rep in range(1, pid.repetitions(5) + 1):
        name: dict[str, Any] = {}
        use = codes.NAME_USE.get(pid.get(5, rep, 7).upper())
        if use:
            name["use"] = use
        family = pid.get(5, rep, 1, 1)
        if family:
            name["family"] = family
        given = [g for g in (pid.get(5, rep, 2), pid.get(5, rep, 3)) if g]
        if given:
            name["given"] = given
        prefix, suffix = pid.get(5, rep, 5), [pid.get(5, rep, 4), pid.get(5, rep, 6)]
        if prefix:
            name["prefix"] = [prefix]
        if any(suffix):
            name["suffix"] = [s for s in suffix if s]
        if "family" in name or "given" in name:
            names.append(name)
    return names


def _addresses(pid: Segment) -> list[dict[str, Any]]:
    addresses: list[dict[str, Any]] = []
    for rep in range(1, pid.repetitions(11) + 1):
        address: dict[str, Any] = {}
        kind = pid.get(11, rep, 7).upper()
        if kind in codes.ADDRESS_USE:
            address["use"] = codes.ADDRESS_USE[kind]
        if kind in codes.ADDRESS_TYPE:
            address["type"] = codes.ADDRESS_TYPE[kind]
        lines = [v for v in (pid.get(11, rep, 1, 1), pid.get(11, rep, 2)) if v]
        if lines:
            address["line"] = lines
        for element, component in (
            ("city", 3),
            ("state", 4),
            ("postalCode", 5),
            ("country", 6),
            ("district", 9),
        ):
            value = pid.get(11, rep, component)
            if value:
                address[element] = value
        if set(address) - {"use", "type"}:
            addresses.append(address)
    return addresses


def _telecoms(seg: Segment, number: int) -> list[dict[str, Any]]:
    telecoms: list[dict[str, Any]] = []
    for rep in range(1, seg.repetitions(number) + 1):
        use_code, equipment = seg.get(number, rep, 2).upper(), seg.get(number, rep, 3).upper()
        system = codes.TELECOM_SYSTEM.get(equipment)
        email = seg.get(number, rep, 4)
        if use_code == "NET" or system == "email" or (email and not seg.get(number, rep, 1)):
            system, value = "email", email or seg.get(number, rep, 1)
        else:
            value = (
                seg.get(number, rep, 1)
                or seg.get(number, rep, 12)
                or _phone_parts(seg, number, rep)
            )
        if not value:
            continue
        telecom: dict[str, Any] = {"system": system or "phone", "value": value}
        use = "mobile" if equipment == "CP" else codes.TELECOM_USE.get(use_code)
        if use:
            telecom["use"] = use
        telecoms.append(telecom)
    return telecoms


def _phone_parts(seg: Segment, number: int, rep: int) -> str:
    country, area, local, ext = (seg.get(number, rep, c) for c in (5, 6, 7, 8))
    if not local:
        return ""
    text = f"+{country} " if country else ""
    text += f"({area}) {local}" if area else local
    return f"{text} ext. {ext}" if ext else text


# -- PV1 -> Encounter ----------------------------------------------------------------------------


def _visit(pv1: Segment, header: Header, config: FeedConfig, *, required: bool) -> Visit:
    identifier = _identifier(
        pv1, 19, 1, kind="visit", config=config, fallback=header.facility_namespace
    )
    if identifier is None and required:
        raise MissingField("PV1-19 (visit number) is empty", location=pv1.where(19))
    if identifier is not None:
        identifier = {"use": "official", **identifier}
        identifier.setdefault("type", {"coding": [{"system": codes.V2_0203, "code": "VN"}]})
    patient_class = pv1.get(2)
    return Visit(
        identifier=identifier,
        encounter_class=_change(
            pv1, 2, codes.encounter_class(patient_class) if patient_class else None
        ),
        location=_change(pv1, 3, _location(pv1) or None),
        attending=_change(pv1, 7, _attending(pv1, header, config) or None),
        admitted_at=_change(pv1, 44, _datetime(pv1, 44, config) if pv1.get(44) else None),
        discharged_at=_change(pv1, 45, _datetime(pv1, 45, config) if pv1.get(45) else None),
        disposition=_change(pv1, 36, _disposition(pv1.get(36)) if pv1.get(36) else None),
    )


def _location(pv1: Segment) -> str:
    """PV1-3 as display text: point of care, room, bed, and the facility in brackets."""
    parts = [pv1.get(3, 1, c) for c in (1, 2, 3)]
    text = " ".join(p for p in parts if p)
    facility = pv1.get(3, 1, 4)
    if facility:
        text = f"{text} ({facility})" if text else facility
    description = pv1.get(3, 1, 9)
    return text or description


def _attending(pv1: Segment, header: Header, config: FeedConfig) -> list[dict[str, Any]]:
    participants: list[dict[str, Any]] = []
    for rep in range(1, pv1.repetitions(7) + 1):
        individual: dict[str, Any] = {}
        given = " ".join(v for v in (pv1.get(7, rep, 3), pv1.get(7, rep, 4)) if v)
        name = " ".join(
            v for v in (pv1.get(7, rep, 6), given, pv1.get(7, rep, 2), pv1.get(7, rep, 5)) if v
        )
        degree = pv1.get(7, rep, 7)
        if name:
            individual["display"] = f"{name}, {degree}" if degree else name
        identifier = _identifier(
            pv1,
            7,
            rep,
            kind="practitioner",
            config=config,
            fallback=header.facility_namespace,
            authority_component=9,
            type_component=13,
        )
        if identifier is not None:
            individual["identifier"] = identifier
        if individual:
            participants.append({"type": codes.attending_type(), "individual": individual})
    return participants


def _disposition(code: str) -> dict[str, Any]:
    codings = [{"system": codes.V2_0112, "code": code}]
    mapped = codes.DISCHARGE_DISPOSITION.get(code)
    if mapped is not None:
        codings.append(
            {"system": codes.DISCHARGE_DISPOSITION_SYSTEM, "code": mapped[0], "display": mapped[1]}
        )
    return {"coding": codings}
