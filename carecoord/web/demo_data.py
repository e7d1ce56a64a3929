"""Synthetic demo data made by code (nothing downloaded): a hospital and two clinics, nurse case
managers, PCPs with clinic locations, a supervisor, a pharmacist and a scheduler, patients with
their care teams, and inpatient stays (discharges and one readmission) relative to ``now``.

Every resource has a fixed id, so loading twice changes nothing. Encounters are written through
the store so that the discharge automation (an ``automation.encounter`` job per version) builds
the checklists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from carecoord.cases.config import CASE_MODEL_SYSTEM
from carecoord.cases.resources import PHASE_EXTENSION
from carecoord.fhir.store import FhirStore, Writer
from carecoord.transitions.codes import CARE_ROLE_SYSTEM, CareRole

__all__ = [
    "DEMO_NURSE",
    "DEMO_PCP",
    "DEMO_SUPERVISOR",
    "DemoSummary",
    "demo_directory",
    "demo_patients",
    "demo_stays",
    "load_demo",
]

HOSPITAL: Final = "demo-riverside-hospital"
CLINICS: Final = ("demo-northside-clinic", "demo-southside-clinic")
WARD: Final = "demo-ward-4b"
DEMO_NURSE: Final = "demo-nurse-1"
DEMO_PCP: Final = "demo-pcp-1"
DEMO_SUPERVISOR: Final = "demo-supervisor-1"
_NURSES: Final = (
    (DEMO_NURSE, "Kim", "Okafor"),
    ("demo-nurse-2", "Luis", "Fernández"),
    ("demo-nurse-3", "Priya", "Raman"),
)
_PCPS: Final = (
    (DEMO_PCP, "Helen", "Marsh", CLINICS[0]),
    ("demo-pcp-2", "Omar", "Haddad", CLINICS[0]),
    ("demo-pcp-3", "Grace", "Lindqvist", CLINICS[1]),
    ("demo-pcp-4", "Tomás", "Ibarra", CLINICS[1]),
)
_OTHERS: Final = (
    (DEMO_SUPERVISOR, "Dana", "Whitfield", CareRole.SUPERVISOR),
    ("demo-pharmacist-1", "Ade", "Balogun", CareRole.PHARMACIST),
    ("demo-scheduler-1", "Ruth", "Castellano", CareRole.SCHEDULER),
    ("demo-social-worker-1", "Mei", "Tanaka", CareRole.SOCIAL_WORKER),
)
_GIVEN: Final = (
    "Avery",
    "Blake",
    "Carmen",
    "Dmitri",
    "Esther",
    "Farah",
    "Gideon",
    "Hana",
    "Ivan",
    "Joy",
    "Kwame",
    "Lena",
    "Marco",
    "Nadia",
    "Oscar",
    "Pilar",
    "Quinn",
    "Rosa",
    "Samir",
    "Tess",
    "Uma",
    "Victor",
    "Wanda",
    "Xavier",
    "Yara",
    "Zane",
)
_FAMILY: Final = (
    "Abernathy",
    "Bellweather",
    "Castellanos",
    "Drummond",
    "Eastwick",
    "Fairbanks",
    "Galloway",
    "Hollister",
    "Ingersoll",
    "Jablonski",
    "Kettering",
    "Lockhart",
    "Montoya",
    "Northcott",
    "Oyelaran",
    "Pemberton",
    "Quarles",
    "Ravenscroft",
    "Szymanski",
    "Thorncastle",
)
_CLINIC_NAMES: Final = ("Northside Family Clinic", "Southside Health Center")
_TERMINOLOGY: Final = "http://terminology.hl7.org/CodeSystem"
_ORG_TYPE: Final = f"{_TERMINOLOGY}/organization-type"
_ADMIT_SOURCE: Final = f"{_TERMINOLOGY}/admit-source"
_DISPOSITION: Final = f"{_TERMINOLOGY}/discharge-disposition"
_BCP47: Final = "urn:ietf:bcp:47"
_POSITIONS: Final = {
    HOSPITAL: (40.7420, -73.9890),
    CLINICS[0]: (40.7831, -73.9712),
    CLINICS[1]: (40.6782, -73.9442),
}


def _role_code(role: CareRole) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CARE_ROLE_SYSTEM, "code": role.value}]}]


def _practitioner(pid: str, given: str, family: str, prefix: str | None) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official", "family": family, "given": [given]}
    if prefix:
        name["prefix"] = [prefix]
    return {"resourceType": "Practitioner", "id": pid, "active": True, "name": [name]}


def demo_directory() -> list[dict[str, Any]]:
    """Organisations, locations (with positions), practitioners and their roles."""
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Organization",
            "id": HOSPITAL,
            "active": True,
            "name": "Riverside Hospital (demo)",
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                            "code": "prov",
                        }
                    ]
                }
            ],
        }
    ]
    for clinic, name in zip(
        CLINICS, ("Northside Family Clinic", "Southside Health Center"), strict=True
    ):
        out.append(
            {"resourceType": "Organization", "id": clinic, "active": True, "name": f"{name} (demo)"}
        )
    for org, (lat, lon) in _POSITIONS.items():
        out.append(
            {
                "resourceType": "Location",
                "id": f"{org}-site",
                "status": "active",
                "name": "Main site",
                "managingOrganization": {"reference": f"Organization/{org}"},
                "position": {"latitude": lat, "longitude": lon},
            }
        )
    out.append(
        {
            "resourceType": "Location",
            "id": WARD,
            "status": "active",
            "name": "Ward 4B (medicine)",
            "managingOrganization": {"reference": f"Organization/{HOSPITAL}"},
            "partOf": {"reference": f"Location/{HOSPITAL}-site"},
            "position": {"latitude": _POSITIONS[HOSPITAL][0], "longitude": _POSITIONS[HOSPITAL][1]},
        }
    )

    def role(pid: str, role: CareRole, org: str, location: str) -> dict[str, Any]:
        return {
            "resourceType": "PractitionerRole",
            "id": f"{pid}-role",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{pid}"},
            "organization": {"reference": f"Organization/{org}"},
            "location": [{"reference": f"Location/{location}"}],
            "code": _role_code(role),
        }

    for pid, given, family in _NURSES:
        out.append(_practitioner(pid, given, family, None))
        out.append(role(pid, CareRole.NURSE_CASE_MANAGER, HOSPITAL, WARD))
    for pid, given, family, clinic in _PCPS:
        out.append(_practitioner(pid, given, family, "Dr."))
        out.append(role(pid, CareRole.PCP, clinic, f"{clinic}-site"))
    for pid, given, family, care_role in _OTHERS:
        out.append(_practitioner(pid, given, family, None))
        out.append(role(pid, care_role, HOSPITAL, WARD))
    return out


def demo_patients(count: int, *, now: datetime, seed: int = 9) -> list[dict[str, Any]]:
    """``count`` patients with names, birth dates, addresses, a PCP (most of them) and a care
    team (nurse case manager, PCP)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        pid = f"demo-patient-{i + 1:03d}"
        given = _GIVEN[i % len(_GIVEN)]
        family = _FAMILY[(i * 7 + i // len(_GIVEN)) % len(_FAMILY)]
        age_days = rng.randint(30 * 365, 88 * 365)
        pcp = _PCPS[i % len(_PCPS)][0]
        nurse = _NURSES[i % len(_NURSES)][0]
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": pid,
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": ("female", "male")[i % 2],
            "birthDate": (now - timedelta(days=age_days)).date().isoformat(),
            "address": [{"city": "New York", "state": "NY", "postalCode": f"100{i % 90 + 10}"}],
            "communication": [
                {
                    "language": {
                        "coding": [
                            {"system": "urn:ietf:bcp:47", "code": "es" if i % 9 == 4 else "en"}
                        ]
                    },
                    "preferred": True,
                }
            ],
        }
        if i % 10 != 7:  # a few without a PCP: the PCCM rules can assign one
            patient["generalPractitioner"] = [{"reference": f"Practitioner/{pcp}"}]
        out.append(patient)
        if i % 5 < 3:
            out.append(_episode(pid, i, nurse, now))
        out.extend(_conditions(pid, i, now))
        out.append(
            {
                "resourceType": "CareTeam",
                "id": f"{pid}-team",
                "status": "active",
                "name": "Care coordination team",
                "subject": {"reference": f"Patient/{pid}"},
                "participant": [
                    {
                        "role": _role_code(CareRole.NURSE_CASE_MANAGER),
                        "member": {"reference": f"Practitioner/{nurse}"},
                    },
                    {
                        "role": _role_code(CareRole.PCP),
                        "member": {"reference": f"Practitioner/{pcp}"},
                    },
                ],
            }
        )
    return out


_ICD10: Final = "http://hl7.org/fhir/sid/icd-10-cm"
_CONDITIONS: Final = (
    ("I50.9", "Heart failure, unspecified"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("N18.4", "Chronic kidney disease, stage 4"),
)


def _conditions(pid: str, i: int, now: datetime) -> list[dict[str, Any]]:
    """Chronic conditions (they drive the LACE comorbidity points): none, one, or several."""
    count = (0, 1, 3, 4)[i % 4]
    onset = (now - timedelta(days=400 + i)).date().isoformat()
    return [
        {
            "resourceType": "Condition",
            "id": f"{pid}-condition-{n + 1}",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": f"{_TERMINOLOGY}/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": f"{_TERMINOLOGY}/condition-category",
                            "code": "problem-list-item",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": _ICD10, "code": code, "display": text}], "text": text},
            "subject": {"reference": f"Patient/{pid}"},
            "onsetDateTime": onset,
        }
        for n, (code, text) in enumerate(_CONDITIONS[:count])
    ]


_MODELS: Final = ("clinical", "brokerage", "strengths-based")


def _episode(pid: str, i: int, nurse: str, now: datetime) -> dict[str, Any]:
    """A case in intake, managed by the patient's nurse case manager."""
    start = (now - timedelta(days=3 + i % 20)).date().isoformat()
    model = _MODELS[i % len(_MODELS)]
    return {
        "resourceType": "EpisodeOfCare",
        "id": f"demo-case-{i + 1:03d}",
        "extension": [
            {
                "url": PHASE_EXTENSION,
                "extension": [
                    {"url": "phase", "valueCode": "intake"},
                    {"url": "period", "valuePeriod": {"start": start}},
                ],
            }
        ],
        "status": "active",
        "type": [
            {
                "coding": [{"system": CASE_MODEL_SYSTEM, "code": model}],
                "text": model.replace("-", " ").capitalize(),
            }
        ],
        "patient": {"reference": f"Patient/{pid}"},
        "managingOrganization": {"reference": f"Organization/{HOSPITAL}"},
        "period": {"start": start},
        "careManager": {"reference": f"Practitioner/{nurse}"},
    }


@dataclass(frozen=True)
class Stay:
    """One inpatient stay of the demo."""

    id: str
    patient: str
    admitted: datetime
    discharged: datetime | None
    reason: str


_REASONS: Final = (
    "Heart failure exacerbation",
    "Community-acquired pneumonia",
    "COPD exacerbation",
    "Hip fracture repair",
    "Sepsis, urinary source",
    "Diabetic ketoacidosis",
)


def demo_stays(patients: int, *, now: datetime, seed: int = 9) -> list[Stay]:
    """Recent discharges (0-9 days ago, the live checklists), older ones over five months (for the
    dashboard), and one readmission: the first patient back 12 days after a discharge."""
    rng = random.Random(seed)
    stays: list[Stay] = []
    recent = min(patients, 10)
    for i in range(recent):
        days_ago = [1, 0, 2, 3, 5, 1, 4, 6, 8, 9][i]
        out = (now - timedelta(days=days_ago)).replace(hour=15, minute=30, second=0, microsecond=0)
        if out > now:
            out -= timedelta(days=1)
        length = rng.randint(2, 7)
        stays.append(
            Stay(
                f"demo-stay-{i + 1:03d}-a",
                f"demo-patient-{i + 1:03d}",
                out - timedelta(days=length),
                out,
                _REASONS[i % len(_REASONS)],
            )
        )
    older = range(recent, patients)
    for j, i in enumerate(older):
        if j >= 30:
            break
        days_ago = 20 + (j * 41) % 130
        out = (now - timedelta(days=days_ago)).replace(hour=11, minute=0, second=0, microsecond=0)
        length = rng.randint(2, 9)
        stays.append(
            Stay(
                f"demo-stay-{i + 1:03d}-a",
                f"demo-patient-{i + 1:03d}",
                out - timedelta(days=length),
                out,
                _REASONS[i % len(_REASONS)],
            )
        )
        if j % 6 == 0:  # some of the older discharges came back within 30 days
            back = out + timedelta(days=9 + j % 15)
            stays.append(
                Stay(
                    f"demo-stay-{i + 1:03d}-b",
                    f"demo-patient-{i + 1:03d}",
                    back,
                    back + timedelta(days=4)
                    if back + timedelta(days=4) < now - timedelta(days=10)
                    else None,
                    _REASONS[(i + 1) % len(_REASONS)],
                )
            )
    if patients:
        first = stays[0]
        earlier_out = first.admitted - timedelta(days=12)
        stays.append(
            Stay(
                "demo-stay-001-0",
                first.patient,
                earlier_out - timedelta(days=5),
                earlier_out,
                "Heart failure exacerbation",
            )
        )
    return stays


def _before(moment: datetime, now: datetime) -> datetime | None:
    return moment if moment < now else None


def encounter_of(stay: Stay) -> dict[str, Any]:
    """The Encounter of a stay: finished with a discharge home, or still in progress."""
    period: dict[str, str] = {"start": stay.admitted.isoformat()}
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": stay.id,
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
        "type": [{"text": "Inpatient admission"}],
        "subject": {"reference": f"Patient/{stay.patient}"},
        "reasonCode": [{"text": stay.reason}],
        "serviceProvider": {"reference": f"Organization/{HOSPITAL}"},
        "location": [{"location": {"reference": f"Location/{WARD}"}}],
        "hospitalization": {
            "admitSource": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}
                ]
            }
        },
        "period": period,
    }
    if stay.discharged is not None:
        body["status"] = "finished"
        period["end"] = stay.discharged.isoformat()
        body["hospitalization"]["dischargeDisposition"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                    "code": "home",
                }
            ]
        }
    return body


