"""Discharge automation benchmark: 10,000 discharges become CarePlans and Tasks in the store.

    python bench/bench_transitions.py [--discharges 10000] [--db sqlite postgres]

Each discharge runs the real service (``plan_transition`` through the automation store with the
Task state machine hook): read the Encounter and Patient, look for orders, assign owners among
a hospital's case managers by open caseload, write the CarePlan, one Task per item (conditional
create on its identifier) and the escalation jobs, in one transaction. Patients, staff and
finished Encounters are loaded before timing. The process is pinned to one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import SERVER_CORE, database

from carecoord.db import make_engine
from carecoord.fhir.store import FhirStore, Writer
from carecoord.migrate import upgrade
from carecoord.settings import Settings
from carecoord.transitions.codes import CARE_ROLE_SYSTEM
from carecoord.transitions.handlers import automation_store
from carecoord.transitions.service import plan_transition
from carecoord.transitions.templates import load_templates

RESULTS = Path(__file__).parent / "results"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
DESTINATIONS = ["home"] * 6 + ["snf", "aadvice", "other-hcf"]


def _load(store: FhirStore, n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    encounters: list[str] = []

    def work(w: Writer) -> None:
        org = w.create("Organization", {"resourceType": "Organization", "name": "General"})
        hospital = f"Organization/{org.resource.res_id}"
        for i in range(12):
            code = ("nurse-case-manager", "pharmacist", "scheduler", "social-worker")[i % 4]
            person = w.create(
                "Practitioner", {"resourceType": "Practitioner", "name": [{"family": f"S{i}"}]}
            )
            w.create(
                "PractitionerRole",
                {
                    "resourceType": "PractitionerRole",
                    "active": True,
                    "practitioner": {"reference": f"Practitioner/{person.resource.res_id}"},
                    "organization": {"reference": hospital},
                    "code": [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": code}]}],
                },
            )
        start = datetime(2025, 1, 1, 12, tzinfo=UTC)
        for i in range(n):
            lang = "es" if i % 9 == 0 else "en-US"
            patient = w.create(
                "Patient",
                {
                    "resourceType": "Patient",
                    "name": [{"family": f"P{i}"}],
                    "communication": [
                        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": lang}]}}
                    ],
                },
            )
            end = start + timedelta(hours=rng.randrange(0, 24 * 700))
            enc = w.create(
                "Encounter",
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": rng.choice(["IMP", "IMP", "OBSENC", "EMER"]),
                    },
                    "subject": {"reference": f"Patient/{patient.resource.res_id}"},
                    "serviceProvider": {"reference": hospital},
                    "period": {
                        "start": (end - timedelta(days=rng.randrange(0, 9))).isoformat(),
                        "end": end.isoformat(),
                    },
                    "hospitalization": {
                        "dischargeDisposition": {
                            "coding": [{"system": DISPOSITION, "code": rng.choice(DESTINATIONS)}]
                        }
                    },
                },
            )
            encounters.append(enc.resource.res_id)

    store.write(work)
    return encounters


def run(kind: str, n: int) -> dict[str, Any]:
    with database(kind, f"cc_bench_transitions_{os.getpid()}") as url:
        engine = make_engine(url)
        upgrade(engine)
        settings = Settings(database_url=url)
        store = automation_store(settings, engine)
        templates = load_templates(Path(__file__).resolve().parents[1] / "config")
        encounters = _load(FhirStore(engine), n)
        now = datetime(2027, 1, 1, tzinfo=UTC)
        tasks = 0
        t0 = time.perf_counter()
        marks: list[float] = []
        for n, enc_id in enumerate(encounters, 1):
            result = store.write(
                lambda w, e=enc_id: plan_transition(w, encounter_id=e, templates=templates, now=now)
            )
            tasks += result.created
            if n % 1000 == 0:
                marks.append(round(time.perf_counter() - t0, 1))
                print(f"  {n} discharges in {marks[-1]} s", flush=True)
        elapsed = time.perf_counter() - t0
        t1 = time.perf_counter()
        replayed = 0
        for enc_id in encounters[:1000]:
            result = store.write(
                lambda w, e=enc_id: plan_transition(w, encounter_id=e, templates=templates, now=now)
            )
            replayed += result.created
        replay_elapsed = time.perf_counter() - t1
        engine.dispose()
    return {
        "discharges": n,
        "tasks_created": tasks,
        "seconds": round(elapsed, 2),
        "discharges_per_s": round(n / elapsed, 1),
        "tasks_per_s": round(tasks / elapsed, 1),
        "replay_1000_seconds": round(replay_elapsed, 2),
        "replay_created": replayed,
        "seconds_at_each_1000": marks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--discharges", type=int, default=10_000)
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args()
    os.sched_setaffinity(0, {SERVER_CORE})
    rows = {}
    for kind in args.db:
        rows[kind] = run(kind, args.discharges)
        print(kind, json.dumps(rows[kind]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transitions.json").write_text(json.dumps(rows, indent=2))
    print("\n| database | discharges | Tasks | s | discharges/s | Tasks/s | replay of 1,000 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        print(
            f"| {kind} | {r['discharges']:,} | {r['tasks_created']:,} | {r['seconds']} | "
            f"{r['discharges_per_s']:,} | {r['tasks_per_s']:,} | {r['replay_1000_seconds']} s, "
            f"{r['replay_created']} new |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
