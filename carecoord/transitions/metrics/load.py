"""Loading the FHIR data of the program metrics through the store, under the caller's policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import orjson

from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.store import FhirStore
from carecoord.transitions.codes import (
    CAREPLAN_IDENTIFIER_SYSTEM,
    COMMUNICATION_CATEGORY_SYSTEM,
)
from carecoord.transitions.metrics.compute import MetricsInput
from carecoord.transitions.readmissions.config import ReadmissionConfig
from carecoord.transitions.readmissions.stays import ref_id

__all__ = ["Row", "load_metrics_input"]

Row = tuple[str, str, bytes]
_BATCH = 50


def _all(
    store: FhirStore, policy: AccessPolicy | None, res_type: str, params: Sequence[tuple[str, str]]
) -> tuple[list[Row], list[Row]]:
    """Every match (and include) of a search, following the pages."""
    matches: list[Row] = []
    included: list[Row] = []
    cursor: str | None = None
    while True:
        paged = [*params, ("_count", "500"), *([("_cursor", cursor)] if cursor else [])]
        page = store.search(store.parse(res_type, paged, policy=policy))
        matches.extend(page.matches)
        included.extend(page.included)
        cursor = page.next_cursor
        if not cursor:
            return matches, included


def _batched(values: Sequence[str]) -> list[str]:
    return [",".join(values[i : i + _BATCH]) for i in range(0, len(values), _BATCH)]


def load_metrics_input(
    store: FhirStore,
    policy: AccessPolicy | None,
    config: ReadmissionConfig,
    *,
    since: date,
    until: date,
) -> tuple[MetricsInput, list[Row]]:
    """The resources the metrics of ``since``..``until`` need, and every row read (to audit)."""
    margin = timedelta(days=config.window_days + 10)
    classes = ",".join(config.encounters.inpatient_classes)
    read: list[Row] = []
    enc_rows, _ = _all(
        store,
        policy,
        "Encounter",
        [
            ("class", classes),
            ("date", f"ge{(since - margin).isoformat()}"),
            ("date", f"le{(until + margin).isoformat()}"),
        ],
    )
    read.extend(enc_rows)
    encounters = [orjson.loads(c) for _, _, c in enc_rows]
    data = MetricsInput(encounters=encounters)
    patient_ids = sorted({p for e in encounters if (p := ref_id(e.get("subject"), "Patient"))})
    for ids in _batched(patient_ids):
        rows, _ = _all(store, policy, "Patient", [("_id", ids)])
        read.extend(rows)
        data.patients.update({rid: orjson.loads(c) for _, rid, c in rows})
    encounter_ids = sorted(str(e["id"]) for e in encounters)
    for ids in _batched(encounter_ids):
        idents = ",".join(f"{CAREPLAN_IDENTIFIER_SYSTEM}|{i}" for i in ids.split(","))
        plans, tasks = _all(
            store, policy, "CarePlan", [("identifier", idents), ("_revinclude", "Task:based-on")]
        )
        read.extend(plans)
        read.extend(tasks)
        data.care_plans.extend(orjson.loads(c) for _, _, c in plans)
        data.tasks.extend(orjson.loads(c) for t, _, c in tasks if t == "Task")
        refs = ",".join(f"Encounter/{i}" for i in ids.split(","))
        risks, _ = _all(store, policy, "RiskAssessment", [("encounter", refs)])
        read.extend(risks)
        data.risk_assessments.extend(orjson.loads(c) for _, _, c in risks)
    task_ids = sorted(str(t["id"]) for t in data.tasks)
    category = f"{COMMUNICATION_CATEGORY_SYSTEM}|contact-attempt"
    for ids in _batched(task_ids):
        refs = ",".join(f"Task/{i}" for i in ids.split(","))
        comms, _ = _all(
            store, policy, "Communication", [("based-on", refs), ("category", category)]
        )
        read.extend(comms)
        data.communications.extend(orjson.loads(c) for _, _, c in comms)
    return data, read
