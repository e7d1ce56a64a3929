"""Pull benchmark: CareCoord pulls from a second CareCoord that plays the EHR on loopback.

    python bench/bench_pull.py [--db sqlite|postgres] [--scale 1] [--page-size 100]

The EHR is ``carecoord serve`` (pinned to core 0, SQLite) loaded with the shared Synthea patients
by ``carecoord import`` (``--scale N`` imports N copies of each patient with fresh ids). Our
service is registered there as a backend-services client with a fresh key. The pull runs in this
process, pinned to core 1, into a fresh database (``--db``): every patient of the EHR as one
``patients:`` population, the types CareCoord's own API can search by patient (all but
RelatedPerson). Reported: resources written per second of wall time (the first, full pull), and
the time of a second pull that finds nothing new (every search with ``_lastUpdated``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from common import AUTH, BENCH_DIR, SERVER_CORE, cpu_model, database, fresh_sqlite, server

DATA = Path("/work/shared/data/synthea-r4")
CONNECTION = "bench-ehr"
CLIENT_ID = "carecoord-sync"
TYPES = [
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "Procedure",
    "Coverage",
    "Appointment",
    "PractitionerRole",
    "Practitioner",
    "Location",
    "Organization",
]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def prepare_data(scale: int) -> Path:
    """The Synthea folder, with ``scale`` copies of every patient bundle (fresh ids per copy)."""
    folder = BENCH_DIR / "pull-data"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("organizations.json", "practitioners.json"):
        shutil.copy(DATA / name, folder / name)
    for path in sorted(DATA.glob("patient-*.json")):
        text = path.read_text()
        body = json.loads(text)
        own = {e["resource"]["id"] for e in body.get("entry", []) if "id" in e.get("resource", {})}
        for copy in range(scale):
            if copy == 0:
                out = text
            else:
                mapping = {u: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{copy}:{u}")) for u in own}
                out = _UUID.sub(lambda m, ids=mapping: ids.get(m.group(0), m.group(0)), text)
            (folder / f"{path.stem}-{copy}.json").write_text(out)
    return folder


def ehr_env(url: str) -> dict[str, str]:
    return dict(os.environ, CARECOORD_DATABASE_URL=url, CARECOORD_DATA_DIR=str(BENCH_DIR / "data"))


def load_ehr(url: str, data: Path, jwks_file: Path) -> None:
    env = ehr_env(url)
    started = time.perf_counter()
    subprocess.run(
        ["taskset", "-c", str(SERVER_CORE), "carecoord", "import", str(data)],
        env=env,
        check=True,
        capture_output=True,
    )
    print(f"EHR loaded in {time.perf_counter() - started:.1f} s", flush=True)
    subprocess.run(
        ["carecoord", "clients", "add", CLIENT_ID, "--scope", "system/*.rs", "--jwks-file",
         str(jwks_file)],
        env=env,
        check=True,
        capture_output=True,
    )  # fmt: skip


def patient_ids(base: str) -> list[str]:
    ids: list[str] = []
    url: str | None = f"{base}/fhir/Patient?_count=1000&_elements=id"
    with httpx.Client(headers=AUTH, timeout=60) as client:
        while url:
            page = client.get(url).json()
            ids += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    return ids


def write_config(folder: Path, iss: str, page_size: int) -> None:
    (folder / "ehr").mkdir(parents=True, exist_ok=True)
    (folder / "ehr" / f"{CONNECTION}.toml").write_text(
        f'iss = "{iss}"\nclient_id = "{CLIENT_ID}"\n'
    )
    (folder / "sync").mkdir(parents=True, exist_ok=True)
    types = ", ".join(f'"{t}"' for t in TYPES)
    (folder / "sync" / "sync.toml").write_text(
        f"[defaults]\ntypes = [{types}]\npage_size = {page_size}\nmax_in_flight = 5\n"
    )


async def timed_pull(settings: Any, engine: Any, population: Any) -> tuple[float, float, Any]:
    from carecoord.sync.runtime import SyncRuntime

    runtime = SyncRuntime(settings, engine)
    try:
        await runtime.client(CONNECTION)  # discovery and the token, outside the measurement
        cpu, wall = time.process_time(), time.perf_counter()
        (report,) = await runtime.pull(CONNECTION, population)
        return time.perf_counter() - wall, time.process_time() - cpu, report
    finally:
        await runtime.aclose()


def run_pull(db_url: str, iss: str, ids: list[str], page_size: int) -> dict[str, Any]:
    from carecoord.db import make_engine
    from carecoord.fhir.validation import warm_models
    from carecoord.migrate import upgrade
    from carecoord.settings import Settings
    from carecoord.sync.config import parse_population

    folder = BENCH_DIR / "pull-client"
    keys = folder / "keys"
    settings = Settings(
        database_url=db_url,
        data_dir=folder / "data",
        config_dir=folder / "config",
        keys_dir=keys,
        secret_key="bench-pull-secret-key-0123456789abcdef-0123",
        run_worker_in_process=False,
    )
    write_config(settings.config_dir, iss, page_size)
    warm_models(tuple(TYPES))  # a start-up cost (the server warms these types when it starts)
    engine = make_engine(db_url)
    upgrade(engine)
    population = parse_population("patients:" + ",".join(ids))
    try:
        wall, cpu, report = asyncio.run(timed_pull(settings, engine, population))
        again_wall, again_cpu, again = asyncio.run(timed_pull(settings, engine, population))
    finally:
        engine.dispose()
    c = report.counts
    return {
        "patients": len(ids),
        "fetched": c.fetched,
        "written": c.written,
        "rejected": c.rejected,
        "by_type": {t: n.written for t, n in sorted(report.by_type.items())},
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "resources_per_s": round(c.written / wall, 1),
        "resources_per_cpu_s": round(c.written / cpu, 1) if cpu else None,
        "unchanged_pull_seconds": round(again_wall, 2),
        "unchanged_pull_fetched": again.counts.fetched,
        "unchanged_pull_written": again.counts.written,
        "unchanged_pull_cpu_seconds": round(again_cpu, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--scale", type=int, default=1, help="copies of each Synthea patient")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()

    from carecoord.smart.keys import KeyStore

    client_dir = BENCH_DIR / "pull-client"
    shutil.rmtree(client_dir, ignore_errors=True)
    keys = KeyStore(client_dir / "keys")
    keys.generate()
    jwks_file = client_dir / "jwks.json"
    jwks_file.write_text(json.dumps(keys.jwks()))

    data = prepare_data(args.scale)
    ehr_url = fresh_sqlite("pull-ehr")
    load_ehr(ehr_url, data, jwks_file)
    log = BENCH_DIR / "pull-ehr.log"
    with server(ehr_url, args.port, log) as base:
        ids = patient_ids(base)
        os.sched_setaffinity(0, {1})  # the pull on the core the EHR does not use
        with database(args.db, "cc_bench_pull") as db_url:
            result = run_pull(db_url, f"{base}/fhir", ids, args.page_size)
    result.update(db=args.db, scale=args.scale, page_size=args.page_size, cpu=cpu_model())
    print(json.dumps(result, indent=2))
    print(
        f"\n| {args.db} | {result['patients']} patients | {result['written']} resources | "
        f"{result['seconds']} s | **{result['resources_per_s']:,.0f}/s** | "
        f"unchanged re-pull {result['unchanged_pull_seconds']} s |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
