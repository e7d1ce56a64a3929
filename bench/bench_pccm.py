"""PCCM assignment benchmark: members per second, domain ranking and the whole batch with writes.

    python bench/bench_pccm.py [--members 100000] [--pcps 2000] [--batch-members 100000]
                               [--database-url URL] [--core 0] [--skip-batch] [--skip-domain]

Two measurements, in-process on one core:

- ``domain``: :func:`carecoord.pccm.ranking.decide` for every member in id order over an indexed
  :class:`~carecoord.pccm.ranking.Directory` (PCPs bucketed by 0.25° grid cells), panels updated
  as it goes; no database. Members and PCPs are spread over North Carolina's bounding box with a
  denser urban third; 30% have a history PCP, 20% a family member, 10% a non-English language;
  the panel cap is set so that dense cells fill up and capacity exclusions happen.
- ``batch``: ``PccmService.run_batch`` over the store ``carecoord pccm assign`` uses (the Task
  state machine and EHR push hooks, no group commit): load Coverage, Patients, PractitionerRoles,
  Encounters and RelatedPersons from the FHIR store, decide, and write per member the assignment
  row, Patient.generalPractitioner, CareTeam, establish-care Task and member notice, with one
  Provenance per transaction of 1,000 members; on a fresh SQLite file (or ``--database-url``).
  Then the same batch again (``rerun_s``), which must write nothing. Loading the fixture data is
  not timed.

``seconds`` is wall time; ``cpu_s`` this process's CPU time (the honest figure on a shared
machine; on PostgreSQL the server's time is not in it). PostgreSQL gets ``ANALYZE`` after the
fixture load (autovacuum's statistics; without them the store's searches plan full scans).
Results go to ``bench/results/pccm.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_model

from carecoord.db import make_engine
from carecoord.migrate import upgrade
from carecoord.pccm.model import Accepting, Member, Panels, Pcp
from carecoord.pccm.program import PanelCaps, load_program_file
from carecoord.pccm.ranking import Directory, decide
from carecoord.pccm.service import PccmService
from carecoord.settings import Settings
from carecoord.transitions.handlers import automation_store

RESULTS = Path(__file__).parent / "results"
PROGRAM = Path(__file__).resolve().parents[1] / "config" / "pccm" / "default.yaml"
#: North Carolina's bounding box, and a denser "urban" box (the Triangle).
STATE = ((33.85, 36.55), (-84.3, -75.6))
URBAN = ((35.6, 36.1), (-79.1, -78.4))
TYPES = [("general", 0, 130, "207Q00000X")] * 6 + [
    ("internal", 18, 130, "207R00000X"),
    ("internal", 18, 130, "207R00000X"),
    ("pediatrics", 0, 20, "208000000X"),
    ("obgyn", 12, 130, "207V00000X"),
]
LANGS = ["es", "vi", "zh", "ar"]


def _point(rng: random.Random) -> tuple[float, float]:
    box = URBAN if rng.random() < 0.33 else STATE
    return rng.uniform(*box[0]), rng.uniform(*box[1])


def make_pcps(n: int, rng: random.Random) -> list[Pcp]:
    pcps = []
    for i in range(n):
        pcp_type, lo, hi, _ = rng.choice(TYPES)
        accepting = rng.choices(
            [Accepting.NEW, Accepting.EXISTING_ONLY, Accepting.EXISTING_AND_FAMILY, Accepting.NONE],
            [80, 8, 7, 5],
        )[0]
        pcps.append(
            Pcp(
                id=f"pr-{i:05d}",
                pcp_type=pcp_type,
                min_age=lo,
                max_age=hi,
                sexes=frozenset({"female"})
                if pcp_type == "obgyn"
                else frozenset({"male", "female", "other", "unknown"}),
                accepting=accepting,
                practice=f"org-{i // 8:04d}",
                practitioner=f"dr-{i:05d}",
                location=_point(rng),
                languages=frozenset(rng.sample(LANGS, 1)) if rng.random() < 0.15 else frozenset(),
            )
        )
    return pcps


def make_members(n: int, pcps: list[Pcp], rng: random.Random) -> list[Member]:
    members = []
    for i in range(n):
        history = rng.choice(pcps).id if rng.random() < 0.3 else None
        family = (f"m-{rng.randrange(n):06d}",) if rng.random() < 0.2 else ()
        members.append(
            Member(
                id=f"m-{i:06d}",
                age=rng.randrange(0, 90),
                sex=rng.choice(["female", "male"]),
                location=_point(rng) if rng.random() < 0.97 else None,
                languages=(rng.choice(LANGS),) if rng.random() < 0.1 else (),
                history_pcp=history,
                family=family,
                family_history_pcps=(rng.choice(pcps).id,) if family and rng.random() < 0.5 else (),
            )
        )
    return members


def bench_domain(n_members: int, n_pcps: int, cap: int) -> dict[str, Any]:
    rng = random.Random(7)
    program = load_program_file(PROGRAM).model_copy(update={"caps": PanelCaps(per_pcp=cap)})
    pcps = make_pcps(n_pcps, rng)
    members = make_members(n_members, pcps, rng)
    start = time.perf_counter()
    directory = Directory(pcps)
    built = time.perf_counter() - start
    panels = Panels()
    rules: dict[str, int] = {}
    start, cpu = time.perf_counter(), time.process_time()
    for m in members:
        d = decide(m, directory, panels, program)
        if d.pcp is not None:
            panels.add(m.id, directory.pcps[d.pcp])
        rules[d.rule or "unassigned"] = rules.get(d.rule or "unassigned", 0) + 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "members": n_members,
        "pcps": n_pcps,
        "cap_per_pcp": cap,
        "cpu_s": round(cpu, 2),
        "members_per_cpu_s": round(n_members / cpu),
        "directory_build_s": round(built, 3),
        "seconds": round(elapsed, 2),
        "members_per_s": round(n_members / elapsed),
        "per_rule": dict(sorted(rules.items())),
    }


def _fhir_world(n_members: int, n_pcps: int, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n_pcps):
        lat, lon = _point(rng)
        _, _, _, code = rng.choice(TYPES)
        out += [
            {"resourceType": "Practitioner", "id": f"dr-{i:05d}",
             "name": [{"family": f"Doc{i}", "prefix": ["Dr"]}]},
            {"resourceType": "Location", "id": f"loc-{i:05d}",
             "position": {"latitude": lat, "longitude": lon}},
            {
                "resourceType": "PractitionerRole", "id": f"pr-{i:05d}", "active": True,
                "practitioner": {"reference": f"Practitioner/dr-{i:05d}"},
                "organization": {"reference": f"Organization/org-{i // 8:04d}"},
                "location": [{"reference": f"Location/loc-{i:05d}"}],
                "specialty": [{"coding": [{"system": "http://nucc.org/provider-taxonomy",
                                           "code": code}]}],
            },
        ]  # fmt: skip
    for i in range(n_members):
        lat, lon = _point(rng)
        pid = f"m-{i:06d}"
        out += [
            {
                "resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]),
                "birthDate": f"{rng.randrange(1940, 2024)}-0{rng.randrange(1, 10)}-15",
                "address": [{"use": "home", "line": [f"{i} Main St"], "postalCode": "27601",
                             "extension": [{
                                 "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                                 "extension": [{"url": "latitude", "valueDecimal": lat},
                                               {"url": "longitude", "valueDecimal": lon}]}]}],
            },
            {
                "resourceType": "Coverage", "id": f"cov-{pid}", "status": "active",
                "beneficiary": {"reference": f"Patient/{pid}"},
                "payor": [{"reference": "Organization/state"}],
                "class": [{"type": {"coding": [{"code": "plan"}]}, "value": "MEDICAID-PCCM"}],
            },
        ]  # fmt: skip
        if rng.random() < 0.3:
            out.append({
                "resourceType": "Encounter", "id": f"enc-{pid}", "status": "finished",
                "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"},
                "participant": [{"individual": {
                    "reference": f"Practitioner/dr-{rng.randrange(n_pcps):05d}"}}],
                "period": {"start": "2026-03-01", "end": "2026-03-01"},
            })  # fmt: skip
    return out


def bench_batch(n_members: int, n_pcps: int, url: str | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pccm-"))
    try:
        url = url or f"sqlite:///{folder / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        store = automation_store(Settings(database_url=url, data_dir=folder), engine)
        program = load_program_file(PROGRAM).model_copy(update={"accepting_when_unstated": True})
        resources = _fhir_world(n_members, n_pcps, random.Random(11))
        start = time.perf_counter()
        for i in range(0, len(resources), 500):
            chunk = resources[i : i + 500]
            store.write(lambda w, c=chunk: [w.update(r["resourceType"], r["id"], r) for r in c])
        if engine.dialect.name == "postgresql":
            # Statistics, as autovacuum would have gathered by the time a batch runs.
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        loaded = time.perf_counter() - start
        # The fixture's dicts are no part of a batch run: leaving them alive would make every
        # full garbage collection during the timed batch walk them too.
        del resources
        gc.collect()
        service = PccmService(store, {"default": program})
        start, cpu = time.perf_counter(), time.process_time()
        batch = service.run_batch("default")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        written = sum(o.written for o in batch.outcomes)
        start = time.perf_counter()
        again = service.run_batch("default")
        rerun = time.perf_counter() - start
        engine.dispose()
        return {
            "database": engine.dialect.name,
            "members": n_members,
            "pcps": n_pcps,
            "fixture_load_s": round(loaded, 1),
            "written": written,
            "cpu_s": round(cpu, 2),
            "seconds": round(elapsed, 2),
            "members_per_s": round(n_members / elapsed),
            "members_per_cpu_s": round(n_members / cpu),
            "rerun_s": round(rerun, 2),
            "rerun_written": sum(o.written for o in again.outcomes),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--pcps", type=int, default=2_000)
    parser.add_argument("--cap", type=int, default=80, help="Panel cap in the domain run.")
    parser.add_argument("--batch-members", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-domain", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {args.core})
    result: dict[str, Any] = {"cpu": cpu_model()}
    if not args.skip_domain:
        result["domain"] = bench_domain(args.members, args.pcps, args.cap)
        print(f"domain: {json.dumps(result['domain'])}", flush=True)
    if not args.skip_batch:
        result["batch"] = bench_batch(args.batch_members, args.pcps, args.database_url)
        print(f"batch:  {json.dumps(result['batch'])}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pccm.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
