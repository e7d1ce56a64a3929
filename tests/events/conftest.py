"""Fixtures of the event intake tests: an ADT intake on the test store with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carecoord.events import AdtIntake
from carecoord.fhir.store import FhirStore
from integrations.hl7v2 import FeedConfig

SOURCE = "mllp:test"
NOW = datetime(2024, 1, 18, 20, 0, tzinfo=UTC)


@pytest.fixture
def feed_config() -> FeedConfig:
    return FeedConfig(
        default_timezone="America/Chicago",
        patient_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.1"},
        visit_identifier_systems={"GENHOSP": "urn:oid:2.16.840.1.113883.3.4711.1.2"},
    )


@pytest.fixture
def intake(store: FhirStore, feed_config: FeedConfig) -> AdtIntake:
    return AdtIntake(store, source=SOURCE, config=feed_config, clock=lambda: NOW)
