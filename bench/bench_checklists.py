"""Checklist benchmark: the pure domain core building checklists for 10,000 discharges.

    python bench/bench_checklists.py [--config config] [--discharges 10000] [--reps 5] [--core 0]

Discharges are varied (dates over four years, all variants, risk bands, languages, conditions,
the default organisation and one overlay) and generated with a fixed seed before timing. Each
figure is the best of ``--reps`` passes over all of them, in-process on one core; template loading
is reported apart (it happens once at start-up). Results go to ``bench/results/checklists.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from carecoord.transitions.checklist import DischargeFacts, build_checklist
from carecoord.transitions.tcm import Destination
from carecoord.transitions.templates import TemplateSet, load_templates

RESULTS = Path(__file__).parent / "results"
CLASSES = ["IMP"] * 6 + ["OBSENC"] * 2 + ["EMER"] * 3 + ["AMB"]
DESTINATIONS = (
    [Destination.HOME] * 10
    + [Destination.UNKNOWN] * 6
    + [Destination.HOME_HEALTH] * 3
    + [Destination.SNF] * 2
    + [Destination.AMA, Destination.EXPIRED, Destination.ACUTE_TRANSFER, Destination.HOSPICE]
)
LANGUAGES = [None, "en", "en-US", "es", "es-MX", "vi", "zh-Hant"]
BANDS = [None, "low", "moderate", "high"]


def discharges(n: int, seed: int = 5) -> list[DischargeFacts]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        discharged = start + timedelta(minutes=rng.randrange(4 * 365 * 24 * 60))
        out.append(
            DischargeFacts(
                encounter_id=f"enc-{i}",
                patient_id=f"pat-{i % 3000}",
                encounter_class=rng.choice(CLASSES),
                discharged=discharged,
                admitted=discharged - timedelta(days=rng.randrange(0, 12)),
                destination=rng.choice(DESTINATIONS),
                organization=rng.choice([None, "org-a", "acme"]),
                patient_language=rng.choice(LANGUAGES),
                equipment_ordered=rng.random() < 0.2,
                pending_results=rng.random() < 0.3,
                home_health=rng.random() < 0.1,
                risk_band=rng.choice(BANDS),
            )
        )
    return out


def with_example_overlay(config: Path) -> tuple[Path, float]:
    """A copy of ``config/transitions`` with the shipped overlay example as org ``acme``."""
    folder = Path(tempfile.mkdtemp(prefix="bench-checklists-"))
    shutil.copytree(config / "transitions", folder / "transitions")
    orgs = folder / "transitions" / "organizations"
    shutil.copy(orgs / "example-org.yaml.example", orgs / "acme.yaml")
    return folder, 0.0


def run(templates: TemplateSet, facts: list[DischargeFacts]) -> tuple[float, int, int]:
    begin = time.perf_counter()
    made = items = 0
    for f in facts:
        checklist = build_checklist(f, templates.for_organization(f.organization))
        if checklist is not None:
            made += 1
            items += len(checklist.items)
    return time.perf_counter() - begin, made, items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config"))
    parser.add_argument("--discharges", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    args = parser.parse_args()
    if args.core is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {args.core})

    folder, _ = with_example_overlay(args.config)
    begin = time.perf_counter()
    templates = load_templates(folder)
    load_ms = (time.perf_counter() - begin) * 1e3
    shutil.rmtree(folder, ignore_errors=True)
    facts = discharges(args.discharges)

    first, made, items = run(templates, facts)  # cold: holiday sets filled per year here
    best = min(run(templates, facts)[0] for _ in range(args.reps))
    summary = {
        "discharges": len(facts),
        "checklists": made,
        "items": items,
        "template_load_ms": round(load_ms, 1),
        "cold_pass_s": round(first, 3),
        "best_pass_s": round(best, 3),
        "us_per_discharge": round(best / len(facts) * 1e6, 1),
        "discharges_per_s": round(len(facts) / best),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "checklists.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
