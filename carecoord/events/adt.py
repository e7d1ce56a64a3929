"""HL7 v2 ADT intake: one frame in, its event and resources stored in one transaction, an ACK out.

The ACK is built only after the transaction commits: AA when the event is stored (or was stored
before: a replay changes nothing), AE/AR with ERR when the message is refused or cannot be
applied, in which case the raw frame is stored as a ``rejected`` or ``error`` event for review.
When not even that can be stored, :class:`EventNotStored` is raised and no ACK may be sent.

In the same transaction each Patient or Encounter change gets an AuditEvent (agent: the listener,
``mllp:<name>``) and each new Encounter version its ``automation.encounter`` job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from carecoord.audit.events import audit_event, audit_index, patients_in
from carecoord.db import run_write
from carecoord.events.encounters import EncounterEvent, encounter_hook
from carecoord.events.errors import EventNotStored
from carecoord.events.records import (
    EventStatus,
    dedup_key,
    find_event,
    payload_key,
    record_event,
)
from carecoord.fhir.access import Agent
from carecoord.fhir.errors import InvalidRequest, PreconditionFailed
from carecoord.fhir.store import (
    Clock,
    FhirStore,
    StoredResource,
    WriteHook,
    Writer,
    conditional_lock_key,
)
from carecoord.fhir.validation import validate_resource
from carecoord.fhir.values import format_instant
from integrations.hl7v2 import (
    AdtMessage,
    FeedConfig,
    Hl7v2Error,
    ParsedMessage,
    ProcessingFailed,
    Unparseable,
    build_ack,
    encounter_resource,
    identifier_query,
    parse_message,
    patient_resource,
    read_adt,
)

__all__ = ["ADT_EVENTS", "AdtIntake", "IntakeResult", "adt_hook", "write_adt"]

log = logging.getLogger(__name__)

#: The Encounter event each ADT trigger declares; A08 declares none (it is read from the data).
ADT_EVENTS: dict[str, EncounterEvent] = {
    "A01": EncounterEvent.ADMIT,
    "A02": EncounterEvent.TRANSFER,
    "A03": EncounterEvent.DISCHARGE,
    "A04": EncounterEvent.ADMIT,
    "A11": EncounterEvent.CANCEL,
    "A13": EncounterEvent.CANCEL,
}


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What became of one frame: the ACK to send and the event it was stored as."""

    ack: bytes = field(repr=False)
    ack_code: str  # AA, AE or AR
    outcome: str  # processed, replayed, rejected or error
    event_id: int | None
    kind: str
    produced: tuple[str, ...] = ()


def _digest(text: str) -> str:
    """A short hash of a control id for logs (the id itself is not patient data, but unneeded)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _upsert(
    w: Writer,
    res_type: str,
    params: list[tuple[str, str]],
    build: Callable[[dict[str, Any] | None], dict[str, Any] | None],
) -> str | None:
    """Conditional update on an identifier, merging into the stored resource; returns its id.

    The lock key is the store's conditional-update key, which the sync engine takes too before
    it looks for a resource to adopt by identifier: an ADT message and the first copy of the
    same stay from the EHR serialise, and the later of the two finds the other's resource."""
    w.lock(conditional_lock_key(res_type, params))
    found = w.find(res_type, params)
    if len(found) > 1:
        raise PreconditionFailed(f"Several {res_type} resources have the message's identifier")
    existing = None
    if found:
        content = w.read(res_type, found[0]).content
        existing = orjson.loads(content) if content else None
    resource = build(existing)
    if resource is None:
        return None
    validate_resource(resource, expected_type=res_type)
    return w.conditional_update(res_type, params, resource).resource.res_id


def write_adt(w: Writer, adt: AdtMessage) -> list[str]:
    """Upsert the Patient and the Encounter of an ADT event; return ``Type/id`` of each."""
    patient_id = _upsert(
        w,
        "Patient",
        identifier_query(adt.patient_identifiers[0]),
        lambda existing: patient_resource(existing, adt),
    )
    assert patient_id is not None
    produced = [f"Patient/{patient_id}"]
    if adt.visit.identifier is not None:
        encounter_id = _upsert(
            w,
            "Encounter",
            identifier_query(adt.visit.identifier),
            lambda existing: encounter_resource(existing, adt, f"Patient/{patient_id}"),
        )
        if encounter_id is not None:
            produced.append(f"Encounter/{encounter_id}")
    return produced


def adt_hook(source: str, event: str) -> WriteHook:
    """The write hook of one ADT message: audit each change, note the Encounter's event."""
    agent = Agent("system", source)

    def audit(w: Writer, res_type: str, stored: StoredResource, _: str | None) -> None:
        record = audit_event(
            interaction="create" if stored.version_id == 1 else "update",
            agent=agent,
            recorded=format_instant(w.now),
            request_id=None,
            patients=patients_in(res_type, stored.res_id, stored.content),
            targets=[f"{res_type}/{stored.res_id}"],
        )
        w.audit(record, audit_index(record))

    return encounter_hook(source=source, hint=ADT_EVENTS.get(event), also=audit)


