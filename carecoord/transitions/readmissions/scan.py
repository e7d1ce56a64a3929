"""Scanning stored history: every readmission (and optionally each discharge's risk), idempotent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import orjson

from carecoord.fhir.store import FhirStore, Writer
from carecoord.transitions.readmissions.config import ReadmissionConfig
from carecoord.transitions.readmissions.service import patient_findings, record_finding
from carecoord.transitions.readmissions.stays import index_ineligibility, ref_id

__all__ = ["ScanSummary", "inpatient_patients", "scan"]

#: Scores one discharge inside the patient's transaction (``assess_discharge`` with its config).
ScoreHook = Callable[[Writer, str, datetime], object]


@dataclass
class ScanSummary:
    """What a scan found and wrote."""

    patients: int = 0
    stays: int = 0
    index_discharges: int = 0
    readmissions: int = 0
    planned: int = 0
    review_tasks: int = 0
    scored_discharges: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def inpatient_patients(store: FhirStore, config: ReadmissionConfig) -> list[str]:
    """Ids of the patients that have an inpatient Encounter, sorted."""
    classes = ",".join(config.encounters.inpatient_classes)
    patients: set[str] = set()
    cursor: str | None = None
    while True:
        params = [("class", classes), ("_count", "1000")]
        if cursor:
            params.append(("_cursor", cursor))
        page = store.search(store.parse("Encounter", params))
        for _, _, content in page.matches:
            pid = ref_id(orjson.loads(content).get("subject"), "Patient")
            if pid:
                patients.add(pid)
        cursor = page.next_cursor
        if not cursor:
            return sorted(patients)


def scan(
    store: FhirStore,
    config: ReadmissionConfig,
    *,
    now: datetime,
    review_tasks: bool = False,
    score: ScoreHook | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanSummary:
    """Find every readmission in the stored data, one transaction per patient.

    ``review_tasks``: also open review Tasks (off by default: history is for the record and the
    metrics, not for today's worklists). ``score``: score every discharge too.
    """
    summary = ScanSummary()
    patients = inpatient_patients(store, config)

    def one(w: Writer, patient_id: str) -> ScanSummary:
        part = ScanSummary(patients=1)
        stays, findings = patient_findings(w, patient_id, config)
        part.stays = len(stays)
        part.index_discharges = sum(1 for s in stays if index_ineligibility(s, config) is None)
        for finding in findings:
            found = record_finding(w, finding, now=now, config=config, review_task=review_tasks)
            part.readmissions += 0 if found.planned else 1
            part.planned += 1 if found.planned else 0
            part.review_tasks += 1 if found.task_id else 0
        if score is not None:
            for stay in stays:
                for encounter in stay.parts:
                    if encounter.end is not None:
                        score(w, encounter.id, now)
                        part.scored_discharges += 1
        return part

    for done, patient_id in enumerate(patients, 1):
        part = store.write(partial(one, patient_id=patient_id))
        for key, value in part.as_json().items():
            setattr(summary, key, getattr(summary, key) + value)
        if progress is not None:
            progress(done, len(patients))
    return summary
