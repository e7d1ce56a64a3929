"""Real-browser flows through the demo: EHR launch to the patient page and a contact task done,
a PCP's inbox, the dashboard's charts, and keyboard and label checks."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from carecoord.transitions.codes import TaskCode
from carecoord.web.demo import DemoServers
from carecoord.web.demo_data import DEMO_NURSE, DEMO_PCP

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FIRST = "demo-patient-001"


def _task(demo: DemoServers, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(demo.ehr.store.read("Task", task_id).content or b"{}")
    return data


def _launch(page: Any, demo: DemoServers, patient: str = FIRST) -> None:
    page.goto(f"{demo.ehr_url}/")
    row = page.locator("tr", has_text=_patient_name(demo, patient))
    row.get_by_role("link", name="Open CareCoord").click()
    page.wait_for_url(re.compile(r"/app/patient"))


def _patient_name(demo: DemoServers, patient: str) -> str:
    body = orjson.loads(demo.ehr.store.read("Patient", patient).content or b"{}")
    name = body["name"][0]
    return f"{name['given'][0]} {name['family']}"


def test_ehr_launch_contact_attempt_then_complete_persists(page: Any, demo: DemoServers) -> None:
    _launch(page, demo)
    banner = page.locator("#patient-banner")
    assert _patient_name(demo, FIRST) in banner.inner_text()
    checklist = page.locator(".checklist").first
    contact = checklist.locator(f"tr[data-code='{TaskCode.TCM_INTERACTIVE_CONTACT.value}']")
    task_id = (contact.get_attribute("id") or "").removeprefix("task-")
    assert _task(demo, task_id)["owner"]["reference"] == f"Practitioner/{DEMO_NURSE}"
    before = contact.locator(".due").get_attribute("data-state")
    assert before in ("on-track", "due-soon", "due-today", "overdue")

    contact.get_by_text("Record contact attempt").click()
    contact.get_by_label("Not reached").check()
    contact.get_by_label("Note").fill("Voicemail left")
    contact.get_by_role("button", name="Save attempt").click()
    page.wait_for_selector("text=Contact attempt recorded.")
    contact = page.locator(f"#task-{task_id}")
    assert "not reached" in contact.locator(".attempts").inner_text()
    assert contact.locator(".status").get_attribute("data-status") == "in-progress"

    contact.get_by_role("button", name="Complete: TCM interactive contact").click()
    page.wait_for_selector("text=Task completed.")
    page.reload()
    contact = page.locator(f"#task-{task_id}")
    assert contact.locator(".status").get_attribute("data-status") == "completed"
    assert contact.locator(".due").get_attribute("data-state") == "done"
    assert "Voicemail left" in contact.locator(".attempts").inner_text()
    assert re.search(
        r"\b[1-9]\d* of \d+ done", page.locator(".checklist .progress").first.inner_text()
    )

    stored = _task(demo, task_id)
    assert stored["status"] == "completed"
    assert stored["executionPeriod"]["end"]
    page_of = demo.ehr.store.search(
        demo.ehr.store.parse("Communication", [("based-on", f"Task/{task_id}")])
    )
    comms = [orjson.loads(c) for _, _, c in page_of.matches]
    assert [c["status"] for c in comms] == ["not-done"]
    assert comms[0]["sender"]["reference"] == f"Practitioner/{DEMO_NURSE}"


def test_session_cookie_works_embedded_in_the_ehr_iframe(page: Any, demo: DemoServers) -> None:
    page.goto(f"{demo.ehr_url}/")
    page.locator("tr", has_text=_patient_name(demo, "demo-patient-002")).get_by_role(
        "link", name="Chart with CareCoord embedded"
    ).click()
    frame = page.frame_locator("iframe[title='CareCoord']")
    frame.locator("#checklist-title").wait_for()
    assert _patient_name(demo, "demo-patient-002") in frame.locator("#patient-banner").inner_text()
    cookies = {c["name"]: c for c in page.context.cookies(demo.app_url)}
    session = cookies["carecoord_session"]
    assert session["sameSite"] == "None" and session["secure"] is True


def test_pcp_accepts_one_task_and_rejects_another_with_reason(page: Any, demo: DemoServers) -> None:
    page.goto(f"{demo.ehr_url}/sign-in?user={DEMO_PCP}")
    page.wait_for_url(re.compile(r"/app/inbox"))
    incoming = page.locator("#incoming tbody tr")
    assert incoming.count() >= 2
    first_id = (incoming.nth(0).get_attribute("id") or "").removeprefix("task-")
    second_id = (incoming.nth(1).get_attribute("id") or "").removeprefix("task-")
    for task_id in (first_id, second_id):
        assert _task(demo, task_id)["owner"]["reference"] == f"Practitioner/{DEMO_PCP}"

    page.locator(f"#task-{first_id}").get_by_role("button", name=re.compile("^Accept")).click()
    page.wait_for_selector("text=Task accepted.")
    assert page.locator(f"#working #task-{first_id}").count() == 1

    row = page.locator(f"#task-{second_id}")
    row.get_by_text("Reject", exact=True).click()
    row.get_by_label("Reason for rejecting").fill("Patient moved to another practice")
    row.get_by_role("button", name="Reject task").click()
    page.wait_for_selector("text=Task rejected.")
    recent = page.locator(f"#recent [data-task='{second_id}']")
    assert recent.locator(".status").get_attribute("data-status") == "rejected"
    assert "Patient moved to another practice" in recent.inner_text()

    assert _task(demo, first_id)["status"] == "accepted"
    rejected = _task(demo, second_id)
    assert rejected["status"] == "rejected"
    assert rejected["statusReason"]["text"] == "Patient moved to another practice"


def test_reject_without_reason_is_refused_in_the_browser(page: Any, demo: DemoServers) -> None:
    page.goto(f"{demo.ehr_url}/sign-in?user=demo-pcp-2")
    page.wait_for_url(re.compile(r"/app/inbox"))
    row = page.locator("#incoming tbody tr").first
    task_id = (row.get_attribute("id") or "").removeprefix("task-")
    row.get_by_text("Reject", exact=True).click()
    row.get_by_role("button", name="Reject task").click()  # the required field stops it
    assert _task(demo, task_id)["status"] == "requested"
    assert row.get_by_label("Reason for rejecting").evaluate("e => !e.validity.valid")


def test_dashboard_renders_charts_with_downloadable_numbers(page: Any, demo: DemoServers) -> None:
    _launch(page, demo, "demo-patient-003")
    page.goto(f"{demo.app_url}/app/dashboard")
    charts = page.locator("svg.chart[role='img']")
    assert charts.count() == 5
    readmissions = page.locator("#chart-readmissions svg")
    assert readmissions.locator("circle.point").count() >= 3
    caseloads = page.locator("#chart-caseloads svg rect.bar")
    numbers = page.locator("#chart-caseloads table tbody tr")
    assert caseloads.count() == numbers.count() >= 3  # one bar per care manager
    kim = numbers.filter(has_text="Kim Okafor").locator("td").nth(1).text_content() or ""
    assert float(kim) > 0  # the demo's cases
    box = readmissions.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 80
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Download readmissions")).click()
    text = download.value.path().read_text(encoding="utf-8")
    lines = text.strip().splitlines()
    assert lines[0] == "month,discharges,readmissions_30d,rate_pct"
    assert sum(int(line.split(",")[2]) for line in lines[1:]) >= 1  # the demo's readmissions


def _unlabelled(page: Any) -> list[str]:
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML.slice(0, 120))"""
        )
    )


