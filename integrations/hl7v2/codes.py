"""Code tables from HL7 v2 values to FHIR R4 codes (after the HL7 v2-to-FHIR concept maps)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACT_CODE",
    "ADDRESS_TYPE",
    "ADDRESS_USE",
    "DISCHARGE_DISPOSITION",
    "DISCHARGE_DISPOSITION_SYSTEM",
    "GENDER",
    "NAME_USE",
    "NULL_FLAVOR",
    "PARTICIPATION_TYPE",
    "PATIENT_CLASS",
    "TELECOM_SYSTEM",
    "TELECOM_USE",
    "V2_0112",
    "V2_0203",
    "attending_type",
    "encounter_class",
]

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DISCHARGE_DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

#: PID-8 administrative sex (table 0001) -> Patient.gender.
GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown"}

#: PV1-2 patient class (table 0004) -> Encounter.class (v3 ActCode), with display.
PATIENT_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
}

#: XPN-7 name type (table 0200) -> HumanName.use.
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "S": "anonymous"}

#: XAD-7 address type (table 0190) -> Address.use / Address.type.
ADDRESS_USE = {"H": "home", "P": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
ADDRESS_TYPE = {"M": "postal"}

#: XTN-2 telecommunication use (table 0201) and XTN-3 equipment type (table 0202).
TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "temp"}
TELECOM_SYSTEM = {
    "PH": "phone",
    "CP": "phone",
    "FX": "fax",
    "BP": "pager",
    "INTERNET": "email",
    "X.400": "email",
    "MD": "other",
    "TDD": "other",
    "TTY": "other",
}

#: PV1-36 discharge disposition (user table 0112, US UB-04 patient status codes) -> the FHIR
#: discharge-disposition code where one fits; the original code is always kept as well.
DISCHARGE_DISPOSITION = {
    "01": ("home", "Home"),
    "02": ("other-hcf", "Other healthcare facility"),
    "03": ("snf", "Skilled nursing facility"),
    "05": ("other-hcf", "Other healthcare facility"),
    "06": ("home", "Home"),
    "07": ("aadvice", "Left against advice"),
    "20": ("exp", "Expired"),
    "40": ("exp", "Expired"),
    "41": ("exp", "Expired"),
    "42": ("exp", "Expired"),
    "50": ("hosp", "Hospice"),
    "51": ("hosp", "Hospice"),
    "62": ("rehab", "Rehabilitation"),
    "63": ("long", "Long-term care"),
    "65": ("psy", "Psychiatric hospital"),
}


def encounter_class(code: str) -> dict[str, Any]:
    """Encounter.class for a PV1-2 code; unknown codes become NullFlavor UNK."""
    mapped = PATIENT_CLASS.get(code.upper())
    if mapped is None:
        return {"system": NULL_FLAVOR, "code": "UNK", "display": "unknown"}
    return {"system": ACT_CODE, "code": mapped[0], "display": mapped[1]}


def attending_type() -> list[dict[str, Any]]:
    """Encounter.participant.type of the attending physician (PV1-7)."""
    return [{"coding": [{"system": PARTICIPATION_TYPE, "code": "ATND", "display": "attender"}]}]
