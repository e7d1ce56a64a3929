"""Inbound events: every event from outside is stored before it is acknowledged, once per key.

Intake paths (HL7 v2 ADT over MLLP here; Da Vinci notifications, subscriptions and FHIR writes
later) record each event with :func:`record_event` in the same transaction as the resources it
produces; a replayed event (same source and key) changes nothing. Malformed events are kept as
``rejected`` (their content) or ``error`` (our processing) with the raw payload, for review.

Errors::

    EventError                  base of event intake
    └── EventNotStored          not even a rejected record could be stored: send no ACK

HL7 v2 feed errors (which ACK a message earns) are in :mod:`integrations.hl7v2`.
"""

from __future__ import annotations

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

__all__ = [
    "AdtIntake",
    "EventError",
    "EventNotStored",
    "EventStatus",
    "InboundEvent",
    "IntakeResult",
    "dedup_key",
    "find_event",
    "get_event",
    "list_events",
    "payload_key",
    "record_event",
    "write_adt",
]

_LAZY = {"AdtIntake", "IntakeResult", "write_adt"}


def __getattr__(name: str) -> Any:
    # The ADT intake loads the FHIR models; the CLI imports this package without needing them.
    if name in _LAZY:
        from carecoord.events import adt

        return getattr(adt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
