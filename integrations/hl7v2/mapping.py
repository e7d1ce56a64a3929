"""ADT events onto stored FHIR resources: the Patient and Encounter after the event (pure).

Each function takes the stored resource (or ``None``) and returns the resource to write: parts the
message does not carry are kept, so data from other sources survives an A08.

Encounter status by event: A01/A02 ``in-progress``; A03 ``finished`` with ``period.end`` (PV1-45,
else the event time) and the discharge disposition; A04 ``arrived``; A08 keeps the stored status
(a new Encounter is ``finished`` when PV1-45 is set, else ``in-progress``); A11
``entered-in-error``; A13 ``in-progress`` again without ``period.end`` or disposition. Only a
finished Encounter keeps an end and a disposition.
"""

from __future__ import annotations

import copy
from typing import Any

from integrations.hl7v2 import codes
from integrations.hl7v2.adt import DELETE, AdtMessage

__all__ = ["encounter_resource", "identifier_query", "patient_resource"]

_STATUS = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "arrived",
    "A11": "entered-in-error",
    "A13": "in-progress",
}
_DECEASED = ("deceasedBoolean", "deceasedDateTime")


def _escape(text: str) -> str:
    for ch in ("\\", ",", "|", "$"):
        text = text.replace(ch, "\\" + ch)
    return text


def identifier_query(identifier: dict[str, Any]) -> list[tuple[str, str]]:
    """The conditional search ``identifier=system|value`` for one Identifier (escaped)."""
    return [("identifier", f"{_escape(identifier['system'])}|{_escape(identifier['value'])}")]


def _same_identifier(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a.get("system") == b.get("system") and a.get("value") == b.get("value"))


def _with_identifiers(
    current: list[dict[str, Any]], new: tuple[dict[str, Any], ...] | list[dict[str, Any]]
) -> list[dict[str, Any]]:
    merged = list(current)
    for identifier in new:
        if not any(_same_identifier(identifier, known) for known in merged):
            merged.append(identifier)
    return merged


def patient_resource(existing: dict[str, Any] | None, adt: AdtMessage) -> dict[str, Any]:
    """The Patient after this message: identifiers added, PID parts replaced or removed."""
    patient: dict[str, Any] = copy.deepcopy(existing) if existing else {"resourceType": "Patient"}
    patient["identifier"] = _with_identifiers(
        patient.get("identifier") or [], adt.patient_identifiers
    )
    for element, value in adt.patient.items():
        if element in _DECEASED:
            for other in _DECEASED:
                patient.pop(other, None)
        if value is DELETE:
            patient.pop(element, None)
        else:
            patient[element] = value
    return patient


def encounter_resource(
    existing: dict[str, Any] | None, adt: AdtMessage, patient_reference: str
) -> dict[str, Any] | None:
    """The Encounter after this message, or ``None`` when there is none to write.

    None: the message has no visit number (an A08 about the patient only), or it cancels an
    admission CareCoord never saw (A11).
    """
    visit = adt.visit
    if visit.identifier is None or (existing is None and adt.event == "A11"):
        return None
    encounter: dict[str, Any] = (
        copy.deepcopy(existing) if existing else {"resourceType": "Encounter"}
    )
    encounter["identifier"] = _with_identifiers(
        encounter.get("identifier") or [], [visit.identifier]
    )
    status = _status(existing, adt)
    encounter["status"] = status
    if isinstance(visit.encounter_class, dict):
        encounter["class"] = visit.encounter_class
    elif "class" not in encounter:
        encounter["class"] = codes.encounter_class("")
    encounter["subject"] = {"reference": patient_reference}

    _apply_participants(encounter, visit.attending)
    _apply_period(encounter, adt, status)
    _apply_disposition(encounter, visit.disposition, status)
    locations = _locations(encounter.get("location") or [], adt, status)
    if locations:
        encounter["location"] = locations
    else:
        encounter.pop("location", None)
    return _ordered(encounter)


