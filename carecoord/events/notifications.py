"""FHIR Subscription notifications: R4 rest-hook posts and R4/R4B backport notification Bundles.

Accepted on a channel (:mod:`carecoord.events.channels`):

- an empty body: an R4 rest-hook notification without payload (or its heartbeat), recorded; at
  a configured connection it queues a ``sync.pull`` of it (one per minute, whatever the burst);
- a resource (also ``PUT <channel>/<Type>/<id>``): an R4 rest-hook with the resource as payload;
- a ``history`` Bundle whose first entry is the subscription status (a ``Parameters`` per the
  Subscriptions R5 Backport IG for R4, or an R4B ``SubscriptionStatus``): ``handshake``,
  ``heartbeat``, ``event-notification``, ``query-status`` and ``query-event``.

Full-resource entries of the channel's ``upsert_types`` are upserted (references between them
rewritten by ``fullUrl``): through the sync identity map of the channel's EHR connection when that
connection is configured (the same local resource a pull or a Bulk Data import makes, a source
version already stored skipped; ADR 0021), else by the sender's id; every other resource the
notification is about (the focus and additional context of its events, entries without a
resource: ``id-only``; a rest-hook resource of another type) becomes a ``sync.fetch`` job for
the channel's EHR connection (and, through the identity map, so does a Patient or Encounter a
carried resource refers to that is not known yet). Event key: subscription + event numbers (with
their timestamps, so a restarted count is not a replay) for event notifications; type, id,
``versionId`` and ``lastUpdated`` for a rest-hook resource that has a version; else the hash of
the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from carecoord.events.channels import Channel
from carecoord.events.intake import (
    EventPlan,
    Fetch,
    Incoming,
    IntakeAudit,
    IntakeOutcome,
    carried,
    entry_error,
    incoming,
    is_carried,
    receive,
    resolve_references,
    source_items,
)
from carecoord.events.records import dedup_key, payload_key
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import FhirError, InvalidRequest
from carecoord.fhir.store import FhirStore
from carecoord.fhir.validation import parse_json, validate_resource
from carecoord.sync.upsert import Origin

__all__ = [
    "NOTIFICATION_TYPES",
    "NotificationEvent",
    "SubscriptionStatus",
    "notification_source",
    "plan_notification",
    "read_status",
    "receive_notification",
]

#: SubscriptionStatus.type codes (R5 subscription-notification-type).
NOTIFICATION_TYPES: Final = frozenset(
    {"handshake", "heartbeat", "event-notification", "query-status", "query-event"}
)
_WITH_EVENTS: Final = frozenset({"event-notification", "query-event"})


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One ``notification-event``: its number, when it happened, what it is about."""

    number: str | None
    timestamp: str | None
    focus: str | None
    additional_context: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """The status part of a notification, from R4 ``Parameters`` or R4B ``SubscriptionStatus``."""

    subscription: str
    type: str
    status: str | None = None
    topic: str | None = None
    events_since_start: str | None = None
    events: tuple[NotificationEvent, ...] = ()