def test_accessibility_labels_and_keyboard(page: Any, demo: DemoServers) -> None:
    _launch(page, demo, "demo-patient-004")
    assert _unlabelled(page) == []
    for path in ("/app/worklist?scope=all", "/app/inbox", "/app/dashboard"):
        page.goto(f"{demo.app_url}{path}")
        assert _unlabelled(page) == [], path
    page.goto(f"{demo.app_url}/app/patients/demo-patient-004")
    reached: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("() => (document.activeElement.textContent || '').trim().slice(0, 60)")
        )
        if reached[-1] == "Record contact attempt":
            break
    assert "Record contact attempt" in reached, reached[-10:]
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.parentElement.open") is True
    assert any(r.startswith("Complete") or r == "Accept" for r in reached)


def test_pages_carry_csp_frame_ancestors_and_refuse_forged_posts(demo: DemoServers) -> None:
    with httpx.Client(base_url=demo.app_url) as client:
        answer = client.get("/app/worklist")
        assert answer.status_code == 401
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert f"frame-ancestors 'self' {demo.ehr_url}" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        forged = client.post(
            "/app/tasks/x/action",
            data={"action": "complete", "next": "/app"},
            cookies={"carecoord_session": "not-a-session"},
        )
        assert forged.status_code == 401


def test_nurse_worklist_shows_her_patients_and_filters_in_place(
    page: Any, demo: DemoServers
) -> None:
    page.goto(f"{demo.ehr_url}/sign-in?user={DEMO_NURSE}")
    page.wait_for_url(re.compile(r"/app/worklist"))
    rows = page.locator("#worklist tbody tr")
    everyone = rows.count()
    assert everyone >= 3
    ids = [rows.nth(i).get_attribute("data-patient") or "" for i in range(everyone)]
    # demo patients 1, 4, 7 ... have Kim Okafor as their nurse case manager
    assert all((int(pid.rsplit("-", 1)[1]) - 1) % 3 == 0 for pid in ids), ids
    page.evaluate("() => { window.stillHere = true }")
    page.get_by_label("Risk").select_option("high")
    page.wait_for_url(re.compile(r"band=high"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist tbody tr')]"
        ".every(r => r.dataset.band === 'high')"
    )
    high = page.locator("#worklist tbody tr")
    assert 0 < high.count() < everyone
    assert page.evaluate("() => window.stillHere === true")  # swapped by htmx, not reloaded


def test_standalone_sign_in_chooses_a_user_at_the_ehr(page: Any, demo: DemoServers) -> None:
    page.goto(f"{demo.app_url}/app/dashboard")
    assert "Not signed in" in page.content()
    page.get_by_role("link", name="sandbox").click()
    page.get_by_role("link", name="Dana Whitfield").click()
    page.wait_for_url(re.compile(r"/app/dashboard"))
    assert page.locator("svg.chart").count() == 5
