"""Shared intake of FHIR events: the event, what it carries and its jobs, in one transaction.

An intake path (subscription notification, Da Vinci message) parses its payload into an
:class:`EventPlan` and hands it to :func:`apply_event`. Inside one write transaction with the
caller's access policy: a replay (same source and key, already processed) returns at once; the
carried resources are upserted by id (an unchanged one makes no version) — or, when the plan
names the EHR connection they came from (``origin``), through the sync identity map
(:func:`~carecoord.sync.upsert.upsert_from_source`, ADR 0021: a Patient or Encounter new to the
map adopts the local one an ADT message created with its identifier), with ``sync.fetch`` jobs
for the Patients and Encounters they refer to that are not known yet — each Encounter write
notes its event (:mod:`carecoord.events.encounters`), each change is audited, ``sync.fetch`` jobs
are enqueued for resources only referenced, and the event is recorded. A payload refused for its
content is kept as a ``rejected`` event in its own transaction (:func:`reject`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

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
from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import FhirError, InvalidRequest, Issue, Unavailable
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.fhir.validation import validate_resource
from carecoord.jobs import enqueue
from carecoord.sync.handlers import enqueue_pull
from carecoord.sync.upsert import Origin, SourceItem, from_source, upsert_from_source

__all__ = [
    "FETCH_WHEN_REFERENCED",
    "SYNC_FETCH",
    "EventPlan",
    "Fetch",
    "Incoming",
    "IntakeAudit",
    "IntakeOutcome",
    "apply_event",
    "entry_error",
    "entry_id",
    "receive",
    "reject",
    "resolve_references",
    "source_items",
]

log = logging.getLogger(__name__)

#: The job kind of the sync engine that fetches one resource from an EHR connection.
SYNC_FETCH: Final = "sync.fetch"

#: Types fetched from the EHR as soon as a resource an event carries refers to one not known yet
#: (an Encounter's subject, its ``partOf``); the pull fetches the other referenced types.
FETCH_WHEN_REFERENCED: Final = frozenset({"Patient", "Encounter"})

#: Audits one change inside the intake's transaction: (writer, interaction, stored version).
IntakeAudit = Callable[[Writer, str, StoredResource], None]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A resource an event carries, validated, with the id it keeps and references rewritten."""

    res_type: str
    res_id: str
    resource: dict[str, Any] = field(repr=False)

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"


@dataclass(frozen=True, slots=True)
class Fetch:
    """A resource an event only references: the sync engine fetches it from ``connection``."""

    connection: str
    reference: str


@dataclass(frozen=True, slots=True)
class EventPlan:
    """What one event asks for, decided before any write."""

    source: str
    kind: str
    key: str
    payload: bytes = field(repr=False)
    received_at: datetime
    resources: tuple[Incoming, ...] = ()
    fetches: tuple[Fetch, ...] = ()
    hints: Mapping[str, EncounterEvent] = field(default_factory=dict)
    #: The EHR connection the carried resources came from: then they are stored through the
    #: sync identity map (``sourced``, local ids) instead of keeping the sender's ids.
    origin: Origin | None = None
    sourced: tuple[SourceItem, ...] = ()
    #: A notification that says only "something changed" (an R4 rest-hook without payload) at
    #: a configured connection: queue a pull of it (once per minute, whatever the burst).
    pull: bool = False


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """What became of an event: its record, whether it was a replay, what it produced."""

    event_id: int
    kind: str
    replayed: bool
    produced: tuple[str, ...] = ()
    jobs: tuple[int, ...] = ()  # the sync.fetch (and sync.pull) jobs it enqueued


def entry_error(index: int, exc: FhirError) -> FhirError:
    """``exc`` about ``Bundle.entry[index]``: messages and FHIRPath expressions prefixed."""
    issues = [
        Issue(
            f"Bundle.entry[{index}]: {issue.diagnostics}",
            issue.code,
            issue.severity,
            tuple(
                f"Bundle.entry[{index}].resource.{e.split('.', 1)[-1]}" for e in issue.expression
            ),
        )
        for issue in exc.issues
    ]
    err = type(exc)(f"Bundle.entry[{index}]: {exc.message}", issues)
    err.headers = exc.headers
    return err


