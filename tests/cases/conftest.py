"""Fixtures of the case-management tests: an app on a settable clock, staff and referrals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.settings import Settings
from carecoord.transitions.codes import CARE_ROLE_SYSTEM
from tests.fhir.factories import patient

REFERRAL_CODE = {
    "system": "https://carecoord.org/fhir/CodeSystem/case-management-service",
    "code": "case-management",
}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(
    settings: Settings, engine: Engine, auth_header: dict[str, str], clock: Clock
) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, clock=clock)
    with TestClient(app, base_url="http://testserver", headers=auth_header) as c:
        yield c


def put(api: TestClient, body: dict[str, Any]) -> str:
    r = api.post(f"/fhir/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@dataclass
class World:
    org: str
    nurses: list[str]
    social_workers: list[str]
    referrer: str
    api: TestClient

    def client(self, family: str = "Chalmers", **extra: Any) -> str:
        return "Patient/" + put(self.api, patient(family=family, **extra))

    def referral(self, patient_ref: str, *, model: str | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "code": {"coding": [REFERRAL_CODE]},
            "subject": {"reference": patient_ref},
            "requester": {"reference": self.referrer},
            "performer": [{"reference": self.org}],
        }
        if model:
            body["orderDetail"] = [
                {
                    "coding": [
                        {
                            "system": "https://carecoord.org/fhir/CodeSystem/case-model",
                            "code": model,
                        }
                    ]
                }
            ]
        body.update(extra)
        return "ServiceRequest/" + put(self.api, body)

    def open_case(self, model: str = "brokerage", **extra: Any) -> dict[str, Any]:
        ref = self.referral(self.client(), model=model)
        r = self.api.post("/api/cases", json={"referral": ref, **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())


def staff(api: TestClient, org: str, family: str, role: str) -> str:
    pid = put(api, {"resourceType": "Practitioner", "name": [{"family": family}]})
    put(
        api,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{pid}"},
            "organization": {"reference": org},
            "code": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": role}]}],
        },
    )
    return f"Practitioner/{pid}"


@pytest.fixture
def world(api: TestClient) -> World:
    org = "Organization/" + put(api, {"resourceType": "Organization", "name": "Care Agency"})
    nurses = [staff(api, org, f"Nurse{i}", "nurse-case-manager") for i in range(2)]
    social = [staff(api, org, "Social0", "social-worker")]
    referrer = "Practitioner/" + put(
        api, {"resourceType": "Practitioner", "name": [{"family": "Referrer"}]}
    )
    return World(org, nurses, social, referrer, api)