def _failure(exc: Exception) -> ProcessingFailed:
    """A short description of a failed write, without patient data."""
    if isinstance(exc, PreconditionFailed):
        return ProcessingFailed(
            "Several resources match the message's identifier; resolve the duplicates",
            duplicate=True,
        )
    if isinstance(exc, InvalidRequest):
        paths = sorted({p for issue in exc.issues for p in issue.expression})[:5]
        where = f" ({', '.join(paths)})" if paths else ""
        return ProcessingFailed(f"The mapped resource is not valid FHIR{where}")
    return ProcessingFailed(f"The message could not be stored ({type(exc).__name__})")


class AdtIntake:
    """Takes ADT frames from one source (``mllp:<name>``); blocking, safe to share by threads."""

    def __init__(
        self,
        store: FhirStore,
        *,
        source: str,
        config: FeedConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.config = config or FeedConfig()
        self.clock = clock or store.clock

    def handle(self, raw: bytes) -> IntakeResult:
        """Store and apply one frame (without MLLP framing); return the ACK to send."""
        now = self.clock()
        parsed: ParsedMessage | None = None
        try:
            parsed = parse_message(raw, self.config.charset)
            adt = read_adt(parsed, self.config)
        except Hl7v2Error as exc:
            return self._refuse(raw, parsed, exc, now, EventStatus.REJECTED)
        key = dedup_key(adt.header.sending_facility, adt.header.control_id)
        try:
            event_id, produced = self.store.write(lambda w: self._apply(w, raw, adt, key, now))
        except Exception as exc:
            failure = _failure(exc)
            return self._refuse(
                raw, parsed, failure, now, EventStatus.ERROR, key=key, kind=adt.kind
            )
        kind = adt.kind
        if produced is None:
            log.info("hl7v2 %s id#%s replayed: AA", kind, _digest(key))
            outcome = "replayed"
        else:
            log.info("hl7v2 %s id#%s stored as event %s: AA", kind, _digest(key), event_id)
            outcome = "processed"
        ack = build_ack(parsed, "AA", now=now)
        return IntakeResult(ack, "AA", outcome, event_id, kind, tuple(produced or ()))

    def _apply(
        self, w: Writer, raw: bytes, adt: AdtMessage, key: str, now: datetime
    ) -> tuple[int, list[str] | None]:
        existing = find_event(w.conn, source=self.source, key=key)
        if existing is not None and existing.status is EventStatus.PROCESSED:
            if existing.payload != raw:
                log.warning(
                    "hl7v2 %s id#%s: control id reused with other content; kept the first",
                    adt.kind,
                    _digest(key),
                )
            return existing.id, None
        w.on_written = adt_hook(self.source, adt.event)
        produced = write_adt(w, adt)
        event_id, _ = record_event(
            w.conn,
            source=self.source,
            kind=adt.kind,
            key=key,
            payload=raw,
            status=EventStatus.PROCESSED,
            produced=produced,
            received_at=now,
        )
        return event_id, produced

    def _refuse(
        self,
        raw: bytes,
        parsed: ParsedMessage | None,
        error: Hl7v2Error,
        now: datetime,
        status: EventStatus,
        *,
        key: str | None = None,
        kind: str | None = None,
    ) -> IntakeResult:
        """Keep the frame as a rejected/error event (own transaction), then build the error ACK."""
        header = parsed.header if parsed is not None else None
        if kind is None:
            kind = header.kind if header is not None else "unknown"
        if key is None:
            key = (
                dedup_key(header.sending_facility, header.control_id)
                if header is not None and header.control_id
                else payload_key(raw)
            )
        try:
            event_id, _ = run_write(
                self.store.engine,
                lambda conn: record_event(
                    conn,
                    source=self.source,
                    kind=kind,
                    key=key,
                    payload=raw,
                    status=status,
                    error=error.message,
                    received_at=now,
                ),
                retries=self.store.retries,
            )
        except Exception as exc:
            log.error(
                "hl7v2 %s: the %s event could not be stored (%s); no ACK",
                kind,
                status.value,
                type(exc).__name__,
            )
            raise EventNotStored("The event could not be stored") from None
        log.warning(
            "hl7v2 %s id#%s stored as %s event %s: %s %s (%s)",
            kind,
            _digest(key),
            status.value,
            event_id,
            error.ack_code,
            error.error_code,
            error.message,
        )
        ack = build_ack(parsed, error.ack_code, now=now, error=error)
        return IntakeResult(ack, error.ack_code, status.value, event_id, kind)

    def too_large(self, limit: int) -> bytes:
        """The ACK for a frame over ``limit`` bytes (not stored: its bytes were not kept)."""
        log.warning("hl7v2 frame over %s bytes refused; closing the connection", limit)
        error = Unparseable(f"The message exceeds {limit} bytes")
        return build_ack(None, "AE", now=self.clock(), error=error)
