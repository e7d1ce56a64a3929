"""Where a patient went: discharge dispositions (HL7, NUBC, v2 0112, SNOMED CT) as a Destination."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "HL7_DISCHARGE_DISPOSITION",
    "NUBC_SYSTEMS",
    "SNOMED_CT",
    "Destination",
    "destination_of",
]


class Destination(StrEnum):
    """Where the patient went on discharge."""

    HOME = "home"
    HOME_HEALTH = "home-health"
    ASSISTED_LIVING = "assisted-living"
    NURSING_FACILITY = "nursing-facility"
    SNF = "snf"
    ACUTE_TRANSFER = "acute-transfer"
    AMA = "ama"
    EXPIRED = "expired"
    HOSPICE = "hospice"
    REHAB = "rehab"
    PSYCH = "psych"
    OTHER = "other"
    UNKNOWN = "unknown"


HL7_DISCHARGE_DISPOSITION: Final = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
#: NUBC UB-04 FL17 patient discharge status, under the names it is published with (Synthea uses
#: ``http://www.nubc.org/patient-discharge``) and HL7 v2 table 0112, which carries the same codes.
NUBC_SYSTEMS: Final = frozenset(
    {
        "https://www.nubc.org/CodeSystem/PatDischargeStatus",
        "http://www.nubc.org/CodeSystem/PatDischargeStatus",
        "http://www.nubc.org/patient-discharge",
        "https://www.nubc.org/patient-discharge",
        "http://terminology.hl7.org/CodeSystem/v2-0112",
    }
)
SNOMED_CT: Final = "http://snomed.info/sct"

_HL7: Final[dict[str, Destination]] = {
    "home": Destination.HOME,
    "alt-home": Destination.HOME,
    "other-hcf": Destination.OTHER,
    "hosp": Destination.HOSPICE,
    "long": Destination.NURSING_FACILITY,
    "aadvice": Destination.AMA,
    "exp": Destination.EXPIRED,
    "psy": Destination.PSYCH,
    "rehab": Destination.REHAB,
    "snf": Destination.SNF,
    "oth": Destination.OTHER,
}

# NUBC patient discharge status; 81-95 are the same places with a planned readmission.
_NUBC: Final[dict[str, Destination]] = {
    "01": Destination.HOME,
    "02": Destination.ACUTE_TRANSFER,
    "03": Destination.SNF,
    "04": Destination.NURSING_FACILITY,  # intermediate care facility
    "05": Destination.ACUTE_TRANSFER,  # cancer centre or children's hospital
    "06": Destination.HOME_HEALTH,
    "07": Destination.AMA,
    "09": Destination.ACUTE_TRANSFER,  # admitted as an inpatient to this hospital
    "20": Destination.EXPIRED,
    "21": Destination.OTHER,  # court or law enforcement
    "30": Destination.OTHER,  # still a patient
    "40": Destination.EXPIRED,
    "41": Destination.EXPIRED,
    "42": Destination.EXPIRED,
    "43": Destination.ACUTE_TRANSFER,  # federal health care facility
    "50": Destination.HOSPICE,  # hospice, home
    "51": Destination.HOSPICE,  # hospice, medical facility
    "61": Destination.SNF,  # swing bed
    "62": Destination.REHAB,
    "63": Destination.ACUTE_TRANSFER,  # long-term care hospital
    "64": Destination.NURSING_FACILITY,  # Medicaid-only nursing facility
    "65": Destination.PSYCH,
    "66": Destination.ACUTE_TRANSFER,  # critical access hospital
    "69": Destination.OTHER,  # disaster alternative care site
    "70": Destination.OTHER,  # another type of health care institution
    "81": Destination.HOME,
    "82": Destination.ACUTE_TRANSFER,
    "83": Destination.SNF,
    "84": Destination.NURSING_FACILITY,
    "85": Destination.ACUTE_TRANSFER,
    "86": Destination.HOME_HEALTH,
    "87": Destination.OTHER,
    "88": Destination.ACUTE_TRANSFER,
    "89": Destination.SNF,
    "90": Destination.REHAB,
    "91": Destination.ACUTE_TRANSFER,
    "92": Destination.NURSING_FACILITY,
    "93": Destination.PSYCH,
    "94": Destination.ACUTE_TRANSFER,
    "95": Destination.OTHER,
}

_SNOMED: Final[dict[str, Destination]] = {
    "306689006": Destination.HOME,  # Discharge to home
    "306691003": Destination.ASSISTED_LIVING,  # Discharge to residential home
    "306694006": Destination.NURSING_FACILITY,  # Discharge to nursing home
    "225928004": Destination.AMA,  # Patient self-discharge against medical advice
    "371828006": Destination.EXPIRED,  # Patient deceased during stay (discharge status = dead)
}


def _codings(dispositions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Codings from a list of Codings or CodeableConcepts (``{"coding": [...]}``)."""
    out: list[Mapping[str, Any]] = []
    for entry in dispositions:
        nested = entry.get("coding")
        if isinstance(nested, list):
            out.extend(c for c in nested if isinstance(c, Mapping))
        else:
            out.append(entry)
    return out


def _one(coding: Mapping[str, Any]) -> Destination | None:
    system, code = coding.get("system"), coding.get("code")
    if not isinstance(code, str):
        return None
    code = code.strip()
    if system == HL7_DISCHARGE_DISPOSITION:
        return _HL7.get(code)
    if system in NUBC_SYSTEMS:
        return _NUBC.get(code.zfill(2))
    if system == SNOMED_CT:
        return _SNOMED.get(code)
    return None


def destination_of(dispositions: Sequence[Mapping[str, Any]]) -> Destination:
    """The destination named by the first recognised coding of
    ``Encounter.hospitalization.dischargeDisposition`` (Codings or the CodeableConcept);
    :attr:`Destination.UNKNOWN` when there is none or no coding is recognised."""
    for coding in _codings(dispositions):
        found = _one(coding)
        if found is not None:
            return found
    return Destination.UNKNOWN