def _status(existing: dict[str, Any] | None, adt: AdtMessage) -> str:
    if adt.event in _STATUS:
        return _STATUS[adt.event]
    if existing is not None and existing.get("status"):
        return str(existing["status"])
    return "finished" if isinstance(adt.visit.discharged_at, str) else "in-progress"


def _apply_participants(encounter: dict[str, Any], attending: Any) -> None:
    if attending is None:
        return
    others = [p for p in encounter.get("participant") or [] if not _is_attending(p)]
    participants = others + (attending if isinstance(attending, list) else [])
    if participants:
        encounter["participant"] = participants
    else:
        encounter.pop("participant", None)


def _is_attending(participant: dict[str, Any]) -> bool:
    return any(
        coding.get("system") == codes.PARTICIPATION_TYPE and coding.get("code") == "ATND"
        for concept in participant.get("type") or []
        for coding in concept.get("coding") or []
    )


def _apply_period(encounter: dict[str, Any], adt: AdtMessage, status: str) -> None:
    period = dict(encounter.get("period") or {})
    visit = adt.visit
    if isinstance(visit.admitted_at, str):
        period["start"] = visit.admitted_at
    elif visit.admitted_at is DELETE:
        period.pop("start", None)
    elif "start" not in period and adt.event in ("A01", "A04") and adt.occurred_at:
        period["start"] = adt.occurred_at
    if status != "finished":
        period.pop("end", None)
    elif isinstance(visit.discharged_at, str):
        period["end"] = visit.discharged_at
    elif visit.discharged_at is DELETE and adt.event != "A03":
        period.pop("end", None)
    elif adt.event == "A03" and "end" not in period and adt.occurred_at:
        period["end"] = adt.occurred_at
    if period:
        encounter["period"] = period
    else:
        encounter.pop("period", None)


def _apply_disposition(encounter: dict[str, Any], disposition: Any, status: str) -> None:
    hospitalization = dict(encounter.get("hospitalization") or {})
    if status != "finished" or disposition is DELETE:
        hospitalization.pop("dischargeDisposition", None)
    elif isinstance(disposition, dict):
        hospitalization["dischargeDisposition"] = disposition
    if hospitalization:
        encounter["hospitalization"] = hospitalization
    else:
        encounter.pop("hospitalization", None)


def _display(location: dict[str, Any]) -> Any:
    return (location.get("location") or {}).get("display")


def _locations(current: list[dict[str, Any]], adt: AdtMessage, status: str) -> list[dict[str, Any]]:
    """Location history: a new PV1-3 completes the active entry and appends itself as active."""
    locations = [dict(entry) for entry in current]
    when = adt.occurred_at
    display = adt.visit.location
    active = [entry for entry in locations if entry.get("status") == "active"]

    def complete(entry: dict[str, Any]) -> None:
        entry["status"] = "completed"
        if when:
            entry["period"] = {**(entry.get("period") or {}), "end": when}

    if status in ("in-progress", "arrived") and not active and locations:
        last = locations[-1]
        if last.get("status") == "completed" and (display is None or display == _display(last)):
            last["status"] = "active"
            period = {k: v for k, v in (last.get("period") or {}).items() if k != "end"}
            if period:
                last["period"] = period
            else:
                last.pop("period", None)
            active = [last]
    moved = isinstance(display, str) and (not active or _display(active[-1]) != display)
    if moved and status != "entered-in-error":
        for entry in active:
            complete(entry)
        entry = {"location": {"display": display}, "status": "active"}
        if when:
            entry["period"] = {"start": when}
        locations.append(entry)
        active = [entry]
    if status == "finished":
        for entry in active:
            complete(entry)
    return locations


_ORDER = (
    "resourceType",
    "id",
    "meta",
    "identifier",
    "status",
    "class",
    "subject",
    "participant",
    "period",
    "hospitalization",
    "location",
)


def _ordered(resource: dict[str, Any]) -> dict[str, Any]:
    """Elements in R4 order (readable JSON; the content is the same either way)."""
    head = {key: resource[key] for key in _ORDER if key in resource}
    return {**head, **{k: v for k, v in resource.items() if k not in head}}
