"""Who may see and change what: the access policy that the store enforces on every interaction.

A policy is decided once per request (from a SMART token or a launch session) and handed to the
store, which turns it into SQL conditions on the resource rows it reads, searches, includes,
chains through, or writes. ``None`` as a policy means an internal caller (importer, services)
with no limit.

Rules:

- A type needs a scope granting the permission (``c r u d s``) for it, else 403.
- ``patient/`` scopes limit rows to the launch patient's compartment (R4 CompartmentDefinition
  ``patient``, plus Task by ``patient``, which care coordination cannot do without). A resource of a
  compartment type that this server does not index for the compartment is out of reach of
  ``patient/`` scopes; types outside the compartment (Practitioner, Organization, Medication ...)
  are reachable with the scope alone.
- A scope's ``?param=value`` restriction is a search condition on the rows it grants.
- Several scopes for a type add up (OR).
- With a tenant, rows must carry the tenant's ``meta.tag``; writes get it stamped.
- A row outside the policy reads as 404 (its existence does not leak); a type outside it is 403.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, or_, select

from carecoord.fhir.searchparams import SearchRegistry
from carecoord.fhir.tables import idx_reference, idx_token
from carecoord.smart.scopes import ClinicalScope, parse_scopes

__all__ = [
    "PATIENT_COMPARTMENT",
    "TENANT_SYSTEM",
    "AccessPolicy",
    "Agent",
    "RowFilter",
    "relative_reference",
]

TENANT_SYSTEM = "https://carecoord.org/fhir/CodeSystem/tenant"

#: R4 (4.0.1) CompartmentDefinition/patient: type -> search parameters linking it to the patient.
#: Task is not in the R4 definition; CareCoord adds it by ``patient`` (Task.for).
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("actor",),
    "AppointmentResponse": ("actor",),
    "AuditEvent": ("patient",),
    "Basic": ("patient", "author"),
    "BodyStructure": ("patient",),
    "CarePlan": ("patient", "performer"),
    "CareTeam": ("patient", "participant"),
    "ChargeItem": ("subject",),
    "Claim": ("patient", "payee"),
    "ClaimResponse": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Composition": ("subject", "author", "attester"),
    "Condition": ("patient", "asserter"),
    "Consent": ("patient",),
    "Coverage": ("policy-holder", "subscriber", "beneficiary", "payor"),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",),
    "DeviceRequest": ("subject", "performer"),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("patient",),
    "EnrollmentRequest": ("subject",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient", "payee"),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("patient",),
    "Goal": ("patient",),
    "Group": ("member",),
    "ImagingStudy": ("patient",),
    "Immunization": ("patient",),
    "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject", "patient", "recipient"),
    "List": ("subject", "source"),
    "MeasureReport": ("patient",),
    "Media": ("subject",),
    "MedicationAdministration": ("patient", "performer", "subject"),
    "MedicationDispense": ("subject", "patient", "receiver"),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject", "performer"),
    "Patient": ("link",),
    "Person": ("patient",),
    "Procedure": ("patient", "performer"),
    "Provenance": ("patient",),
    "QuestionnaireResponse": ("subject", "author"),
    "RelatedPerson": ("patient",),
    "RequestGroup": ("subject", "participant"),
    "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "SupplyRequest": ("subject",),
    "Task": ("patient",),
    "VisionPrescription": ("patient",),
}

#: A condition on an alias of the ``resources`` table; ``None`` means no limit.
RowFilter = Callable[[FromClause], ColumnElement[bool]]
#: Turns a scope's ``?param=value`` pairs into row conditions (the store's search parser).
ParamConditions = Callable[[str, Sequence[tuple[str, str]]], list[RowFilter]]


def relative_reference(reference: str) -> str | None:
    """``Type/id`` of a reference that may be absolute or versioned (EHRs send ``fhirUser`` as
    a full URL); None when it does not end in a type and an id."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-1]:
        return None
    return f"{parts[-2]}/{parts[-1]}"


@dataclass(frozen=True, slots=True)
class Agent:
    """Who is acting, for audit: a registered client, or a user through a launch session."""

    kind: str  # "client" | "user" | "system"
    who: str  # client id, or fhirUser reference
    name: str | None = None
    connection: str | None = None  # the EHR a user session came from