def entry_id(entry: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    """The id a carried resource keeps: its own, else the one its ``fullUrl`` names."""
    own = resource.get("id")
    if isinstance(own, str) and own:
        return own
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str):
        if full_url.startswith("urn:uuid:"):
            return full_url.removeprefix("urn:uuid:")
        parts = full_url.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == resource.get("resourceType") and parts[-1]:
            return parts[-1]
    raise InvalidRequest("The entry's resource has no id and its fullUrl names none")


def _relative(reference: str) -> str | None:
    """``Type/id`` at the end of a reference (absolute or relative), if it has one."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] in RESOURCE_TYPES and parts[-1]:
        return f"{parts[-2]}/{parts[-1]}"
    return None


def resolve_references(value: Any, urls: Mapping[str, str]) -> Any:
    """A copy of ``value`` whose references to entries of the Bundle (by ``fullUrl``) read
    ``Type/id``; a ``urn:`` reference to no entry is a 400."""
    if isinstance(value, dict):
        out = {k: resolve_references(v, urls) for k, v in value.items()}
        ref = value.get("reference")
        if isinstance(ref, str):
            if ref in urls:
                out["reference"] = urls[ref]
            elif ref.startswith(("urn:uuid:", "urn:oid:")):
                raise InvalidRequest("A urn: reference points to no entry of the Bundle")
        return out
    if isinstance(value, list):
        return [resolve_references(v, urls) for v in value]
    return value


def carried(entries: Iterable[tuple[Mapping[str, Any], Incoming]]) -> dict[str, str]:
    """``fullUrl`` (and ``Type/id``) → ``Type/id`` of the resources a Bundle carries."""
    urls: dict[str, str] = {}
    for entry, item in entries:
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            urls[full_url] = item.reference
        urls[item.reference] = item.reference
    return urls


def is_carried(reference: str, urls: Mapping[str, str]) -> bool:
    """Whether a reference points at a resource the Bundle carries."""
    if reference in urls:
        return True
    relative = _relative(reference)
    return relative is not None and relative in urls


def incoming(
    index: int, entry: Mapping[str, Any], resource: Any, *, expected_type: str | None = None
) -> Incoming:
    """Validate a carried resource and give it its id (errors name ``Bundle.entry[index]``)."""
    try:
        res_type, checked = validate_resource(resource, expected_type=expected_type)
        res_id = entry_id(entry, checked)
    except FhirError as exc:
        raise entry_error(index, exc) from None
    return Incoming(res_type, res_id, {**checked, "id": res_id})


def source_items(origin: Origin, resources: Iterable[Incoming]) -> tuple[SourceItem, ...]:
    """The carried resources in their local form (ids and references through the identity
    map of ``origin``); their references between each other must read ``Type/id`` already."""
    mapper = origin.mapper()
    return tuple(from_source(mapper, item.resource) for item in resources)


def _source_hints(plan: EventPlan) -> dict[str, EncounterEvent]:
    """The plan's hints for EHR Encounters by ``meta.source``: ``hints`` name the id derived
    from the EHR's id, and an Encounter that adopts a local one is stored under that one's id."""
    found: dict[str, EncounterEvent] = {}
    for item in plan.sourced:
        hint = plan.hints.get(item.local_id)
        source = (item.resource.get("meta") or {}).get("source")
        if hint is not None and isinstance(source, str):
            found[source] = hint
    return found


def _interaction(stored: StoredResource) -> str:
    return "create" if stored.version_id == 1 else "update"


def apply_event(
    store: FhirStore,
    plan: EventPlan,
    *,
    policy: AccessPolicy | None = None,
    request_id: str | None = None,
    audit: IntakeAudit | None = None,
) -> IntakeOutcome:
    """Apply an event in one write transaction with ``policy`` (see the module docstring)."""

    def audited(w: Writer, _: str, stored: StoredResource, __: str | None) -> None:
        if audit is not None:
            audit(w, _interaction(stored), stored)

    def work(w: Writer) -> IntakeOutcome:
        existing = find_event(w.conn, source=plan.source, key=plan.key)
        if existing is not None and existing.status is EventStatus.PROCESSED:
            return IntakeOutcome(existing.id, existing.kind, True, existing.produced)
        fetch_jobs: list[int] = []
        w.on_written = encounter_hook(
            source=plan.source,
            request_id=request_id,
            hints=plan.hints,
            source_hints=_source_hints(plan),
            also=audited,
        )
        produced: list[str] = []
        fetches = list(plan.fetches)
        if plan.origin is not None:
            connection = plan.origin.connection
            result = upsert_from_source(w, connection, plan.sourced, now=w.now)
            produced.extend(f"{i.res_type}/{result.stored_as[i.key]}" for i in plan.sourced)
            wanted = {fetch.reference for fetch in fetches}
            for res_type, source_id in sorted(result.new_references):
                reference = f"{res_type}/{source_id}"
                if res_type in FETCH_WHEN_REFERENCED and reference not in wanted:
                    fetches.append(Fetch(connection, reference))
        else:
            w.lock_rows({(item.res_type, item.res_id) for item in plan.resources})
            for item in plan.resources:
                w.update(item.res_type, item.res_id, item.resource)
                produced.append(item.reference)
        if plan.pull and plan.origin is not None:
            slot = plan.received_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            job = enqueue_pull(w.conn, connection=plan.origin.connection, slot=slot)
            if job is not None:
                fetch_jobs.append(job)
        for fetch in fetches:
            job = enqueue(
                w.conn,
                kind=SYNC_FETCH,
                payload={"connection": fetch.connection, "reference": fetch.reference},
                key=dedup_key(plan.source, plan.key, fetch.reference),
                connection=fetch.connection[:64],
                clock=w.store.clock,
            )
            if job is not None:
                fetch_jobs.append(job)
        event_id, _ = record_event(
            w.conn,
            source=plan.source,
            kind=plan.kind,
            key=plan.key,
            payload=plan.payload,
            status=EventStatus.PROCESSED,
            produced=produced,
            received_at=plan.received_at,
        )
        return IntakeOutcome(event_id, plan.kind, False, tuple(produced), tuple(fetch_jobs))

    return store.write(work, policy=policy)


def reject(
    store: FhirStore,
    *,
    source: str,
    kind: str,
    key: str | None,
    payload: bytes,
    error: FhirError,
    received_at: datetime,
) -> int:
    """Keep a refused event as ``rejected`` (own transaction); raise EventNotStored if it fails."""
    event_key = key or payload_key(payload)
    try:
        event_id, _ = run_write(
            store.engine,
            lambda conn: record_event(
                conn,
                source=source,
                kind=kind,
                key=event_key,
                payload=payload,
                status=EventStatus.REJECTED,
                error=f"{error.status} {error.message}",
                received_at=received_at,
            ),
            retries=store.retries,
        )
    except Exception as exc:
        log.error("%s event could not be stored as rejected (%s)", kind, type(exc).__name__)
        raise EventNotStored("The event could not be stored") from None
    log.warning("%s stored as rejected event %s: %s", kind, event_id, error.status)
    return event_id


def receive(
    store: FhirStore,
    *,
    source: str,
    refused_kind: str,
    payload: bytes,
    plan: Callable[[], EventPlan],
    received_at: datetime,
    policy: AccessPolicy | None = None,
    request_id: str | None = None,
    audit: IntakeAudit | None = None,
    key: Callable[[], str | None] = lambda: None,
) -> IntakeOutcome:
    """Plan and apply one event; a refusal (4xx) is kept as rejected and raised again.

    ``refused_kind`` and ``key`` are recorded for a payload that could not even be planned
    (``key`` None: the payload's hash).
    Anything unexpected stores nothing and becomes a 503, so that the sender sends it again.
    """
    try:
        planned = plan()
    except FhirError as exc:
        if exc.status >= 500:
            raise
        reject(
            store,
            source=source,
            kind=refused_kind,
            key=key(),
            payload=payload,
            error=exc,
            received_at=received_at,
        )
        raise
    try:
        outcome = apply_event(store, planned, policy=policy, request_id=request_id, audit=audit)
    except FhirError as exc:
        if exc.status >= 500:
            raise
        reject(
            store,
            source=planned.source,
            kind=planned.kind,
            key=planned.key,
            payload=payload,
            error=exc,
            received_at=received_at,
        )
        raise
    except EventNotStored:
        raise
    except Exception as exc:
        log.error("%s event not stored: %s", planned.kind, type(exc).__name__)
        raise Unavailable("The event could not be stored; send it again") from None
    if outcome.replayed:
        log.info("%s event %s replayed: nothing changed", outcome.kind, outcome.event_id)
    else:
        log.info(
            "%s stored as event %s (%d resources, %d fetch jobs)",
            outcome.kind,
            outcome.event_id,
            len(outcome.produced),
            len(outcome.jobs),
        )
    return outcome