def notification_source(channel: Channel) -> str:
    """The inbound-event source of a channel."""
    return f"subscription:{channel.name}"


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _reference(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return str(value["reference"])
    return None


def _param_value(param: Mapping[str, Any]) -> Any:
    for key, value in param.items():
        if key.startswith("value"):
            return value
    return None


def _from_parameters(resource: Mapping[str, Any]) -> SubscriptionStatus:
    params = [p for p in resource.get("parameter") or [] if isinstance(p, dict)]
    values: dict[str, Any] = {}
    events: list[NotificationEvent] = []
    for param in params:
        name = param.get("name")
        if name == "notification-event":
            parts = {
                str(part.get("name")): part
                for part in param.get("part") or []
                if isinstance(part, dict) and part.get("name") != "additional-context"
            }
            context = tuple(
                ref
                for part in param.get("part") or []
                if isinstance(part, dict) and part.get("name") == "additional-context"
                for ref in [_reference(_param_value(part))]
                if ref is not None
            )
            events.append(
                NotificationEvent(
                    number=_text(_param_value(parts.get("event-number", {}))),
                    timestamp=_text(_param_value(parts.get("timestamp", {}))),
                    focus=_reference(_param_value(parts.get("focus", {}))),
                    additional_context=context,
                )
            )
        elif isinstance(name, str):
            values[name] = _param_value(param)
    return _status(
        subscription=_reference(values.get("subscription")),
        type_=_text(values.get("type")),
        status=_text(values.get("status")),
        topic=_text(values.get("topic")),
        since=_text(values.get("events-since-subscription-start")),
        events=events,
    )


def _from_subscription_status(resource: Mapping[str, Any]) -> SubscriptionStatus:
    events = [
        NotificationEvent(
            number=_text(event.get("eventNumber")),
            timestamp=_text(event.get("timestamp")),
            focus=_reference(event.get("focus")),
            additional_context=tuple(
                ref
                for item in event.get("additionalContext") or []
                for ref in [_reference(item)]
                if ref is not None
            ),
        )
        for event in resource.get("notificationEvent") or []
        if isinstance(event, dict)
    ]
    return _status(
        subscription=_reference(resource.get("subscription")),
        type_=_text(resource.get("type")),
        status=_text(resource.get("status")),
        topic=_text(resource.get("topic")),
        since=_text(resource.get("eventsSinceSubscriptionStart")),
        events=events,
    )


def _status(
    *,
    subscription: str | None,
    type_: str | None,
    status: str | None,
    topic: str | None,
    since: str | None,
    events: list[NotificationEvent],
) -> SubscriptionStatus:
    if not subscription:
        raise InvalidRequest("The subscription status names no subscription")
    if type_ not in NOTIFICATION_TYPES:
        raise InvalidRequest(f"Unknown notification type {type_!r}")
    return SubscriptionStatus(subscription, type_, status, topic, since, tuple(events))


def read_status(resource: Any) -> SubscriptionStatus:
    """The subscription status of a notification's first entry (R4 or R4B form)."""
    if not isinstance(resource, dict):
        raise InvalidRequest("The first entry of a notification must carry its status")
    kind = resource.get("resourceType")
    if kind == "Parameters":
        return _from_parameters(resource)
    if kind == "SubscriptionStatus":
        return _from_subscription_status(resource)
    raise InvalidRequest(
        "The first entry of a notification Bundle must be a Parameters (R4) or "
        "SubscriptionStatus (R4B) subscription status"
    )


def _event_key(status: SubscriptionStatus, body: bytes) -> str:
    numbered = [e for e in status.events if e.number]
    if status.type in _WITH_EVENTS and numbered:
        marks = ",".join(f"{e.number}@{e.timestamp or ''}" for e in numbered)
        return dedup_key(status.subscription, "events", marks)
    if status.type == "event-notification" and status.events_since_start:
        return dedup_key(status.subscription, "since", status.events_since_start)
    return payload_key(body)


def _bundle_plan(
    data: dict[str, Any],
    body: bytes,
    channel: Channel,
    received_at: datetime,
    origin: Origin | None,
) -> EventPlan:
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise InvalidRequest("A notification Bundle needs the subscription status as entry[0]")
    try:
        status = read_status(entries[0].get("resource"))
    except FhirError as exc:
        raise entry_error(0, exc) from None
    source = notification_source(channel)
    kind = f"subscription:{status.type}"
    key = _event_key(status, body)
    if status.type not in _WITH_EVENTS:  # handshake, heartbeat, query-status: recorded only
        return EventPlan(source, kind, key, body, received_at)
    found: list[tuple[int, dict[str, Any], Incoming]] = []
    listed: list[str] = []
    for index, entry in enumerate(entries[1:], start=1):
        if not isinstance(entry, dict):
            raise entry_error(index, InvalidRequest("An entry must be an object"))
        resource = entry.get("resource")
        if resource is None:
            if isinstance(entry.get("fullUrl"), str):
                listed.append(entry["fullUrl"])
            continue
        res_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if res_type in channel.upsert_types:
            found.append((index, entry, incoming(index, entry, resource)))
    urls = carried((entry, item) for _, entry, item in found)
    resources: list[Incoming] = []
    for index, _, item in found:
        try:
            rewritten = resolve_references(item.resource, urls)
        except FhirError as exc:
            raise entry_error(index, exc) from None
        resources.append(Incoming(item.res_type, item.res_id, rewritten))
    # Whatever the notification is about and was not written here, the sync engine fetches.
    wanted = [
        reference
        for event in status.events
        for reference in (event.focus, *event.additional_context)
        if reference
    ]
    fetches: list[Fetch] = []
    seen: set[str] = set()
    for reference in [*wanted, *listed]:
        if reference in seen or is_carried(reference, urls):
            continue
        seen.add(reference)
        fetches.append(Fetch(channel.effective_connection, reference))
    if origin is not None:
        return EventPlan(
            source,
            kind,
            key,
            body,
            received_at,
            fetches=tuple(fetches),
            origin=origin,
            sourced=source_items(origin, resources),
        )
    return EventPlan(source, kind, key, body, received_at, tuple(resources), tuple(fetches))


def _resource_plan(
    data: dict[str, Any],
    body: bytes,
    channel: Channel,
    received_at: datetime,
    path: tuple[str, str] | None,
    origin: Origin | None,
) -> EventPlan:
    res_type = data.get("resourceType")
    if path is not None:
        if res_type != path[0]:
            raise InvalidRequest(f"resourceType {res_type!r} does not match the URL's type")
        if data.get("id") not in (None, path[1]):
            raise InvalidRequest("The resource's id does not match the URL's id")
        data = {**data, "id": path[1]}
    res_type, checked = validate_resource(data)
    res_id = checked.get("id")
    if not isinstance(res_id, str) or not res_id:
        raise InvalidRequest("The notified resource has no id")
    item = Incoming(res_type, res_id, checked)
    meta = checked.get("meta")
    version = _text(meta.get("versionId")) if isinstance(meta, dict) else None
    if isinstance(meta, dict) and version:
        key = dedup_key(item.reference, version, _text(meta.get("lastUpdated")) or "")
    else:
        key = payload_key(body)
    resources: tuple[Incoming, ...] = ()
    fetches: tuple[Fetch, ...] = ()
    if item.res_type in channel.upsert_types:
        resources = (item,)
    else:
        fetches = (Fetch(channel.effective_connection, item.reference),)
    if origin is not None and resources:
        return EventPlan(
            notification_source(channel),
            f"rest-hook:{item.res_type}",
            key,
            body,
            received_at,
            origin=origin,
            sourced=source_items(origin, resources),
        )
    return EventPlan(
        notification_source(channel),
        f"rest-hook:{item.res_type}",
        key,
        body,
        received_at,
        resources,
        fetches,
    )


def plan_notification(
    body: bytes,
    *,
    channel: Channel,
    received_at: datetime,
    request_id: str | None = None,
    path: tuple[str, str] | None = None,
    max_depth: int = 64,
    origin: Origin | None = None,
) -> EventPlan:
    """What one notification asks for (no database); a 400 when it is not one.

    ``path``: (type, id) when the resource was put to ``<channel>/<type>/<id>``. ``origin``:
    the channel's EHR connection when it is configured; carried resources then go through the
    sync identity map (ADR 0021) instead of keeping the sender's ids.
    """
    source = notification_source(channel)
    if not body.strip():
        if path is not None:
            raise InvalidRequest("A resource notification needs the resource as its body")
        mark = request_id or payload_key(received_at.isoformat().encode())
        # "Something changed": with a configured connection, a pull finds out what.
        return EventPlan(
            source,
            "rest-hook:ping",
            f"ping:{mark}",
            body,
            received_at,
            origin=origin,
            pull=origin is not None,
        )
    data = parse_json(body, max_depth=max_depth)
    if not isinstance(data, dict):
        raise InvalidRequest("A notification must be a JSON object")
    if data.get("resourceType") == "Bundle" and data.get("type") == "history" and path is None:
        return _bundle_plan(data, body, channel, received_at, origin)
    return _resource_plan(data, body, channel, received_at, path, origin)


def receive_notification(
    store: FhirStore,
    body: bytes,
    *,
    channel: Channel,
    policy: AccessPolicy | None,
    received_at: datetime,
    request_id: str | None = None,
    audit: IntakeAudit | None = None,
    path: tuple[str, str] | None = None,
    max_depth: int = 64,
    origin: Origin | None = None,
) -> IntakeOutcome:
    """Store and apply one notification with the caller's ``policy`` (see :func:`receive`)."""
    return receive(
        store,
        source=notification_source(channel),
        refused_kind="subscription:invalid",
        payload=body,
        plan=lambda: plan_notification(
            body,
            channel=channel,
            received_at=received_at,
            request_id=request_id,
            path=path,
            max_depth=max_depth,
            origin=origin,
        ),
        received_at=received_at,
        policy=policy,
        request_id=request_id,
        audit=audit,
    )
