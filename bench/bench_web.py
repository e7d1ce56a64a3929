"""Benchmark of the screens at caseload scale: a worklist of N patients with open checklists.

    python bench/bench_web.py [--patients 500] [--runs 15] [--database-url URL]

Loads the demo directory and N synthetic patients, discharges each of them within the last 9
days (the discharge automation builds ~10 checklist Tasks per discharge), then times the pages
in-process (FastAPI TestClient, system token): median and 95th percentile over ``--runs``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.auth.helpers

from carecoord.jobs import default_registry
from carecoord.jobs.worker import Worker
from carecoord.web.demo import prepare_demo
from carecoord.web.demo_data import Stay, encounter_of
from tests.auth.helpers import bearer, issue_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    now = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="carecoord-bench-web-"))
    started = time.perf_counter()
    app, settings, engine, summary = prepare_demo(
        folder,
        port=8000,
        ehr_port=8001,
        patients=args.patients,
        now=now,
        database_url=args.database_url,
    )
    store = app.state.store
    have = {f"demo-patient-{i + 1:03d}" for i in range(min(args.patients, 10))}
    for i, pid in enumerate(summary.patient_ids):
        if pid in have:
            continue
        out = (now - timedelta(days=i % 9, hours=2)).replace(microsecond=0)
        stay = Stay(f"bench-stay-{i + 1:04d}", pid, out - timedelta(days=3), out, "Pneumonia")
        store.write(lambda w, s=stay: w.update("Encounter", s.id, encounter_of(s)))
    worker = Worker(engine, default_registry)
    while worker.run_once():
        pass
    setup = time.perf_counter() - started
    tasks = store.search(store.parse("Task", [("_count", "1"), ("_total", "accurate")])).total
    token = issue_token(engine, settings, "system/*.cruds", client_id="bench-web")
    pages = [
        ("worklist, all patients", "/app/worklist?scope=all"),
        ("worklist, high risk", "/app/worklist?scope=all&band=high&sort=risk"),
        ("worklist, overdue only", "/app/worklist?scope=all&due=overdue"),
        ("patient page", "/app/patients/demo-patient-001"),
        ("PCP inbox", "/app/inbox"),
        ("dashboard", "/app/dashboard"),
    ]
    print(f"{args.patients} patients, {tasks} Tasks, setup {setup:.1f} s ({engine.dialect.name})\n")
    print("| page | rows | median ms | p95 ms |\n|---|---|---|---|")
    with TestClient(app, headers=bearer(token)) as client:
        for name, path in pages:
            times = []
            size = 0
            for _ in range(args.runs + 1):
                t = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
                size = answer.text.count("<tr")
            times = sorted(times[1:])  # the first run warms caches
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"| {name} | {size} | {statistics.median(times):.0f} | {p95:.0f} |")
    engine.dispose()


if __name__ == "__main__":
    main()
