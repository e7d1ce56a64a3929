"""The daily monitoring job: due work generated, overdue flagged, the next run scheduled."""

from __future__ import annotations

from sqlalchemy import Engine, select

from carecoord.cases.handlers import MonitorHandler, register_handlers
from carecoord.jobs import Registry, Worker
from carecoord.jobs.tables import jobs
from carecoord.settings import Settings
from tests.cases.conftest import Clock, World


def _contact_tasks(world: World, cid: str) -> list[dict]:
    return [t for t in world.api.get(f"/api/cases/{cid}").json()["tasks"]
            if t["code"] == "case-contact"]  # fmt: skip


def test_overdue_contacts_are_flagged_and_the_job_reschedules_itself(
    world: World, clock: Clock, engine: Engine, settings: Settings
) -> None:
    cid = world.open_case("intensive")["id"]  # contact due 2026-03-09
    registry = Registry()
    register_handlers(registry, settings=settings)
    register_handlers(registry, settings=settings)  # safe to call again
    worker = Worker(engine, registry, clock=clock)
    clock.advance(2)  # Mar 4: the first run (Mar 3 06:00) is due
    assert worker.run_once() == 1
    [task] = _contact_tasks(world, cid)
    assert (task["dueState"], task["status"]) == ("upcoming", "requested")
    clock.advance(8)  # Mar 12: overdue; the Mar 4 run was scheduled by the first
    assert worker.run_once() == 1
    [task] = _contact_tasks(world, cid)
    assert task["dueState"] == "overdue"
    stored = world.api.get(f"/fhir/Task/{task['id']}").json()
    assert stored["businessStatus"]["coding"][0]["code"] == "overdue"
    with engine.connect() as conn:
        keys = set(
            conn.execute(select(jobs.c.dedup_key).where(jobs.c.kind == "cases.monitor")).scalars()
        )
    assert "cases.monitor:2026-03-13" in keys
    assert worker.run_once() == 0  # nothing else due: one run per day
    # a contact completes the overdue Task and the next one is due a week later
    r = world.api.post(f"/api/cases/{cid}/contacts", json={"channel": "home-visit"})
    assert r.status_code == 201
    tasks = _contact_tasks(world, cid)
    assert sorted((t["status"], t["due"]) for t in tasks) == [
        ("completed", "2026-03-09"),
        ("requested", "2026-03-19"),
    ]


def test_a_failed_contact_does_not_count(world: World, clock: Clock) -> None:
    cid = world.open_case("clinical")["id"]
    r = world.api.post(f"/api/cases/{cid}/contacts", json={"channel": "phone", "successful": False})
    assert r.status_code == 201
    assert r.json()["status"] == "not-done"
    assert [t["status"] for t in _contact_tasks(world, cid)] == ["requested"]


def test_register_handlers_is_idempotent_and_updates_settings(settings: Settings) -> None:
    registry = Registry()
    register_handlers(registry)
    register_handlers(registry, settings=settings)
    handler = registry.get("cases.monitor")
    assert isinstance(handler, MonitorHandler) and handler.settings is settings
