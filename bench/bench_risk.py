"""Readmission risk and detection benchmark: LACE/HOSPITAL scoring and 30-day detection.

    python bench/bench_risk.py [--encounters 100000] [--service-encounters 20000] [--core 0]

Two measurements, in-process on one core:

- ``domain``: the pure rules over ``--encounters`` synthetic Encounters (5 per patient: inpatient
  stays, ED visits, clinic visits; each patient with conditions, labs and a procedure). Detection
  chains every patient's stays and finds the readmissions; scoring computes both scores for every
  inpatient discharge from the patient's resources. Reported as encounters/s.
- ``service``: the same through the FHIR store on SQLite (a temporary database): for every
  inpatient encounter, ``detect_on_admission`` then ``assess_discharge`` in one write transaction
  each, as the automation handler does (reads through the Writer, RiskAssessments and review Tasks
  written). Reported as encounters of the data set per second and as events per second.

Results go to ``bench/results/risk.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common import cpu_model

from carecoord.db import make_engine
from carecoord.fhir.store import FhirStore
from carecoord.migrate import upgrade
from carecoord.transitions.readmissions import chain_stays, detect_on_admission, find_readmissions
from carecoord.transitions.readmissions.stays import parse_encounter
from carecoord.transitions.risk import assess_discharge, load_risk_config
from carecoord.transitions.risk.facts import discharge_inputs
from carecoord.transitions.risk.service import score_inputs

CONFIG = Path(__file__).resolve().parents[1] / "config"
RESULTS = Path(__file__).parent / "results"
PER_PATIENT = 5
CONDITIONS = [
    ("http://snomed.info/sct", "88805009"),
    ("http://snomed.info/sct", "44054006"),
    ("http://snomed.info/sct", "185086009"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "I21.4"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "N18.4"),
    ("http://snomed.info/sct", "38341003"),
]


def patient_bundle(i: int, rng: random.Random) -> list[dict[str, Any]]:
    """One patient's Encounters (5), Conditions (2), labs (2) and a Procedure."""
    pid = f"p{i}"
    day = datetime(2024, 1, 1, 8, tzinfo=UTC) + timedelta(days=rng.randrange(300))
    out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": pid}]
    for k in range(PER_PATIENT):
        cls = ("IMP", "IMP", "EMER", "AMB", "IMP")[k]
        length = timedelta(days=rng.randrange(1, 9)) if cls == "IMP" else timedelta(hours=3)
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": f"{pid}-e{k}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
            "subject": {"reference": f"Patient/{pid}"},
            "serviceProvider": {"reference": f"Organization/h{i % 7}"},
            "period": {"start": day.isoformat(), "end": (day + length).isoformat()},
        }
        if cls == "IMP" and rng.random() < 0.5:
            enc["priority"] = {"coding": [{"code": rng.choice(["EM", "EL"])}]}
        out.append(enc)
        day += length + timedelta(days=rng.randrange(3, 40))
    for c in range(2):
        system, code = rng.choice(CONDITIONS)
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{pid}-c{c}",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": system, "code": code}]},
                "onsetDateTime": "2020-01-01",
            }
        )
    first = out[1]["period"]
    for code, value, unit in (
        ("718-7", rng.uniform(9, 15), "g/dL"),
        ("2951-2", rng.uniform(128, 142), "mmol/L"),
    ):
        out.append(
            {
                "resourceType": "Observation",
                "id": f"{pid}-{code}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{pid}-e0"},
                "effectiveDateTime": first["end"],
                "valueQuantity": {"value": round(value, 1), "unit": unit},
            }
        )  # fmt: skip
    out.append(
        {
            "resourceType": "Procedure",
            "id": f"{pid}-pr",
            "status": "completed",
            "code": {"text": "procedure"},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/{pid}-e0"},
            "performedDateTime": first["start"],
        }
    )
    return out


def domain(encounters: int, config: Any) -> dict[str, Any]:
    rng = random.Random(7)
    zone = ZoneInfo(config.timezone)
    patients = [patient_bundle(i, rng) for i in range(encounters // PER_PATIENT)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    start = time.perf_counter()
    readmissions = 0
    for bundle in patients:
        facts = [parse_encounter(r, zone) for r in bundle if r["resourceType"] == "Encounter"]
        readmissions += len(
            find_readmissions(chain_stays(facts, config.readmissions), config.readmissions)
        )
    detect_s = time.perf_counter() - start
    start = time.perf_counter()
    scored = 0
    for bundle in patients:
        facts = [parse_encounter(r, zone) for r in bundle if r["resourceType"] == "Encounter"]
        kinds: dict[str, list[dict[str, Any]]] = {}
        for r in bundle:
            kinds.setdefault(r["resourceType"], []).append(r)
        for enc in facts:
            if enc.cls == "IMP":
                inputs = discharge_inputs(
                    enc.id,
                    facts,
                    kinds["Condition"],
                    kinds["Observation"],
                    kinds["Procedure"],
                    config,
                    now=now,
                )
                score_inputs(inputs, config)
                scored += 1
    score_s = time.perf_counter() - start
    return {
        "encounters": len(patients) * PER_PATIENT,
        "patients": len(patients),
        "readmissions_found": readmissions,
        "detection_encounters_per_s": round(len(patients) * PER_PATIENT / detect_s),
        "discharges_scored": scored,
        "scoring_discharges_per_s": round(scored / score_s),
        "scoring_encounters_per_s": round(len(patients) * PER_PATIENT / score_s),
    }  # fmt: skip


def service(encounters: int, config: Any) -> dict[str, Any]:
    rng = random.Random(11)
    patients = [patient_bundle(i, rng) for i in range(encounters // PER_PATIENT)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        store = FhirStore(engine, group_commit=False)
        load_start = time.perf_counter()
        for bundle in patients:

            def load(w: Any, b: list[dict[str, Any]] = bundle) -> None:
                for body in b:
                    w.update(body["resourceType"], body["id"], body)

            store.write(load)
        load_s = time.perf_counter() - load_start
        now = datetime(2026, 1, 1, tzinfo=UTC)
        inpatient = [
            r["id"]
            for b in patients
            for r in b
            if r["resourceType"] == "Encounter" and r["class"]["code"] == "IMP"
        ]
        start = time.perf_counter()
        for eid in inpatient:
            store.write(
                lambda w, e=eid: detect_on_admission(
                    w, encounter_id=e, now=now, config=config.readmissions
                )
            )
            store.write(
                lambda w, e=eid: assess_discharge(w, encounter_id=e, now=now, config=config)
            )
        elapsed = time.perf_counter() - start
        engine.dispose()
    return {
        "encounters": len(patients) * PER_PATIENT,
        "load_s": round(load_s, 1),
        "inpatient_events": len(inpatient),
        "events_per_s": round(2 * len(inpatient) / elapsed),
        "encounters_per_s": round(len(patients) * PER_PATIENT / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encounters", type=int, default=100_000)
    parser.add_argument("--service-encounters", type=int, default=20_000)
    parser.add_argument("--core", type=int, default=0, help="pin to this CPU core")
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {args.core})
    config = load_risk_config(CONFIG)
    summary: dict[str, Any] = {"cpu": cpu_model()}
    summary["domain"] = domain(args.encounters, config)
    print("domain", json.dumps(summary["domain"]), flush=True)
    if args.service_encounters:
        summary["service"] = service(args.service_encounters, config)
        print("service", json.dumps(summary["service"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "risk.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
