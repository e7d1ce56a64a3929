"""From FHIR resources (plain dicts) to PCPs, members, visit history and family links."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, Final

from carecoord.pccm.geo import Geocoder, Point
from carecoord.pccm.model import Accepting, Pcp
from carecoord.pccm.program import Program
from carecoord.pccm.rules import age_on, language_tag

__all__ = [
    "NEWPATIENTS_URL",
    "PRIMARY_CARE_CLASSES",
    "accepting_of",
    "covers",
    "family_links",
    "main_source",
    "member_place",
    "pcp_from_role",
    "ref_id",
]

#: Da Vinci PDex Plan-Net: whether a role accepts new patients (sub-extension acceptingPatients).
NEWPATIENTS_URL: Final = (
    "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/newpatients"
)
#: Encounter.class codes that count as primary-care visits (with a program PCP).
PRIMARY_CARE_CLASSES: Final = frozenset({"AMB", "VR", "HH"})
_ADDRESS_USES: Final = ("home", None, "temp")

JSON = Mapping[str, Any]


def ref_id(reference: JSON | None, res_type: str) -> str | None:
    """The id in a ``{"reference": "Type/id"}`` of ``res_type`` (None otherwise)."""
    ref = (reference or {}).get("reference")
    if not isinstance(ref, str):
        return None
    parts = ref.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == res_type:
        return parts[-1]
    return None


def accepting_of(role: JSON, unstated: bool) -> Accepting:
    """The role's ``newpatients`` acceptingPatients code; inactive roles accept nobody."""
    if role.get("active") is False:
        return Accepting.NONE
    for ext in role.get("extension", ()):
        if ext.get("url") != NEWPATIENTS_URL:
            continue
        for sub in ext.get("extension", ()):
            if sub.get("url") != "acceptingPatients":
                continue
            for coding in (sub.get("valueCodeableConcept") or {}).get("coding", ()):
                try:
                    return Accepting(coding.get("code"))
                except ValueError:
                    continue
    return Accepting.NEW if unstated else Accepting.NONE


def _codes(concepts: Iterable[JSON]) -> list[str]:
    return [c["code"] for cc in concepts for c in cc.get("coding", ()) if c.get("code")]


def _name(resource: JSON | None) -> str:
    for name in (resource or {}).get("name", ()):
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("prefix", ()), *name.get("given", ()), name.get("family", "")]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return ""


def _position(location: JSON | None) -> Point | None:
    pos = (location or {}).get("position") or {}
    lat, lon = pos.get("latitude"), pos.get("longitude")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return float(lat), float(lon)
    return None


def pcp_from_role(
    role: JSON,
    program: Program,
    *,
    practitioner: JSON | None = None,
    locations: Mapping[str, JSON] | None = None,
) -> Pcp | None:
    """A program PCP from a PractitionerRole whose specialty the program lists (else None)."""
    served = next(
        (
            program.specialties[c]
            for c in _codes(role.get("specialty", ()))
            if c in program.specialties
        ),
        None,
    )
    if served is None or not role.get("id"):
        return None
    location: Point | None = None
    for ref in role.get("location", ()):
        loc_id = ref_id(ref, "Location")
        location = _position((locations or {}).get(loc_id or ""))
        if location is not None:
            break
    languages = frozenset(
        language_tag(code)
        for comm in (practitioner or {}).get("communication", ())
        for code in _codes([comm])
    )
    return Pcp(
        id=str(role["id"]),
        pcp_type=served.pcp_type,
        min_age=served.min_age,
        max_age=served.max_age,
        sexes=frozenset(served.sexes),
        accepting=accepting_of(role, program.accepting_when_unstated),
        practice=ref_id(role.get("organization"), "Organization"),
        practitioner=ref_id(role.get("practitioner"), "Practitioner"),
        location=location,
        languages=languages,
        name=_name(practitioner),
    )


def member_place(
    patient: JSON, today: date, geocoder: Geocoder
) -> tuple[int | None, str, Point | None, tuple[str, ...]]:
    """(age, sex, located home address, preferred languages first) of a Patient."""
    age = None
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 10:
        try:
            age = age_on(date.fromisoformat(birth[:10]), today)
        except ValueError:
            age = None
    sex = patient.get("gender") or "unknown"
    location: Point | None = None
    addresses = [a for a in patient.get("address", ()) if not (a.get("period") or {}).get("end")]
    for use in _ADDRESS_USES:
        for address in addresses:
            if address.get("use") == use and location is None:
                location = geocoder.locate(address)
    comms = sorted(patient.get("communication", ()), key=lambda c: not c.get("preferred", False))
    languages = tuple(
        language_tag(code) for comm in comms for code in _codes([comm.get("language") or {}])
    )
    return age, str(sex), location, languages


def covers(coverage: JSON, program: Program, today: date) -> bool:
    """Whether an active Coverage puts its beneficiary in the program on ``today``."""
    if coverage.get("status") != "active":
        return False
    period = coverage.get("period") or {}
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and start[:10] > today.isoformat():
        return False
    if isinstance(end, str) and end[:10] < today.isoformat():
        return False
    membership = program.membership
    for cls in coverage.get("class", ()):
        if membership.class_type in _codes([cls.get("type") or {}]) and (
            cls.get("value") in membership.class_values
        ):
            return True
    return False


def main_source(visits: Iterable[tuple[str, str]], min_visits: int) -> str | None:
    """The PCP with the most visits (then the latest, then the lowest id); ``(pcp, date)``."""
    counts: Counter[str] = Counter()
    latest: dict[str, str] = {}
    for pcp, day in visits:
        counts[pcp] += 1
        latest[pcp] = max(latest.get(pcp, ""), day)
    if not counts:
        return None
    # reverse sorts are stable: equal (count, latest) keep the ascending id order
    best = sorted(sorted(counts), key=lambda p: (counts[p], latest[p]), reverse=True)[0]
    return best if counts[best] >= min_visits else None


def _household_key(patient: JSON) -> str | None:
    for address in patient.get("address", ()):
        if (address.get("period") or {}).get("end"):
            continue
        lines = " ".join(address.get("line", ())).lower().split()
        postal = str(address.get("postalCode") or "").split("-")[0].strip()
        if lines and postal:
            return " ".join(lines) + "|" + postal
    return None


def family_links(
    patients: Mapping[str, JSON],
    related_persons: Iterable[JSON],
    subscribers: Mapping[str, str],
) -> dict[str, set[str]]:
    """Family of each patient id among ``patients``.

    Links: a RelatedPerson of patient A that patient B's ``link`` points to; a ``Patient.link``
    between two patients; a shared household (same current address and the same Coverage
    subscriber, ``subscribers``: patient id -> subscriber reference).
    """
    family: dict[str, set[str]] = defaultdict(set)

    def join(a: str, b: str) -> None:
        if a != b and a in patients and b in patients:
            family[a].add(b)
            family[b].add(a)

    related_of = {str(rp.get("id")): ref_id(rp.get("patient"), "Patient") for rp in related_persons}
    households: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pid, patient in patients.items():
        for link in patient.get("link", ()):
            other = link.get("other")
            target = ref_id(other, "Patient")
            if target:
                join(pid, target)
            rp = ref_id(other, "RelatedPerson")
            if rp and related_of.get(rp):
                join(pid, related_of[rp] or "")
        key = _household_key(patient)
        if key and subscribers.get(pid):
            households[(key, subscribers[pid])].append(pid)
    for members in households.values():
        for a in members:
            for b in members:
                join(a, b)
    return family
