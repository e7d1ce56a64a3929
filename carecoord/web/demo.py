"""The demo on one machine: a SQLite database in a folder, the synthetic data, the discharge
automation run once, a history of closed checklist items for the dashboard, the sandbox EHR
registered as an EHR connection, and both servers running (used by ``carecoord demo`` and the
browser tests)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from sqlalchemy import Engine

import carecoord
from carecoord.app import create_app
from carecoord.db import make_engine
from carecoord.fhir.store import FhirStore, Writer
from carecoord.jobs import Registry, default_registry
from carecoord.jobs.worker import Worker
from carecoord.migrate import upgrade
from carecoord.settings import Settings
from carecoord.smart.runtime import SmartRuntime
from carecoord.transitions.codes import CAREPLAN_CATEGORY_SYSTEM, TRANSITION_OF_CARE
from carecoord.transitions.risk.config import load_risk_config
from carecoord.transitions.risk.service import assess_discharge
from carecoord.transitions.workflow import move_task
from carecoord.web.demo_data import (
    DEMO_NURSE,
    DEMO_PCP,
    DEMO_SUPERVISOR,
    DemoSummary,
    demo_directory,
    load_demo,
)
from carecoord.web.sandbox import SANDBOX_CLIENT_ID, SandboxEhr, SandboxUser, sandbox_app
from carecoord.web.taskview import FINAL_STATUSES, ref_id

__all__ = ["DemoServers", "find_config", "free_port", "prepare_demo", "start_demo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_config() -> Path | None:
    """The deployable defaults (``config/``): in the working folder, else beside the package."""
    for candidate in (
        Path.cwd() / "config",
        Path(carecoord.__file__).resolve().parents[1] / "config",
    ):
        if (candidate / "transitions").is_dir():
            return candidate
    return None


def _write_config(folder: Path, *, ehr_base: str, ehr_origin: str) -> Path:
    config = folder / "config"
    source = find_config()
    if source is not None:
        shutil.copytree(source, config, dirs_exist_ok=True)
    (config / "ehr").mkdir(parents=True, exist_ok=True)
    (config / "web").mkdir(parents=True, exist_ok=True)
    (config / "web" / "web.toml").write_text(
        'organisation = "Riverside Health (demo)"\n'
        'time_zone = "America/New_York"\n'
        f'frame_ancestors = ["{ehr_origin}"]\n',
        encoding="utf-8",
    )
    return config


def _register_sandbox(config: Path, *, ehr_base: str) -> None:
    (config / "ehr" / "sandbox.toml").write_text(
        "# The demo's sandbox EHR (carecoord demo)\n"
        f'iss = "{ehr_base}/fhir"\n'
        f'client_id = "{SANDBOX_CLIENT_ID}"\n'
        'client_auth = "public"\n'
        "read_only = false\n"
        'launch_scope = "launch openid fhirUser user/*.cruds"\n'
        'standalone_scope = "openid fhirUser user/*.cruds"\n',
        encoding="utf-8",
    )


def _json(content: bytes | None) -> dict[str, Any]:
    data = orjson.loads(content or b"{}")
    return data if isinstance(data, dict) else {}


def close_history(store: FhirStore, *, now: datetime, older_than_days: int = 10) -> int:
    """Close the items of checklists older than ``older_than_days`` as they might have gone: most
    on time, some late, a few never (so the dashboard has something to show). Returns how many."""
    cutoff = (now - timedelta(days=older_than_days)).isoformat()
    closed = 0
    page = store.search(
        store.parse(
            "CarePlan",
            [("category", f"{CAREPLAN_CATEGORY_SYSTEM}|{TRANSITION_OF_CARE}"), ("_count", "1000")],
        )
    )
    for _, plan_id, content in page.matches:
        plan = _json(content)
        start = str((plan.get("period") or {}).get("start") or "")
        if not start or start > cutoff:
            continue
        task_ids = [ref_id(a.get("reference"), "Task") for a in plan.get("activity") or ()]
        n = sum(ord(c) for c in plan_id)

        def work(w: Writer, ids: list[str | None] = task_ids, seed: int = n) -> int:
            done = 0
            for i, tid in enumerate(ids):
                if tid is None:
                    continue
                task = _json(w.read("Task", tid).content)
                if task.get("status") in FINAL_STATUSES:
                    continue
                due = str(((task.get("restriction") or {}).get("period") or {}).get("end") or "")
                if not due or (seed + i) % 10 == 9:
                    continue  # never done
                when = datetime.fromisoformat(due[:10] + "T14:00:00+00:00")
                when += timedelta(days=2) if (seed + i) % 5 == 3 else timedelta(days=-1)
                move_task(w, task_id=tid, status="completed", when=min(when, now))
                done += 1
            return done

        closed += store.write(work)
    return closed


def assess_risk(store: FhirStore, config_dir: Path, *, now: datetime) -> int:
    """LACE and HOSPITAL RiskAssessments of every finished inpatient stay (the risk package's
    service; conditional updates, so the discharge automation's own scoring changes nothing)."""
    risk_config = load_risk_config(config_dir)
    page = store.search(
        store.parse("Encounter", [("status", "finished"), ("class", "IMP"), ("_count", "1000")])
    )
    for _, encounter_id, _ in page.matches:
        store.write(
            lambda w, eid=encounter_id: assess_discharge(  # type: ignore[misc]
                w, encounter_id=eid, now=now, config=risk_config
            )
        )
    return len(page.matches)


@dataclass
class DemoServers:
    """The running demo."""

    folder: Path
    app_url: str
    ehr_url: str
    summary: DemoSummary
    engine: Engine
    ehr: SandboxEhr
    ready_seconds: float
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        self.engine.dispose()


def _users() -> list[SandboxUser]:
    users = []
    for body in demo_directory():
        if body["resourceType"] != "PractitionerRole":
            continue
        pid = body["practitioner"]["reference"].split("/")[1]
        role = body["code"][0]["coding"][0]["code"]
        prac = next(
            b for b in demo_directory() if b["resourceType"] == "Practitioner" and b["id"] == pid
        )
        name = prac["name"][0]
        users.append(
            SandboxUser(
                pid, " ".join([*name.get("prefix", []), *name["given"], name["family"]]), role
            )
        )
    order = {DEMO_NURSE: 0, DEMO_PCP: 1, DEMO_SUPERVISOR: 2}
    return sorted(users, key=lambda u: (order.get(u.id, 9), u.id))


def _automation_only() -> Registry:
    """The registered handlers but the EHR sync ones (no EHR is registered yet)."""
    registry = Registry()
    for kind in default_registry.kinds:
        handler = default_registry.get(kind)
        if handler is not None and not kind.startswith("sync."):
            registry.register(kind, handler)
    return registry


def prepare_demo(
    folder: Path,
    *,
    port: int,
    ehr_port: int,
    patients: int = 40,
    now: datetime | None = None,
    database_url: str | None = None,
) -> tuple[Any, Settings, Engine, DemoSummary]:
    """Database, configuration and data of the demo; the application (not yet serving)."""
    moment = now or datetime.now(UTC)
    ehr_base = f"http://localhost:{ehr_port}"
    config = _write_config(folder, ehr_base=ehr_base, ehr_origin=ehr_base)
    settings = Settings(
        data_dir=folder,
        config_dir=config,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        run_worker_in_process=True,
        log_level="WARNING",
    )
    engine = make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)
    upgrade(engine)
    app = create_app(settings, engine=engine)
    summary = load_demo(app.state.store, now=moment, patients=patients)
    assess_risk(app.state.store, config, now=moment)  # before the checklists: it picks the plan
    Worker(engine, _automation_only()).run_once()  # the discharge automation, now
    close_history(app.state.store, now=moment)
    # The sandbox EHR is registered last: the app's and the automation's push hooks were built
    # without it, so nothing is pushed to an EHR whose data is this very store.
    _register_sandbox(config, ehr_base=ehr_base)
    app.state.smart = SmartRuntime.from_settings(settings, engine)
    return app, settings, engine, summary


