"""The screens over the real app and database: what a page shows, who may see it, what a button
does, and the protections around them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from carecoord.app import create_app
from carecoord.fhir.store import FhirStore, Writer
from carecoord.settings import Settings
from carecoord.smart.sessions import SESSION_COOKIE, SessionStore
from carecoord.smart.tokens import TokenResponse
from carecoord.transitions.codes import (
    CARE_ROLE_SYSTEM,
    CAREPLAN_CATEGORY_SYSTEM,
    CAREPLAN_IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    TRANSITION_OF_CARE,
)
from carecoord.transitions.risk.resources import (
    RISK_BAND_SYSTEM,
    RISK_METHOD_SYSTEM,
    RISK_SCORE_EXTENSION,
)
from tests.fhir import factories

NOW = datetime(2025, 7, 3, 14, 0, tzinfo=UTC)  # Thursday; discharge on Wed 2025-07-02
NURSE = "Practitioner/n1"


def _put(store: FhirStore, body: dict[str, Any]) -> None:
    store.update(body["resourceType"], body["id"], body)


def _task(tid: str, patient: str, code: str, status: str, due: str, owner: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": tid,
        "status": status,
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code}]},
        "for": {"reference": f"Patient/{patient}"},
        "owner": {"reference": owner},
        "performerType": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": "nurse-case-manager"}]}],
        "restriction": {"period": {"end": due}},
    }


def _risk(patient: str, band: str, score: int) -> dict[str, Any]:
    return {
        "resourceType": "RiskAssessment",
        "id": f"risk-{patient}",
        "status": "final",
        "extension": [{"url": RISK_SCORE_EXTENSION, "valueInteger": score}],
        "method": {"coding": [{"system": RISK_METHOD_SYSTEM, "code": "LACE"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "occurrenceDateTime": "2025-07-02T15:00:00Z",
        "prediction": [
            {"qualitativeRisk": {"coding": [{"system": RISK_BAND_SYSTEM, "code": band}]}}
        ],
    }


def _seed(store: FhirStore) -> None:
    _put(
        store,
        {
            "resourceType": "Practitioner",
            "id": "n1",
            "active": True,
            "name": [{"family": "Okafor", "given": ["Kim"]}],
        },
    )
    _put(store, {**factories.patient("Quintavalle", "Zebedeea"), "id": "p1"})
    _put(store, {**factories.patient("Other", "Person"), "id": "p2"})
    _put(store, _task("t-contact", "p1", "tcm-interactive-contact", "ready", "2025-07-07", NURSE))
    _put(store, _task("t-visit", "p1", "tcm-face-to-face-visit", "requested", "2025-07-01", NURSE))
    _put(store, _task("t-other", "p2", "follow-up-call", "ready", "2025-07-03", NURSE))
    _put(
        store,
        {
            "resourceType": "CarePlan",
            "id": "cp1",
            "status": "active",
            "intent": "plan",
            "category": [
                {"coding": [{"system": CAREPLAN_CATEGORY_SYSTEM, "code": TRANSITION_OF_CARE}]}
            ],
            "identifier": [{"system": CAREPLAN_IDENTIFIER_SYSTEM, "value": "e1"}],
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2025-07-02T15:00:00Z"},
            "activity": [
                {"reference": {"reference": f"Task/{t}"}} for t in ("t-contact", "t-visit")
            ],
        },
    )
    _put(store, _risk("p1", "high", 12))
    _put(store, _risk("p2", "low", 3))


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Any:
    application = create_app(settings, engine=engine)
    application.state.web.clock = lambda: NOW
    _seed(application.state.store)
    return application


@pytest.fixture
def system(app: Any, auth_header: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", headers=auth_header) as c:
        yield c


@pytest.fixture
def browser(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def _session(app: Any, client: TestClient, *, patient: str | None, user: str = NURSE) -> None:
    token = TokenResponse(access_token="ehr-token", token_type="Bearer", patient=patient)
    raw, _ = SessionStore(app.state.smart).create(
        connection="test-ehr",
        token=token,
        scope="launch openid fhirUser user/*.cruds"
        if patient is None
        else "launch openid fhirUser patient/*.cruds",
        fhir_user=user,
    )
    client.cookies.set(SESSION_COOKIE, raw)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def _status(store: FhirStore, tid: str) -> str:
    return str(orjson.loads(store.read("Task", tid).content or b"{}")["status"])


def _row(html: str, task_id: str) -> str:
    found = re.search(rf'<tr id="task-{task_id}".*?</tr>', html, re.S)
    assert found, f"no row for {task_id}"
    return found.group(0)


def test_patient_page_shows_the_checklist_with_countdowns_and_risk(system: TestClient) -> None:
    page = system.get("/app/patients/p1")
    assert page.status_code == 200
    html = page.text
    assert "Zebedeea Quintavalle" in html
    contact = _row(html, "t-contact")
    assert "Kim Okafor" in contact and "Nurse case manager" in contact
    # Thursday Jul 3 to Monday Jul 7: Jul 4 is a holiday, then a weekend
    assert 'data-state="due-soon"' in contact and "1 business day left" in contact
    assert "Record contact attempt" in contact
    visit = _row(html, "t-visit")
    assert 'data-state="overdue"' in visit and "overdue by 2 business days" in visit
    assert 'class="score">12<' in html and "band-high" in html
    assert "t-other" not in html  # another patient's task


def test_a_page_view_is_audited_with_the_patient(app: Any, system: TestClient) -> None:
    store: FhirStore = app.state.store

    def events() -> int:
        found = store.search(store.parse("AuditEvent", [("patient", "Patient/p1")]))
        return len(found.matches)

    before = events()
    assert system.get("/app/patients/p1").status_code == 200
    assert events() > before


def test_a_patient_launch_session_sees_only_its_patient(app: Any, browser: TestClient) -> None:
    _session(app, browser, patient="p1")
    assert browser.get("/app/patients/p1").status_code == 200
    other = browser.get("/app/patients/p2")
    assert other.status_code == 404 and "Other" not in other.text
    landing = browser.get("/app/patient")
    assert landing.status_code == 200 and 'id="task-t-contact"' in landing.text


def test_buttons_need_the_sessions_csrf_token_and_our_origin(app: Any, browser: TestClient) -> None:
    _session(app, browser, patient="p1")
    token = _csrf(browser.get("/app/patients/p1").text)
    form = {"action": "accept", "next": "/app/patients/p1"}
    assert browser.post("/app/tasks/t-visit/action", data=form).status_code == 403
    forged = browser.post("/app/tasks/t-visit/action", data={**form, "csrf_token": "x" * 43})
    assert forged.status_code == 403
    elsewhere = browser.post(
        "/app/tasks/t-visit/action",
        data={**form, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    assert _status(app.state.store, "t-visit") == "requested"
    done = browser.post(
        "/app/tasks/t-visit/action", data={**form, "csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].endswith("done=accept")
    assert _status(app.state.store, "t-visit") == "accepted"


def test_a_stale_page_cannot_overwrite_a_newer_task(app: Any, system: TestClient) -> None:
    store: FhirStore = app.state.store
    version = store.read("Task", "t-visit").version_id
    form = {"action": "complete", "version": str(version), "next": "/app/patients/p1"}
    moved = system.post(
        "/app/tasks/t-visit/action", data={**form, "action": "accept"}, follow_redirects=False
    )
    assert moved.headers["location"].endswith("done=accept")
    stale = system.post("/app/tasks/t-visit/action", data=form, follow_redirects=False)
    assert stale.headers["location"].endswith("error=conflict")
    assert _status(store, "t-visit") == "accepted"
    shown = system.get(stale.headers["location"])
    assert "Someone changed this task" in shown.text


def test_hold_needs_a_reason_and_keeps_it(app: Any, system: TestClient) -> None:
    form = {"action": "hold", "next": "/app/patients/p1"}
    refused = system.post("/app/tasks/t-contact/action", data=form, follow_redirects=False)
    assert refused.headers["location"].endswith("error=reason")
    assert _status(app.state.store, "t-contact") == "ready"
    held = system.post(
        "/app/tasks/t-contact/action",
        data={**form, "reason": "In hospital"},
        follow_redirects=False,
    )
    assert held.headers["location"].endswith("done=hold")
    task = orjson.loads(app.state.store.read("Task", "t-contact").content or b"{}")
    assert (task["status"], task["statusReason"]["text"]) == ("on-hold", "In hospital")
    resumed = system.post(
        "/app/tasks/t-contact/action", data={**form, "action": "resume"}, follow_redirects=False
    )
    assert resumed.headers["location"].endswith("done=resume")
    assert _status(app.state.store, "t-contact") == "ready"


def test_worklist_filters_by_risk_band_and_due_date(system: TestClient) -> None:
    everyone = system.get("/app/worklist?scope=all").text
    assert 'data-patient="p1"' in everyone and 'data-patient="p2"' in everyone
    high = system.get("/app/worklist?scope=all&band=high").text
    assert 'data-patient="p1"' in high and 'data-patient="p2"' not in high
    today = system.get("/app/worklist?scope=all&due=today").text  # p2's call is due Jul 3
    assert 'data-patient="p2"' in today and 'data-patient="p1"' not in today
    overdue = system.get("/app/worklist?scope=all&due=overdue").text
    assert 'data-patient="p1"' in overdue and 'data-patient="p2"' not in overdue
    by_risk = system.get("/app/worklist?scope=all&sort=risk").text
    assert by_risk.index('data-patient="p1"') < by_risk.index('data-patient="p2"')


def test_dashboard_csv_gives_the_numbers_behind_the_chart(app: Any, system: TestClient) -> None:
    store: FhirStore = app.state.store
    for eid, start, end in (
        ("e1", "2025-06-01T10:00:00Z", "2025-06-03T10:00:00Z"),
        ("e2", "2025-06-20T10:00:00Z", "2025-06-22T10:00:00Z"),
    ):
        _put(store, {**factories.encounter("p1", start=start, end=end), "id": eid})
    answer = system.get("/app/dashboard/readmissions.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines() == [
        "month,discharges,readmissions_30d,rate_pct",
        "2025-06,2,1,50.0",
    ]
    page = system.get("/app/dashboard").text
    assert page.count('<svg class="chart"') == 5


def test_without_credentials_a_sign_in_page_with_strict_headers(browser: TestClient) -> None:
    answer = browser.get("/app/worklist")
    assert answer.status_code == 401 and "Not signed in" in answer.text
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "script-src 'self'" in csp
    assert answer.headers["cache-control"] == "no-store"
    assert "<script>" not in answer.text  # no inline script anywhere
    assert browser.get("/app/static/htmx.min.js").status_code == 200


def test_a_pcp_landing_without_a_patient_goes_to_the_inbox(app: Any, browser: TestClient) -> None:
    _put(
        app.state.store,
        {
            "resourceType": "Practitioner",
            "id": "pcp1",
            "active": True,
            "name": [{"family": "Marsh", "given": ["Helen"]}],
        },
    )
    _put(
        app.state.store,
        {
            "resourceType": "PractitionerRole",
            "id": "pcp1-role",
            "active": True,
            "practitioner": {"reference": "Practitioner/pcp1"},
            "code": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": "pcp"}]}],
        },
    )
    _put(
        app.state.store,
        _task(
            "t-pcp",
            "p2",
            "tcm-face-to-face-visit",
            "requested",
            "2025-07-09",
            "PractitionerRole/pcp1-role",
        ),
    )
    _session(app, browser, patient=None, user="Practitioner/pcp1")
    landing = browser.get("/app/patient", follow_redirects=False)
    assert landing.status_code == 303 and landing.headers["location"] == "/app/inbox"
    inbox = browser.get("/app/inbox").text
    incoming = inbox[inbox.index('id="incoming"') : inbox.index('id="working"')]
    assert 'id="task-t-pcp"' in incoming and "Person Other" in incoming


def test_a_launch_for_a_pulled_patient_lands_on_our_record_of_them(
    app: Any, browser: TestClient
) -> None:
    """The EHR names the patient by its own id; pulled, they live here under a derived id."""
    from carecoord.sync.identity import Pulled, local_id, save_pulled

    store: FhirStore = app.state.store
    ours = local_id("test-ehr", "Patient", "ehr-77")
    patient = orjson.loads(store.read("Patient", "p1").content or b"{}")

    def pulled(w: Writer) -> None:  # as a pull stores it: the resource and its identity
        w.update("Patient", ours, {**patient, "id": ours})
        save_pulled(w.conn, "test-ehr", [Pulled("Patient", "ehr-77", "1", None)], now=w.now)

    store.write(pulled)
    task = orjson.loads(store.read("Task", "t-contact").content or b"{}")
    store.update(
        "Task", "t-ours", {**task, "id": "t-ours", "for": {"reference": f"Patient/{ours}"}}
    )
    _session(app, browser, patient="ehr-77")
    landing = browser.get("/app/patient")
    assert landing.status_code == 200
    assert "The EHR could not be reached" in landing.text  # no EHR behind this test session
    assert 'id="task-t-ours"' in landing.text and 'id="task-t-contact"' not in landing.text
    assert browser.get(f"/fhir/Patient/{ours}").status_code == 200
    assert browser.get("/fhir/Patient/p1").status_code == 404


def test_a_launch_for_an_adopted_patient_lands_on_the_adopted_record(
    app: Any, browser: TestClient
) -> None:
    """A patient first created by ADT and then adopted by the pull keeps its local id."""
    from carecoord.sync.identity import Pulled, save_pulled

    store: FhirStore = app.state.store
    store.write(
        lambda w: save_pulled(
            w.conn, "test-ehr", [Pulled("Patient", "ehr-88", "3", None, local_id="p1")], now=w.now
        )
    )
    _session(app, browser, patient="ehr-88")
    landing = browser.get("/app/patient")
    assert landing.status_code == 200
    assert 'id="task-t-contact"' in landing.text  # p1's checklist
    assert browser.get("/fhir/Patient/p1").status_code == 200
