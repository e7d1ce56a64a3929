"""HL7 v2 ADT after a pull: the message updates the pulled Patient and Encounter it identifies
(by MRN and visit number), it does not make a second copy (ADR 0021)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from carecoord.events import AdtIntake
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.tables import resources
from carecoord.sync.identity import ReferenceMapper, local_id
from carecoord.sync.upsert import from_source, upsert_from_source
from tests.events import fhir_events as fe
from tests.events.conftest import SOURCE
from tests.events.messages import discharge

EHR = "ehr"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1.1"
VISIT_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1.2"


def pulled(store: FhirStore) -> None:
    """What a pull of connection ``ehr`` stores for patient p1 and encounter e1."""
    mapper = ReferenceMapper(EHR, "https://ehr.example.org/fhir")
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "1"},
        "identifier": [{"system": MRN_SYSTEM, "value": "MRN12345"}],
        "name": [{"family": "Doe"}],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "meta": {"versionId": "1"},
        "identifier": [{"system": VISIT_SYSTEM, "value": "V0001"}],
        "status": "in-progress",
        "class": {"system": fe.ACT_CODE, "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
    }
    items = [from_source(mapper, patient), from_source(mapper, encounter)]

    def work(w: Writer) -> None:
        upsert_from_source(w, EHR, items, now=w.now)

    store.write(work)


def count(engine: Engine, res_type: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(resources).where(resources.c.res_type == res_type)
            ).scalar_one()
        )


def test_a_discharge_after_a_pull_updates_the_pulled_encounter(
    intake: AdtIntake, store: FhirStore, engine: Engine
) -> None:
    pulled(store)
    result = intake.handle(discharge())
    assert result.ack_code == "AA"
    assert (count(engine, "Patient"), count(engine, "Encounter")) == (1, 1)
    encounter_id = local_id(EHR, "Encounter", "e1")
    assert result.produced == (f"Patient/{local_id(EHR, 'Patient', 'p1')}",
                               f"Encounter/{encounter_id}")  # fmt: skip
    stored = store.read("Encounter", encounter_id)
    assert stored.content is not None
    body: dict[str, Any] = orjson.loads(stored.content)
    assert body["status"] == "finished"
    assert body["subject"] == {"reference": f"Patient/{local_id(EHR, 'Patient', 'p1')}"}
    jobs = fe.automation_jobs(engine)
    assert [(j["event"], j["version"], j["source"]) for j in jobs] == [("discharge", 2, SOURCE)]
