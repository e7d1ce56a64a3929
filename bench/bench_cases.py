"""Case-management benchmark (in process, SQLite file or PostgreSQL): to live in bench/.

    python tests/cases/bench_cases.py [--cases 1000] [--managers 20] [--db sqlite|postgres]

Opens N cases (auto-assigned: each assignment reads every open case to weigh caseloads), runs
the daily monitoring over all of them, then times GET-equivalents of caseloads and outcomes.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from carecoord.cases import service
from carecoord.cases.config import CaseModel, load_case_config
from carecoord.cases.reports import outcome_rows
from carecoord.db import make_engine
from carecoord.fhir.store import FhirStore
from carecoord.migrate import upgrade
from carecoord.transitions.codes import CARE_ROLE_SYSTEM

MODELS = ["brokerage", "clinical", "strengths-based", "intensive", "integrated"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--managers", type=int, default=20)
    ap.add_argument("--db", default="sqlite")
    args = ap.parse_args()
    if args.db == "postgres":
        import sqlalchemy as sa

        admin = sa.create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as c:
            c.execute(sa.text("DROP DATABASE IF EXISTS bench_cases WITH (FORCE)"))
            c.execute(sa.text("CREATE DATABASE bench_cases"))
        url = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_cases"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    engine = make_engine(url, pool_size=4)
    upgrade(engine)
    store = FhirStore(engine)
    config = load_case_config(Path("config/cases"))
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    ctx = service.CaseContext(store, config, now)
    org = store.create("Organization", {"resourceType": "Organization"}).resource.res_id
    for i in range(args.managers):
        pid = store.create("Practitioner", {"resourceType": "Practitioner"}).resource.res_id
        role = "nurse-case-manager" if i % 2 == 0 else "social-worker"
        store.create(
            "PractitionerRole",
            {
                "resourceType": "PractitionerRole",
                "active": True,
                "practitioner": {"reference": f"Practitioner/{pid}"},
                "organization": {"reference": f"Organization/{org}"},
                "code": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": role}]}],
            },
        )
    # plenty of room: the benchmark measures cost, not caps
    ctx.config = dataclasses.replace(
        config, caseloads=config.caseloads.model_copy(update={"default_cap": 10_000.0})
    )
    accept: list[float] = []
    for i in range(args.cases):
        patient = store.create("Patient", {"resourceType": "Patient"}).resource.res_id
        sr = store.create(
            "ServiceRequest",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "code": {"coding": [config.intake.referral_codes[0].to_fhir()]},
                "subject": {"reference": f"Patient/{patient}"},
                "performer": [{"reference": f"Organization/{org}"}],
            },
        ).resource.res_id
        t0 = time.perf_counter()
        service.accept_referral(ctx, referral_id=sr, model=CaseModel(MODELS[i % 5]))
        accept.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ids = service.open_case_ids(ctx)
    for case_id in ids:
        service.ensure_monitoring(ctx, case_id=case_id)
    monitor = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = service.caseloads(ctx)
    loads = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcome_rows(ctx)
    outcomes = time.perf_counter() - t0
    first, last = accept[: len(accept) // 10], accept[-len(accept) // 10 :]
    print(f"db={args.db} cases={args.cases} managers={len(rows)}")
    print(
        f"accept (assign + case + team + tasks): median {statistics.median(accept) * 1000:.1f} ms; "
        f"first 10% {statistics.median(first) * 1000:.1f} ms, last 10% "
        f"{statistics.median(last) * 1000:.1f} ms"
    )
    print(f"monitoring run over {len(ids)} open cases: {monitor:.2f} s "
          f"({monitor / max(len(ids), 1) * 1000:.1f} ms/case)")  # fmt: skip
    print(f"caseloads: {loads * 1000:.0f} ms; outcomes: {outcomes:.2f} s")


if __name__ == "__main__":
    main()
