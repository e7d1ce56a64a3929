"""Validation benchmark: the fast structural check against full ``fhir.resources`` validation.

    python bench/bench_validation.py [--data /work/shared/data/synthea-r4] [--reps 5] [--core 0]

Measures µs per resource, in-process on one core, for the ~1.4 KB US Core-style Patient of
``common.patient(i)`` (200 distinct bodies) and for the Synthea resources (every entry of every
Bundle). Columns:

- ``full``: ``model_validate`` of the R4B model class (what every create paid before);
- ``fast_check``: the structural check alone;
- ``validate_resource``: the edge function as the API calls it (fast path, full on fallback).

Each figure is the best of several passes: ``--reps`` for full validation (two over Synthea, which
take seconds each), four times as many for the fast path.
Results go to ``bench/results/validation.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import cpu_model, patient
from fhir.resources.R4B import get_fhir_model_class

from carecoord.fhir.fastvalidate import fast_check, warm
from carecoord.fhir.validation import validate_resource

DATA = Path("/work/shared/data/synthea-r4")
RESULTS = Path(__file__).parent / "results"


def full_validate(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def edge_validate(resource: dict[str, Any]) -> None:
    validate_resource(resource)


def per_resource_us(
    func: Callable[[dict[str, Any]], object], resources: list[dict[str, Any]], reps: int
) -> float:
    """Best pass over ``resources``, in µs per resource."""
    for resource in resources[:50]:
        func(resource)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for resource in resources:
            func(resource)
        best = min(best, time.perf_counter() - start)
    return best / len(resources) * 1e6


def load_synthea(data: Path) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in sorted(data.glob("*.json")):
        bundle = json.loads(path.read_bytes())
        resources.extend(entry["resource"] for entry in bundle.get("entry", []))
    return resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    args = parser.parse_args()
    if args.core is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {args.core})

    patients = [patient(i) for i in range(200)]
    synthea = load_synthea(args.data)
    types = sorted({r["resourceType"] for r in synthea} | {"Patient"})
    for res_type in types:
        get_fhir_model_class(res_type)
    start = time.perf_counter()
    warm(types)
    build_ms = (time.perf_counter() - start) * 1e3

    fallbacks = [r["resourceType"] for r in synthea if not fast_check(r)]
    patient_bytes = len(json.dumps(patients[0], separators=(",", ":")))
    rows: dict[str, dict[str, float]] = {}
    for name, resources, full_reps in (
        (f"Patient ({patient_bytes} B)", patients, args.reps),
        (f"Synthea average ({len(synthea)} resources)", synthea, 2),
    ):
        full = per_resource_us(full_validate, resources, full_reps)
        fast = per_resource_us(fast_check, resources, args.reps * 4)
        edge = per_resource_us(edge_validate, resources, args.reps * 4)
        rows[name] = {
            "full_us": round(full, 1),
            "fast_check_us": round(fast, 1),
            "validate_resource_us": round(edge, 1),
            "speedup": round(full / edge, 1),
        }
        print(name, json.dumps(rows[name]), flush=True)

    summary = {
        "cpu": cpu_model(),
        "table_build_ms": round(build_ms, 1),
        "synthea_fallbacks": len(fallbacks),
        "synthea_resources": len(synthea),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validation.json").write_text(json.dumps(summary, indent=2))
    print()
    print(f"CPU: {summary['cpu']}; tables for {len(types)} types built in {build_ms:.0f} ms")
    print(f"Synthea resources that fell back to full validation: {len(fallbacks)}/{len(synthea)}")
    print()
    print("| resource | full fhir.resources µs | fast_check µs | validate_resource µs | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['full_us']:,.0f} | {row['fast_check_us']:,.1f} "
            f"| {row['validate_resource_us']:,.1f} | {row['speedup']:.0f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
