"""Da Vinci Unsolicited Notifications: admit, discharge and transfer message Bundles.

``POST /fhir/$process-message`` takes a ``message`` Bundle whose first entry is a MessageHeader
with ``eventCoding`` ``notification-admit``, ``-discharge`` or ``-transfer`` (CodeSystem
``http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event``) and ``focus`` on the
Encounter the Bundle carries. Every carried resource but the MessageHeader (and AuditEvents,
which are this server's own) is upserted: keeping its id, or, when the sender is mapped to an EHR
connection (``config/davinci/senders.toml``, :mod:`carecoord.events.senders`), through that
connection's sync identity map (ADR 0021); references between entries are rewritten from their
``fullUrl`` to ``Type/id`` first. The focus Encounter's event is the one the
message declares. Event source: ``davinci:<sender>`` (the authenticated client); key: the
Bundle's identifier, else the MessageHeader's id, with the sender's endpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from carecoord.events.encounters import EncounterEvent
from carecoord.events.intake import (
    EventPlan,
    Incoming,
    IntakeAudit,
    IntakeOutcome,
    carried,
    entry_error,
    incoming,
    receive,
    resolve_references,
    source_items,
)
from carecoord.events.records import dedup_key, payload_key
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import BusinessRule, FhirError, InvalidRequest
from carecoord.fhir.store import FhirStore
from carecoord.fhir.validation import parse_json, validate_resource
from carecoord.sync.identity import local_id
from carecoord.sync.upsert import Origin

__all__ = [
    "EVENTS",
    "EVENT_SYSTEM",
    "MessageSummary",
    "davinci_source",
    "message_key",
    "plan_message",
    "read_header",
    "receive_message",
]

EVENT_SYSTEM: Final = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
#: The notification events this server acts on, and the Encounter event each declares.
EVENTS: Final[Mapping[str, EncounterEvent]] = {
    "notification-admit": EncounterEvent.ADMIT,
    "notification-discharge": EncounterEvent.DISCHARGE,
    "notification-transfer": EncounterEvent.TRANSFER,
}
#: Carried types that are not written: the message's own header, and this server's audit trail.
_NOT_STORED: Final = frozenset({"MessageHeader", "AuditEvent"})
_SOURCE_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What the MessageHeader says: the event code, the sender's endpoint, the focus."""

    event: str
    endpoint: str
    focus: tuple[str, ...]
    header_id: str | None


def davinci_source(policy: AccessPolicy | None) -> str:
    """The inbound-event source of a sender (its client id, or ``anonymous``)."""
    who = policy.agent.who if policy is not None else "anonymous"
    source = f"davinci:{who}"
    if len(source) > _SOURCE_MAX:
        source = "davinci:sha256:" + hashlib.sha256(who.encode()).hexdigest()[:32]
    return source


def read_header(header: Mapping[str, Any]) -> MessageSummary:
    """The parts of a (validated) MessageHeader this intake needs; 422 for an unknown event."""
    coding = header.get("eventCoding")
    if not isinstance(coding, dict):
        raise BusinessRule("The MessageHeader has no eventCoding; only Da Vinci notifications")
    system, code = coding.get("system"), coding.get("code")
    if system not in (EVENT_SYSTEM, None) or code not in EVENTS:
        raise BusinessRule(
            f"Unsupported message event {code!r}; expected notification-admit, "
            "notification-discharge or notification-transfer"
        )
    source = header.get("source") if isinstance(header.get("source"), dict) else {}
    endpoint = source.get("endpoint") if source else None
    focus = tuple(
        str(item["reference"])
        for item in header.get("focus") or []
        if isinstance(item, dict) and isinstance(item.get("reference"), str)
    )
    header_id = header.get("id")
    return MessageSummary(
        str(code),
        endpoint if isinstance(endpoint, str) else "",
        focus,
        header_id if isinstance(header_id, str) else None,
    )


def _key(bundle: Mapping[str, Any], summary: MessageSummary, body: bytes) -> str:
    identifier = bundle.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        own = f"{identifier.get('system', '')}|{identifier['value']}"
        return dedup_key(summary.endpoint, "bundle", own)
    if summary.header_id:
        return dedup_key(summary.endpoint, "header", summary.header_id)
    return payload_key(body)