def _serve(app: Any, port: int, host: str) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"demo-{port}")
    thread.start()
    return server, thread


def start_demo(
    folder: Path,
    *,
    patients: int = 40,
    port: int | None = None,
    ehr_port: int | None = None,
    now: datetime | None = None,
    database_url: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> DemoServers:
    """Prepare the demo in ``folder`` and start CareCoord and the sandbox EHR."""
    started = clock()
    port = port or free_port()
    ehr_port = ehr_port or free_port()
    app, _, engine, summary = prepare_demo(
        folder,
        port=port,
        ehr_port=ehr_port,
        patients=patients,
        now=now,
        database_url=database_url,
    )
    recent = [p for p in summary.patient_ids[:10]]
    ehr = SandboxEhr(
        base=f"http://localhost:{ehr_port}",
        app_base=f"http://127.0.0.1:{port}",
        store=app.state.store,
        users=_users(),
        patients=recent,
    )
    servers = DemoServers(
        folder=folder,
        app_url=f"http://127.0.0.1:{port}",
        ehr_url=f"http://localhost:{ehr_port}",
        summary=summary,
        engine=engine,
        ehr=ehr,
        ready_seconds=0.0,
    )
    server, thread = _serve(sandbox_app(ehr), ehr_port, "127.0.0.1")
    servers._servers.append(server)
    servers._threads.append(thread)
    _wait(servers)
    # Every job due now (escalations of the older checklists) before anyone signs in.
    worker = Worker(engine, default_registry)
    while worker.run_once():
        pass
    server, thread = _serve(app, port, "127.0.0.1")
    servers._servers.append(server)
    servers._threads.append(thread)
    _wait(servers)
    servers.ready_seconds = clock() - started
    return servers


def _wait(servers: DemoServers) -> None:
    deadline = time.monotonic() + 20
    while not all(s.started for s in servers._servers):
        if time.monotonic() > deadline:
            servers.stop()
            raise RuntimeError("the demo servers did not start")
        time.sleep(0.02)
