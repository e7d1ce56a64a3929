"""Who owns a checklist item: the patient's own people first, else the least-loaded colleague.

- nurse case manager: the patient's active CareTeam member in that role; else, among the case
  managers of the discharging unit (PractitionerRole at the Encounter's location), then of the
  organisation, the one with the fewest open Tasks (ties: lowest id);
- PCP: ``Patient.generalPractitioner`` (PCCM assignment writes it), else a CareTeam member with
  the PCP role;
- pharmacist, scheduler, social worker, supervisor: the organisation's people in that role,
  least loaded first.

Nobody found means the item stays unassigned (``performerType`` says who should take it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from carecoord.fhir.store import Writer
from carecoord.transitions.codes import CARE_ROLE_SYSTEM, CareRole
from carecoord.transitions.resources import read_json, reference_of
from carecoord.transitions.taskflow import OPEN

__all__ = ["Assigner", "open_caseload"]

_OPEN_STATUSES: Final = ",".join(sorted(OPEN - {"draft"}))


def _has_role(concepts: Any, role: CareRole) -> bool:
    for concept in concepts or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == CARE_ROLE_SYSTEM and coding.get("code") == role.value:
                return True
    return False


def open_caseload(w: Writer, owner: str) -> int:
    """Open Tasks owned by ``owner`` (a reference)."""
    return w.count("Task", [("owner", owner), ("status", _OPEN_STATUSES)])


@dataclass
class Assigner:
    """Finds owners for one checklist (caches the lookups of the patient and the unit)."""

    w: Writer
    patient: dict[str, Any]
    encounter: dict[str, Any]
    _team: list[dict[str, Any]] | None = field(default=None, repr=False)
    _chosen: dict[CareRole, str | None] = field(default_factory=dict, repr=False)

    def owner(self, role: CareRole) -> str | None:
        """A reference to the owner of an item for ``role`` (None: unassigned)."""
        if role not in self._chosen:
            self._chosen[role] = self._find(role)
        return self._chosen[role]

    def _find(self, role: CareRole) -> str | None:
        if role is CareRole.PCP:
            for gp in self.patient.get("generalPractitioner") or []:
                ref = reference_of(gp)
                if ref:
                    return ref
        member = self._team_member(role)
        if member is not None or role is CareRole.PCP:
            return member
        return self._least_loaded(role)

    def _team_member(self, role: CareRole) -> str | None:
        if self._team is None:
            patient_id = self.patient.get("id")
            ids = self.w.find(
                "CareTeam", [("patient", f"Patient/{patient_id}"), ("status", "active")], limit=50
            )
            self._team = [t for t in (self._read("CareTeam", i) for i in sorted(ids)) if t]
        for team in self._team:
            for participant in team.get("participant") or []:
                member = reference_of(participant.get("member"))
                if member and _has_role(participant.get("role"), role):
                    return member
        return None

    def _least_loaded(self, role: CareRole) -> str | None:
        token = f"{CARE_ROLE_SYSTEM}|{role.value}"
        places: list[tuple[str, str]] = []
        for location in reversed(self.encounter.get("location") or []):
            ref = reference_of(location.get("location"))
            if ref:
                places.append(("location", ref))
                break
        provider = reference_of(self.encounter.get("serviceProvider"))
        if provider:
            places.append(("organization", provider))
        for param, ref in places:
            ids = self.w.find(
                "PractitionerRole", [("role", token), (param, ref), ("active", "true")], limit=500
            )
            people = sorted(
                {
                    p
                    for p in (
                        reference_of((self._read("PractitionerRole", i) or {}).get("practitioner"))
                        for i in ids
                    )
                    if p
                }
            )
            if people:
                load = self.w.count_by_reference(
                    "Task", [("status", _OPEN_STATUSES)], "owner", people
                )
                return min(people, key=lambda p: (load[p], p))
        return None

    def _read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        return read_json(self.w, res_type, res_id)
