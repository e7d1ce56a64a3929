"""Fixtures for transition services: an app, a worker on the default registry, a Synthea patient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.fhir.store import FhirStore
from carecoord.importer import import_paths
from carecoord.jobs import Worker, default_registry
from carecoord.settings import Settings
from carecoord.transitions.codes import CARE_ROLE_SYSTEM


class FakeClock:
    """A settable clock for the app's store and the worker."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 7, 2, 20, 0, tzinfo=UTC))


@pytest.fixture
def app_client(
    settings: Settings, engine: Engine, auth_header: dict[str, str], clock: FakeClock
) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, clock=clock)
    with TestClient(app, base_url="http://testserver", headers=auth_header) as c:
        yield c


@pytest.fixture
def run_jobs(engine: Engine, app_client: TestClient, clock: FakeClock) -> Callable[[], int]:
    """Run every due job (the app registers the handlers); returns how many ran."""
    worker = Worker(engine, default_registry, clock=clock)

    def run() -> int:
        ran = 0
        while worker.run_once():
            ran += 1
        return ran

    return run


@pytest.fixture
def synthea_patient(store: FhirStore, synthea_dir: Path) -> dict[str, Any]:
    """Patient 01 of the shared Synthea data, imported with its organisations."""
    import_paths(store, [synthea_dir / "organizations.json", synthea_dir / "patient-01.json"])
    page = store.search(store.parse("Patient", [("_count", "1")]))
    return dict(orjson.loads(page.matches[0][2]))


def role(practitioner: str, organization: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": practitioner},
        "organization": {"reference": organization},
        "code": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": code}]}],
    }


@pytest.fixture
def staff(store: FhirStore) -> dict[str, str]:
    """A hospital with two nurse case managers, a pharmacist and a supervisor."""
    org = store.create("Organization", {"resourceType": "Organization", "name": "General"})
    hospital = f"Organization/{org.resource.res_id}"
    people: dict[str, str] = {"hospital": hospital}
    for name, code in (
        ("nurse-a", "nurse-case-manager"),
        ("nurse-b", "nurse-case-manager"),
        ("pharmacist", "pharmacist"),
        ("supervisor", "supervisor"),
    ):
        body = {"resourceType": "Practitioner", "name": [{"family": name}]}
        ref = f"Practitioner/{store.create('Practitioner', body).resource.res_id}"
        store.create("PractitionerRole", role(ref, hospital, code))
        people[name] = ref
    return people