@dataclass(frozen=True)
class AccessPolicy:
    """Scopes, launch patient and tenant of one request."""

    scopes: tuple[ClinicalScope, ...]
    agent: Agent
    patient: str | None = None
    tenant: str | None = None
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_scope_string(
        cls, scope: str, agent: Agent, *, patient: str | None = None, tenant: str | None = None
    ) -> AccessPolicy:
        return cls(parse_scopes(scope), agent, patient=patient, tenant=tenant)

    @property
    def patient_reference(self) -> str | None:
        return f"Patient/{self.patient}" if self.patient else None

    def allows_type(self, res_type: str, permission: str) -> bool:
        """Whether any scope grants ``permission`` on ``res_type`` (rows may still be limited)."""
        return any(s.covers(res_type, permission) for s in self.scopes)

    def unrestricted(self) -> bool:
        """Everything on every type, with no row limits (``system/*.cruds`` and no tenant)."""
        return self.tenant is None and any(
            s.res_type == "*"
            and s.permissions == frozenset("cruds")
            and s.context != "patient"
            and not s.params
            for s in self.scopes
        )

    def row_filter(
        self,
        res_type: str,
        permission: str,
        registry: SearchRegistry,
        param_conditions: ParamConditions,
    ) -> RowFilter | bool | None:
        """Limit on rows of ``res_type`` for ``permission``.

        Returns ``False`` when the type is not granted at all, ``None`` when every row is, else a
        condition on a ``resources`` alias.
        """
        key = (res_type, permission)
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        result = self._build(res_type, permission, registry, param_conditions)
        self._cache[key] = result
        return result

    def _build(
        self,
        res_type: str,
        permission: str,
        registry: SearchRegistry,
        param_conditions: ParamConditions,
    ) -> RowFilter | bool | None:
        grants = [s for s in self.scopes if s.covers(res_type, permission)]
        if not grants:
            return False
        alternatives: list[list[RowFilter]] = []
        for scope in grants:
            conds: list[RowFilter] = []
            if scope.context == "patient":
                compartment = self._compartment(res_type, registry)
                if compartment is False:
                    continue
                if callable(compartment):
                    conds.append(compartment)
            if scope.params:
                conds.extend(param_conditions(res_type, scope.params))
            if not conds:
                alternatives = []
                break
            alternatives.append(conds)
        else:
            if not alternatives:
                # Only patient/ scopes, none usable for this type: the type is not reachable.
                return False
        tenant = self._tenant_filter(res_type)
        if not alternatives:
            return tenant
        options = list(alternatives)

        def combined(alias: FromClause) -> ColumnElement[bool]:
            expr = or_(*(and_(*(c(alias) for c in conds)) for conds in options))
            return and_(expr, tenant(alias)) if tenant is not None else expr

        return combined

    def _compartment(self, res_type: str, registry: SearchRegistry) -> RowFilter | bool | None:
        """Rows of ``res_type`` in the launch patient's compartment (False: none reachable)."""
        if self.patient is None:
            return False
        patient = self.patient
        if res_type == "Patient":
            return lambda alias: alias.c.res_id == patient
        params = PATIENT_COMPARTMENT.get(res_type)
        if params is None:
            return None  # not patient data: the scope alone decides
        indexed = tuple(p for p in params if registry.get(res_type, p) is not None)
        if not indexed:
            return False
        sub = select(idx_reference.c.rid).where(
            idx_reference.c.res_type == res_type,
            idx_reference.c.param.in_(indexed),
            idx_reference.c.target_type == "Patient",
            idx_reference.c.target_id == patient,
        )
        return lambda alias: alias.c.rid.in_(sub)

    def _tenant_filter(self, res_type: str) -> RowFilter | None:
        if self.tenant is None:
            return None
        sub = select(idx_token.c.rid).where(
            idx_token.c.res_type == res_type,
            idx_token.c.param == "_tag",
            idx_token.c.system == TENANT_SYSTEM,
            idx_token.c.code == self.tenant,
        )
        return lambda alias: alias.c.rid.in_(sub)
