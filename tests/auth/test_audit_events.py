"""AuditEvents as built for REST interactions, and their directly built index rows."""

from __future__ import annotations

from typing import Any

import pytest

from carecoord.audit.events import audit_event, audit_index, patients_in
from carecoord.audit.rest import RestAudit
from carecoord.fhir.access import Agent
from carecoord.fhir.searchparams import default_registry, extract_index
from carecoord.fhir.validation import validate_resource
from carecoord.fhir.values import date_range, format_instant

EVENTS = [
    audit_event(
        interaction="read",
        agent=Agent("user", "Practitioner/n1", connection="epic-prod"),
        recorded="2026-11-23T10:00:00.123Z",
        request_id="req-1",
        patients=["p1", "p2"],
        targets=["Patient/p1", "Observation/o1"],
        query="Observation?subject=Patient/p1",
    ),
    audit_event(
        interaction="create",
        agent=Agent("client", "engine-1"),
        recorded="2026-11-23T10:00:00.000Z",
        request_id=None,
        targets=["Practitioner/x"],
    ),
    audit_event(
        interaction="read",
        agent=Agent("user", "Patient/p9"),
        recorded="2026-11-23T10:00:00.000+02:00",
        request_id="r",
        patients=["p9"],
        outcome="4",
        outcome_desc="refused",
    ),
    audit_event(
        interaction="search-type",
        agent=Agent("client", "engine-1"),
        recorded=format_instant(1_796_531_749_993_391),  # as the service records them
        request_id="r2",
        patients=["p3"],
        query="Patient?_id=p3",
    ),
]


def _sorted(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    return {k: sorted(v, key=repr) for k, v in rows.items()}


@pytest.mark.parametrize("event", EVENTS)
def test_direct_index_equals_generic_extraction(event: dict[str, Any]) -> None:
    generic = extract_index("AuditEvent", event, default_registry())
    assert _sorted(audit_index(event)) == _sorted(generic)


@pytest.mark.parametrize("event", EVENTS)
def test_events_are_valid_r4_audit_events(event: dict[str, Any]) -> None:
    validate_resource(event, expected_type="AuditEvent")


def test_patients_in_finds_referenced_patients() -> None:
    body = b'{"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p2"}]}'
    assert patients_in("Observation", "o", body) == {"p1", "p2"}
    assert patients_in("Patient", "p3", b"{}") == {"p3"}


def test_reads_are_recorded_at_the_instant_the_store_writes() -> None:
    """The REST audit's ``recorded`` is a microsecond UTC instant in the store's own format."""
    recorded = RestAudit._now()
    low, high = date_range(recorded)
    assert low == high and format_instant(low) == recorded
