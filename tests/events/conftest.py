"""Fixtures of the event intake tests: an ADT intake and the app with event intake, fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.events import AdtIntake
from carecoord.events.runtime import install
from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
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


@pytest.fixture
def events_app(settings: Settings, engine: Engine) -> FastAPI:
    """The app with event intake installed (idempotent when create_app installs it too)."""
    app = create_app(settings, engine=engine, clock=lambda: NOW)
    install(app, settings, engine)
    return app


@pytest.fixture
def api(events_app: FastAPI, auth_header: dict[str, str]) -> Iterator[TestClient]:
    """The events app with a ``system/*.cruds`` client's token on every request."""
    with TestClient(events_app, base_url="http://testserver", headers=auth_header) as c:
        yield c


@pytest.fixture
def anonymous_api(events_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(events_app, base_url="http://testserver") as c:
        yield c
