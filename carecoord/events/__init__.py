"""Inbound events: every event from outside is stored before it is acknowledged, once per key.

Intake paths record each event with :func:`record_event` in the same transaction as the resources
it produces and the jobs it enqueues; a replayed event (same source and key) changes nothing.
Malformed events are kept as ``rejected`` (their content) or ``error`` (our processing) with the
raw payload, for review. The paths: HL7 v2 ADT over MLLP (:mod:`.adt`), FHIR Subscription
notifications (:mod:`.notifications`, channels in :mod:`.channels`), Da Vinci Unsolicited
Notifications (:mod:`.davinci`), and Encounters written through the FHIR API (the store's write
hook, :mod:`.runtime`). Every new Encounter version becomes one ``automation.encounter`` job
(:mod:`.encounters`).

Errors::

    EventError                  base of event intake
    └── EventNotStored          not even a rejected record could be stored: send no ACK (MLLP)
                                or answer 503 (HTTP), so that the sender sends again

HTTP intake refuses with the FHIR edge's errors (:mod:`carecoord.fhir.errors`), rendered as
OperationOutcome: InvalidRequest 400 (malformed or invalid payload), Unauthorized 401, Forbidden
403 (scope, or a client the channel does not allow), NotFound 404 (a channel name that cannot
be one), BusinessRule 422 (a message event not taken, no Encounter in focus), Unavailable 503
(nothing stored: send again). 4xx refusals after authentication are kept as rejected events.
A bad channel file raises :class:`carecoord.settings.ConfigError` naming file and field. HL7 v2
feed errors (which ACK a message earns) are in :mod:`integrations.hl7v2`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from carecoord.events.errors import EventError, EventNotStored
from carecoord.events.records import (
    EventStatus,
    InboundEvent,
    dedup_key,
    find_event,
    get_event,
    list_events,
    payload_key,
    record_event,
)

if TYPE_CHECKING:
    from carecoord.events.adt import AdtIntake, IntakeResult, write_adt
    from carecoord.events.encounters import (
        AUTOMATION_ENCOUNTER,
        EncounterEvent,
        classify,
        note_encounter_event,
    )
    from carecoord.events.intake import SYNC_FETCH, IntakeOutcome

__all__ = [
    "AUTOMATION_ENCOUNTER",
    "SYNC_FETCH",
    "AdtIntake",
    "EncounterEvent",
    "EventError",
    "EventNotStored",
    "EventStatus",
    "InboundEvent",
    "IntakeOutcome",
    "IntakeResult",
    "classify",
    "dedup_key",
    "find_event",
    "get_event",
    "list_events",
    "note_encounter_event",
    "payload_key",
    "record_event",
    "write_adt",
]

_LAZY = {
    "AdtIntake": "adt",
    "IntakeResult": "adt",
    "write_adt": "adt",
    "AUTOMATION_ENCOUNTER": "encounters",
    "EncounterEvent": "encounters",
    "classify": "encounters",
    "note_encounter_event": "encounters",
    "SYNC_FETCH": "intake",
    "IntakeOutcome": "intake",
}


def __getattr__(name: str) -> Any:
    # These load the store and the FHIR models; the CLI imports this package without needing them.
    if name in _LAZY:
        module = importlib.import_module(f"carecoord.events.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
