"""Search latency at 1K vs 64K patients (each with 2 Encounters), through the store API.

    python bench/bench_search_scaling.py --db postgres [--sizes 1000 64000] [--reps 15]

Loads synthetic data directly through ``FhirStore.write`` (batches of 500), then measures the
median latency of a fixed set of searches at each size. Measured in-process through the store
API (``store.search(store.parse(...))``), not through HTTP.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from common import database, patient, pin_to_client_core

from carecoord.db import make_engine
from carecoord.fhir.search import SearchPage
from carecoord.fhir.store import FhirStore, Writer
from carecoord.migrate import upgrade

RESULTS = Path(__file__).parent / "results"
BATCH = 500
MRN = "http://hospital.example.org/mrn"


def encounter(pid: str, i: int, k: int) -> dict[str, Any]:
    day = 1 + (i + k) % 28
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
        },
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": f"2023-0{1 + k}-{day:02d}T09:00:00Z"},
    }


def load(store: FhirStore, start: int, stop: int) -> None:
    for lo in range(start, stop, BATCH):
        hi = min(stop, lo + BATCH)

        def work(w: Writer, lo: int = lo, hi: int = hi) -> None:
            for i in range(lo, hi):
                pid = w.create("Patient", patient(i)).resource.res_id
                for k in range(2):
                    w.create("Encounter", encounter(pid, i, k))

        store.write(work)


def queries() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Fixed searches; targets are picked inside the first 1K so they exist at every size."""
    i = 417
    p = patient(i)
    fam = p["name"][0]["family"]
    return [
        ("Patient?family=", "Patient", [("family", fam)]),
        ("Patient?identifier=sys|val", "Patient", [("identifier", f"{MRN}|MRN-{i:08d}")]),
        (
            "Patient?birthdate=ge..&_count=10",
            "Patient",
            [("birthdate", "ge1995-01-01"), ("_count", "10")],
        ),
        ("Encounter?patient=", "Encounter", [("patient", "{pid}")]),
        (
            "Encounter?patient.identifier=",
            "Encounter",
            [("patient.identifier", f"{MRN}|MRN-{i:08d}")],
        ),
    ]


def measure(store: FhirStore, reps: int) -> dict[str, dict[str, float]]:
    qs = queries()
    pid_page = store.search(store.parse("Patient", qs[1][2]))
    pid = _first_id(pid_page)
    out: dict[str, dict[str, float]] = {}
    for name, rtype, params in qs:
        params = [(k, v.replace("{pid}", pid)) for k, v in params]
        times = []
        hits = 0
        for r in range(reps + 2):
            t0 = time.perf_counter()
            page = store.search(store.parse(rtype, params))
            dt = time.perf_counter() - t0
            if r >= 2:  # two warm-up runs
                times.append(dt)
            hits = _count(page)
        out[name] = {"median_ms": round(statistics.median(times) * 1000, 3), "hits": hits}
    return out


def _first_id(page: SearchPage) -> str:
    return page.matches[0][1]


def _count(page: SearchPage) -> int:
    return len(page.matches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 64000])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    pin_to_client_core()
    results: dict[int, dict[str, dict[str, float]]] = {}
    with database(args.db, "cc_bench_search") as url:
        engine = make_engine(url)
        upgrade(engine)
        store = FhirStore(engine)
        loaded = 0
        for size in sorted(args.sizes):
            t0 = time.perf_counter()
            load(store, loaded, size)
            dt = time.perf_counter() - t0
            print(f"loaded {size - loaded} patients (+2 encounters each) in {dt:.1f} s", flush=True)
            loaded = size
            if args.db == "postgres":
                with engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
            results[size] = measure(store, args.reps)
            print(size, json.dumps(results[size]), flush=True)
        engine.dispose()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"search-{args.db}.json").write_text(json.dumps(results, indent=2))
    small, large = min(results), max(results)
    print()
    print(f"| search ({args.db}, store API) | {small} ms | {large} ms | ratio | <= 1.5x |")
    print("|---|---:|---:|---:|---|")
    for name in results[small]:
        a, b = results[small][name]["median_ms"], results[large][name]["median_ms"]
        ratio = b / a if a else float("nan")
        print(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f} | {'yes' if ratio <= 1.5 else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
