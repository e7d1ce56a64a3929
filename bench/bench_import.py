"""Bulk import benchmark: ``carecoord import`` of the shared Synthea set into fresh databases.

    python bench/bench_import.py [--data /work/shared/data/synthea-r4] [--db sqlite postgres]

Reports the wall time of the whole command (process start, migration, import) and the rate the
command itself prints (``N resources in S s (R resources/s)``). The import runs on core 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

from common import SERVER_CORE, database

DATA = Path("/work/shared/data/synthea-r4")
RESULTS = Path(__file__).parent / "results"


def run_import(url: str, data: Path) -> dict[str, object]:
    env = dict(os.environ, CARECOORD_DATABASE_URL=url)
    cmd = ["taskset", "-c", str(SERVER_CORE), "carecoord", "import", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    m = re.search(r"([\d,]+) resources in ([\d.]+) ?s \(([\d,.]+) resources/s\)", out)
    n = int(m.group(1).replace(",", "")) if m else None
    return {
        "returncode": proc.returncode,
        "resources": n,
        "reported_seconds": float(m.group(2)) if m else None,
        "reported_rate": float(m.group(3).replace(",", "")) if m else None,
        "wall_seconds": round(wall, 2),
        "wall_rate": round(n / wall, 1) if n else None,
        "output_tail": out.strip().splitlines()[-3:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args()
    rows: dict[str, dict[str, object]] = {}
    for kind in args.db:
        with database(kind, "cc_bench_import") as url:
            rows[kind] = run_import(url, args.data)
        print(kind, json.dumps(rows[kind]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import.json").write_text(json.dumps(rows, indent=2))
    print()
    print(
        "| database | resources | wall s (incl. start) | wall res/s | reported s | reported res/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        met = "" if (r["reported_rate"] or 0) >= 1000 else " (target 1000 missed)"
        print(
            f"| {kind} | {r['resources']} | {r['wall_seconds']} | {r['wall_rate']} | "
            f"{r['reported_seconds']} | {r['reported_rate']}{met} |"
        )
    return 0 if all(r["returncode"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