@dataclass
class DemoSummary:
    """What was loaded."""

    resources: int = 0
    patients: int = 0
    stays: int = 0
    discharges: int = 0
    patient_ids: list[str] = field(default_factory=list)


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _put(w: Writer, body: dict[str, Any]) -> None:
    res_type, rid = body["resourceType"], body["id"]
    if not w.find(res_type, [("_id", rid)], limit=1):
        w.update(res_type, rid, body)


def _put_all(w: Writer, bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        _put(w, body)


def load_demo(store: FhirStore, *, now: datetime, patients: int = 40) -> DemoSummary:
    """Write the directory and patients (as the system), then the stays in time order."""
    summary = DemoSummary()
    directory = demo_directory()
    people = demo_patients(patients, now=now)
    for chunk in (directory, *_chunks(people, 200)):
        store.write(lambda w, chunk=chunk: _put_all(w, chunk))  # type: ignore[misc]
    summary.resources = len(directory) + len(people)
    summary.patients = patients
    summary.patient_ids = [p["id"] for p in people if p["resourceType"] == "Patient"]
    stays = sorted(demo_stays(patients, now=now), key=lambda s: s.admitted)
    for stay in stays:
        store.write(lambda w, stay=stay: _put_all(w, [encounter_of(stay)]))  # type: ignore[misc]
    summary.stays = len(stays)
    summary.discharges = sum(1 for s in stays if s.discharged is not None)
    return summary