def _first_entry(data: Any) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise InvalidRequest("$process-message expects a Bundle")
    if data.get("type") != "message":
        raise InvalidRequest(f"Bundle.type must be message, not {data.get('type')!r}")
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InvalidRequest("A message Bundle needs entries, the MessageHeader first")
    first = entries[0]
    header = first.get("resource") if isinstance(first, dict) else None
    if not isinstance(header, dict) or header.get("resourceType") != "MessageHeader":
        raise InvalidRequest("The first entry of a message Bundle must be its MessageHeader")
    try:
        _, checked = validate_resource(header, expected_type="MessageHeader")
    except FhirError as exc:
        raise entry_error(0, exc) from None
    return entries, checked


def message_key(body: bytes, *, max_depth: int = 64) -> str | None:
    """The event key of a message, as far as it can be read (for a refused message's record)."""
    try:
        data = parse_json(body, max_depth=max_depth)
        _, header = _first_entry(data)
        return _key(data, read_header(header), body)
    except FhirError:
        return None


def plan_message(
    body: bytes,
    *,
    policy: AccessPolicy | None,
    received_at: datetime,
    max_depth: int = 64,
    origin: Origin | None = None,
) -> EventPlan:
    """What a Da Vinci notification asks for (no database); 400/422 when it cannot be taken.

    ``origin``: the EHR connection the sender is mapped to (``config/davinci/senders.toml``);
    carried resources then go through the sync identity map (ADR 0021).
    """
    data = parse_json(body, max_depth=max_depth)
    entries, header = _first_entry(data)
    summary = read_header(header)
    found: list[tuple[int, dict[str, Any], Incoming]] = []
    for index, entry in enumerate(entries[1:], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            raise entry_error(index, InvalidRequest("A message entry must carry a resource"))
        if entry["resource"].get("resourceType") in _NOT_STORED:
            continue
        found.append((index, entry, incoming(index, entry, entry["resource"])))
    urls = carried((entry, item) for _, entry, item in found)
    seen: set[str] = set()
    resources: list[Incoming] = []
    for index, _, item in found:
        if item.reference in seen:
            raise entry_error(index, InvalidRequest(f"{item.res_type} is in the Bundle twice"))
        seen.add(item.reference)
        try:
            rewritten = resolve_references(item.resource, urls)
        except FhirError as exc:
            raise entry_error(index, exc) from None
        resources.append(Incoming(item.res_type, item.res_id, rewritten))
    focus = [urls[ref] for ref in summary.focus if ref in urls]
    encounters = [ref for ref in focus if ref.startswith("Encounter/")]
    if not encounters:
        raise BusinessRule("MessageHeader.focus must reference an Encounter the Bundle carries")
    hint = EVENTS[summary.event]
    ids = [ref.split("/", 1)[1] for ref in encounters]
    if origin is not None:
        return EventPlan(
            davinci_source(policy),
            summary.event,
            _key(data, summary, body),
            body,
            received_at,
            hints={local_id(origin.connection, "Encounter", i): hint for i in ids},
            origin=origin,
            sourced=source_items(origin, resources),
        )
    return EventPlan(
        davinci_source(policy),
        summary.event,
        _key(data, summary, body),
        body,
        received_at,
        tuple(resources),
        hints={i: hint for i in ids},
    )


def receive_message(
    store: FhirStore,
    body: bytes,
    *,
    policy: AccessPolicy | None,
    received_at: datetime,
    request_id: str | None = None,
    audit: IntakeAudit | None = None,
    max_depth: int = 64,
    origin: Origin | None = None,
) -> IntakeOutcome:
    """Store and apply one Da Vinci message with the caller's ``policy`` (see :func:`receive`)."""
    return receive(
        store,
        source=davinci_source(policy),
        refused_kind="davinci:invalid",
        payload=body,
        plan=lambda: plan_message(
            body, policy=policy, received_at=received_at, max_depth=max_depth, origin=origin
        ),
        received_at=received_at,
        policy=policy,
        request_id=request_id,
        audit=audit,
        key=lambda: message_key(body, max_depth=max_depth),
    )
