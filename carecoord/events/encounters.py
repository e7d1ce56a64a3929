"""Encounter events: what an Encounter write means (admit, discharge ...) and its automation job.

Every intake path writes Encounters through a :class:`~carecoord.fhir.store.Writer` whose write
hook calls :func:`note_encounter_event` in the same transaction: the event kind is decided from
the status transition, ``period.end`` appearing, and a change of class or current location, and
one ``automation.encounter`` job is enqueued, keyed by encounter id + version so that a replayed
event (no new version) or a retried transaction enqueues nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

import orjson

from carecoord.fhir.store import StoredResource, WriteHook, Writer
from carecoord.jobs import enqueue

__all__ = [
    "AUTOMATION_ENCOUNTER",
    "EncounterEvent",
    "classify",
    "current_locations",
    "encounter_hook",
    "job_key",
    "note_encounter_event",
]

#: The job kind automation handlers register for (no handler exists yet: the jobs wait, ready).
AUTOMATION_ENCOUNTER: Final = "automation.encounter"

#: Statuses of an encounter under way (R4 encounter-status).
_ACTIVE: Final = frozenset({"arrived", "triaged", "in-progress", "onleave"})
_CANCELLED: Final = frozenset({"cancelled", "entered-in-error"})


class EncounterEvent(StrEnum):
    """What an Encounter write means for care coordination."""

    ADMIT = "admit"
    DISCHARGE = "discharge"
    TRANSFER = "transfer"
    UPDATE = "update"
    CANCEL = "cancel"


def _has_end(encounter: Mapping[str, Any] | None) -> bool:
    period = encounter.get("period") if encounter is not None else None
    return isinstance(period, dict) and bool(period.get("end"))


def _class_code(encounter: Mapping[str, Any]) -> tuple[Any, Any] | None:
    cls = encounter.get("class")
    if not isinstance(cls, dict) or not cls.get("code"):
        return None
    return cls.get("system"), cls.get("code")


def _location_key(entry: Mapping[str, Any]) -> str | None:
    location = entry.get("location")
    if not isinstance(location, dict):
        return None
    if location.get("reference"):
        return f"ref:{location['reference']}"
    identifier = location.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return f"id:{identifier.get('system', '')}|{identifier['value']}"
    if location.get("display"):
        return f"display:{location['display']}"
    return None


def current_locations(encounter: Mapping[str, Any]) -> frozenset[str]:
    """Where the patient is: the ``active`` location entries, else the last one without status."""
    entries = [e for e in encounter.get("location") or [] if isinstance(e, dict)]
    if any(e.get("status") for e in entries):
        chosen = [e for e in entries if e.get("status") == "active"]
    else:
        chosen = entries[-1:]
    return frozenset(k for k in (_location_key(e) for e in chosen) if k is not None)


def classify(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    previous_status: str | None,
) -> EncounterEvent:
    """The event an Encounter version means, given the one before it (None: first seen).

    - cancel: the status becomes ``cancelled``/``entered-in-error``, or a finished encounter is
      under way again (discharge cancelled);
    - discharge: the status becomes ``finished``, or ``period.end`` appears while under way;
    - admit: under way now and not before (first seen, planned, or no status);
    - transfer: under way before and now, with another current location or another class;
    - update: anything else.
    """
    status = current.get("status")
    if status in _CANCELLED:
        return EncounterEvent.CANCEL if previous_status not in _CANCELLED else EncounterEvent.UPDATE
    if previous_status == "finished" and status in _ACTIVE:
        return EncounterEvent.CANCEL
    if status == "finished" and previous_status != "finished":
        return EncounterEvent.DISCHARGE
    if status in _ACTIVE and _has_end(current) and not _has_end(previous):
        return EncounterEvent.DISCHARGE
    if status in _ACTIVE and previous_status not in _ACTIVE:
        return EncounterEvent.ADMIT
    if status in _ACTIVE and previous is not None:
        before, now = current_locations(previous), current_locations(current)
        if before and now and before != now:
            return EncounterEvent.TRANSFER
        old_class, new_class = _class_code(previous), _class_code(current)
        if old_class and new_class and old_class != new_class:
            return EncounterEvent.TRANSFER
    return EncounterEvent.UPDATE


def job_key(encounter: StoredResource) -> str:
    """The dedup key of an Encounter version's automation job."""
    return f"Encounter/{encounter.res_id}/_history/{encounter.version_id}"


def note_encounter_event(
    w: Writer,
    *,
    source: str,
    encounter: StoredResource,
    previous_status: str | None,
    request_id: str | None,
    hint: EncounterEvent | None = None,
) -> int | None:
    """Enqueue the automation job of a new Encounter version in ``w``'s transaction.

    ``hint`` is the event the sender declared (an ADT trigger event, a Da Vinci event code); it
    wins over the kind inferred from the data. Returns the job id, or None when this version's
    job exists already.
    """
    if encounter.res_type != "Encounter" or encounter.content is None:
        return None
    current = orjson.loads(encounter.content)
    if hint is not None:
        kind = hint
    else:
        kind = classify(w.previous_version(encounter), current, previous_status)
    status = current.get("status")
    payload: dict[str, Any] = {
        "encounter_id": encounter.res_id,
        "version": encounter.version_id,
        "event": kind.value,
        "source": source,
        "status": status if isinstance(status, str) else None,
        "previous_status": previous_status,
    }
    if request_id:
        payload["request_id"] = request_id
    return enqueue(
        w.conn,
        kind=AUTOMATION_ENCOUNTER,
        payload=payload,
        key=job_key(encounter),
        clock=w.store.clock,
    )


def _meta_source(stored: StoredResource) -> str | None:
    body = orjson.loads(stored.content) if stored.content is not None else None
    meta = body.get("meta") if isinstance(body, dict) else None
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, str) else None


def encounter_hook(
    *,
    source: str,
    request_id: str | None = None,
    hint: EncounterEvent | None = None,
    hints: Mapping[str, EncounterEvent] | None = None,
    source_hints: Mapping[str, EncounterEvent] | None = None,
    also: WriteHook | None = None,
) -> WriteHook:
    """A write hook that notes the Encounter events of one intake from ``source``.

    ``hint`` is the declared event of every Encounter written, ``hints`` that of some by id and
    ``source_hints`` by ``meta.source`` (EHR resources, whose local id the identity map picks:
    an adopted one keeps the id it had); ``also`` runs first for every write (e.g. auditing).
    """
    declared = dict(hints or {})
    by_source = dict(source_hints or {})

    def declared_for(stored: StoredResource) -> EncounterEvent | None:
        found = declared.get(stored.res_id)
        if found is None and by_source:
            found = by_source.get(_meta_source(stored) or "")
        return found if found is not None else hint

    def hook(w: Writer, res_type: str, stored: StoredResource, previous: str | None) -> None:
        if also is not None:
            also(w, res_type, stored, previous)
        if res_type == "Encounter":
            note_encounter_event(
                w,
                source=source,
                encounter=stored,
                previous_status=previous,
                request_id=request_id,
                hint=declared_for(stored),
            )

    return hook
