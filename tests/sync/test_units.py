"""Pure parts of sync: local ids and reference rewriting, populations, settings, quirks, breaker."""

from __future__ import annotations

from typing import Any

import pytest

from carecoord.smart.connections import EhrConnection
from carecoord.sync.breaker import CircuitBreaker, CircuitSnapshot, CircuitState
from carecoord.sync.config import SyncConfig, parse_population
from carecoord.sync.errors import CircuitOpen, SyncConfigError
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, ReferenceMapper, local_id
from carecoord.sync.population import group_members
from carecoord.sync.quirks import SyncQuirks, quirks_for

ISS = "https://ehr.example.org/fhir"


def test_local_ids_are_stable_valid_and_distinct() -> None:
    first = local_id("epic", "Patient", "123")
    assert first == local_id("epic", "Patient", "123")
    assert len(first) == 32 and first.isalnum()
    assert first != local_id("cerner", "Patient", "123")
    assert first != local_id("epic", "Encounter", "123")
    assert "123" not in first


def test_references_are_rewritten_to_local_ids() -> None:
    mapper = ReferenceMapper("epic", ISS)
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": "e1",
        "meta": {
            "versionId": "7",
            "lastUpdated": "2030-01-01T00:00:00Z",
            "source": "#ehr",
            "profile": ["http://example.org/p"],
            "tag": [{"system": SOURCE_TAG_SYSTEM, "code": "forged"}, {"code": "keep"}],
        },
        "subject": {"reference": "Patient/p1", "display": "kept"},
        "contained": [{"resourceType": "Location", "id": "here"}],
        "location": [{"location": {"reference": "#here"}}],
        "basedOn": [{"reference": "ServiceRequest/s1/_history/3"}],
        "partOf": {"reference": f"{ISS}/Encounter/e0"},
        "account": [{"reference": "https://other.example.net/fhir/Account/a1"}],
        "episodeOfCare": [{"reference": "urn:uuid:7f9c7bb6-5d3e-4c1f-9a2e-2b0f0f0f0f0f"}],
        "appointment": [{"reference": "Appointment?identifier=x|1"}],
        "extension": [{"url": "x", "valueReference": {"reference": "Practitioner/dr1"}}],
    }
    referred = mapper.localize(resource)
    assert resource["id"] == local_id("epic", "Encounter", "e1")
    assert resource["subject"] == {"reference": f"Patient/{local_id('epic', 'Patient', 'p1')}",
                                   "display": "kept"}  # fmt: skip
    assert resource["location"][0]["location"]["reference"] == "#here"
    assert resource["basedOn"][0]["reference"].endswith(local_id("epic", "ServiceRequest", "s1"))
    assert resource["partOf"]["reference"] == f"Encounter/{local_id('epic', 'Encounter', 'e0')}"
    assert resource["account"][0]["reference"] == "https://other.example.net/fhir/Account/a1"
    assert resource["episodeOfCare"][0]["reference"].startswith("urn:uuid:")
    assert resource["appointment"][0]["reference"] == "Appointment?identifier=x|1"
    assert resource["extension"][0]["valueReference"]["reference"].startswith("Practitioner/")
    assert referred == {
        ("Patient", "p1"),
        ("ServiceRequest", "s1"),
        ("Encounter", "e0"),
        ("Practitioner", "dr1"),
    }
    meta = resource["meta"]
    assert "versionId" not in meta and "lastUpdated" not in meta
    assert meta["source"] == f"{ISS}/Encounter/e1"
    assert meta["profile"] == ["http://example.org/p"]
    assert meta["tag"] == [{"code": "keep"}, {"system": SOURCE_TAG_SYSTEM, "code": "epic"}]


@pytest.mark.parametrize(
    "reference",
    ["Patient", "Patient/", "Unknown/1", "Patient/has space", "Patient/1/2", "Patient/1/_history"],
)
def test_odd_references_are_left_alone(reference: str) -> None:
    assert ReferenceMapper("epic", ISS).parse(reference) is None


def test_group_members_are_active_patients() -> None:
    group = {
        "resourceType": "Group",
        "member": [
            {"entity": {"reference": "Patient/b"}},
            {"entity": {"reference": f"{ISS}/Patient/a"}},
            {"entity": {"reference": "Patient/c"}, "inactive": True},
            {"entity": {"reference": "Device/d"}},
            {"entity": {"display": "no reference"}},
        ],
    }
    assert group_members(group, ReferenceMapper("epic", ISS)) == ["a", "b"]


def test_population_specs() -> None:
    assert parse_population("open-cases").kind == "open-cases"
    group = parse_population("group:g-1")
    assert (group.kind, group.group, group.key) == ("group", "g-1", "group:g-1")
    listed = parse_population("patients:b, a,a")
    assert listed.patients == ("a", "b") and listed.key.startswith("patients:")
    assert parse_population("patients:a,b").key == listed.key  # order and repeats do not matter
    for bad in ("cohort:x", "group:", "patients:a,b c", "group:" + "x" * 65):
        with pytest.raises(SyncConfigError):
            parse_population(bad)


def test_sync_config_defaults_overrides_and_errors() -> None:
    config = SyncConfig(
        {"overlap_seconds": 60},
        {"epic": {"max_in_flight": 2, "populations": [{"name": "pilot", "group": "g1"}]}},
        source="sync.toml",
    )
    assert config.default.overlap_seconds == 60 and config.default.max_in_flight == 5
    epic = config.for_connection("epic")
    assert epic.overlap_seconds == 60 and epic.max_in_flight == 2
    assert [p.key for p in epic.default_populations()] == ["pilot"]
    assert [p.key for p in config.for_connection("other").default_populations()] == ["open-cases"]
    problems = [
        ({"types": ["Patient", "Medication"]}, "defaults.types"),
        ({"types": ["Encounter"]}, "must include Patient"),
        ({"max_in_flight": 0}, "defaults.max_in_flight"),
        ({"populations": [{"name": "x", "group": "g", "open_cases": True}]}, "exactly one"),
        ({"surprise": 1}, "defaults.surprise"),
    ]
    for values, message in problems:
        with pytest.raises(SyncConfigError, match=message):
            SyncConfig(values, source="sync.toml")


def test_quirks_adjust_searches() -> None:
    quirks = SyncQuirks(
        max_page_size=50,
        no_last_updated=frozenset({"Coverage"}),
        extra_params={"Observation": (("category", "laboratory"), ("status", "final"))},
    )
    assert quirks.page_size(100) == 50 and quirks.page_size(20) == 20
    params = [("patient", "1"), ("_lastUpdated", "gt2030-01-01T00:00:00Z"), ("category", "x")]
    assert quirks.params("Coverage", params) == [("patient", "1"), ("category", "x")]
    assert quirks.params("Observation", params) == [*params, ("status", "final")]
    connection = EhrConnection(name="epic", iss=ISS, client_id="cc", vendor="epic")
    assert quirks_for(connection) == SyncQuirks()  # no vendor defines any yet


def test_breaker_snapshot_round_trip() -> None:
    now = [1000.0]
    breaker = CircuitBreaker("x", failures=2, cooldown=30, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.failure()
    assert breaker.state is CircuitState.OPEN
    saved = breaker.snapshot()
    other = CircuitBreaker("x", failures=2, cooldown=30, clock=lambda: now[0])
    other.restore(saved)
    with pytest.raises(CircuitOpen):
        other.before()
    now[0] += 31
    other.before()  # the probe
    with pytest.raises(CircuitOpen):
        other.before()  # only one probe at a time
    other.success()
    assert other.snapshot() == CircuitSnapshot(CircuitState.CLOSED, 0, None)
