"""Checks for the FHIR R4 search parameter definitions in carecoord/fhir/data."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import typing
from functools import cache
from typing import Any

import pytest
from fhir_core.types import FhirBase

DATA_FILE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "carecoord"
    / "fhir"
    / "data"
    / "search-parameters.json"
)

BASES = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Encounter",
        "Condition",
        "Observation",
        "Procedure",
        "Coverage",
        "EpisodeOfCare",
        "CarePlan",
        "CareTeam",
        "Goal",
        "Task",
        "ServiceRequest",
        "Appointment",
        "Communication",
        "QuestionnaireResponse",
        "RiskAssessment",
        "Provenance",
        "AuditEvent",
        "Group",
    }
)
TYPES = frozenset({"token", "reference", "date", "string", "quantity", "uri", "number"})
REQUIRED_KEYS = frozenset({"base", "code", "type", "paths", "description"})
OPTIONAL_KEYS = frozenset({"targets", "where"})
RESOURCE_INDEPENDENT = frozenset(
    {
        "_id",
        "_lastUpdated",
        "_tag",
        "_profile",
        "_security",
        "_text",
        "_content",
        "_list",
        "_has",
        "_type",
        "_source",
        "_query",
    }
)
SEGMENT = re.compile(r"^[A-Za-z]+(\[x\])?$")


def load() -> list[dict[str, Any]]:
    with DATA_FILE.open(encoding="utf-8") as fh:
        data = json.load(fh)
    assert isinstance(data, list)
    return data


ENTRIES = load()
BY_KEY = {(e["base"], e["code"]): e for e in ENTRIES}


@cache
def resource_model(resource_type: str) -> type[Any]:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return typing.cast(type[Any], getattr(module, resource_type))


@cache
def elements(model: type[Any]) -> dict[str, Any]:
    """JSON element names (aliases, e.g. ``class`` for ``class_fhir``) -> pydantic field."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if alias.startswith("_") or name == "fhir_comments":
            continue  # primitive extension holders (``_status``) and non-FHIR helpers
        out[alias] = field
    return out


@cache
def choice_groups(model: type[Any]) -> dict[str, tuple[str, ...]]:
    """Choice element root (``effective``) -> concrete element names (``effectiveDateTime``)."""
    groups: dict[str, list[str]] = {}
    for alias, field in elements(model).items():
        root = (field.json_schema_extra or {}).get("one_of_many")
        if root:
            groups.setdefault(root, []).append(alias)
    return {root: tuple(names) for root, names in groups.items()}


def child_model(field: Any) -> type[Any] | None:
    """Model class of a complex/backbone element, or None for a primitive."""
    stack = [field.annotation]
    while stack:
        annotation = stack.pop()
        if isinstance(annotation, type) and issubclass(annotation, FhirBase):
            return typing.cast(type[Any], annotation.get_model_klass())
        stack.extend(typing.get_args(annotation))
    return None


def resolve_path(base: str, path: str) -> None:
    """Walk ``path`` through the R4B models; raise AssertionError when a segment is unknown."""
    model: type[Any] | None = resource_model(base)
    segments = path.split(".")
    for i, segment in enumerate(segments):
        assert model is not None, f"{base}.{path}: cannot go below a primitive at {segment!r}"
        if segment.endswith("[x]"):
            root = segment[:-3]
            assert root in choice_groups(model), f"{base}.{path}: {root}[x] is not a choice"
            assert i == len(segments) - 1, f"{base}.{path}: [x] must be the last segment"
            return
        known = elements(model)
        assert segment in known, f"{base}.{path}: {segment!r} is not an element of {model}"
        model = child_model(known[segment])


def test_entries_have_required_keys_and_valid_types() -> None:
    assert ENTRIES, "no search parameters defined"
    for entry in ENTRIES:
        keys = set(entry)
        assert keys >= REQUIRED_KEYS, f"missing keys in {entry}"
        assert keys <= REQUIRED_KEYS | OPTIONAL_KEYS, f"unexpected keys in {entry}"
        assert entry["type"] in TYPES, entry
        assert entry["base"] in BASES, entry
        assert entry["code"] not in RESOURCE_INDEPENDENT, entry
        assert isinstance(entry["description"], str), entry
        desc = entry["description"]
        assert desc and desc == desc.strip() and "\n" not in desc, entry
        paths = entry["paths"]
        assert isinstance(paths, list) and paths, entry
        assert len(set(paths)) == len(paths), entry
        for path in paths:
            assert all(SEGMENT.match(s) for s in path.split(".")), (entry["code"], path)
        if entry["type"] == "reference":
            targets = entry.get("targets")
            assert isinstance(targets, list) and targets, entry
            assert all(isinstance(t, str) and t for t in targets), entry
            assert targets == ["Any"] or "Any" not in targets, entry
        else:
            assert "targets" not in entry, entry
        if "where" in entry:
            where = entry["where"]
            assert isinstance(where, dict) and where, entry
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in where.items())


def test_sorted_unique_and_all_bases_present() -> None:
    keys = [(e["base"], e["code"]) for e in ENTRIES]
    assert len(keys) == len(set(keys)), "duplicate (base, code) pairs"
    assert keys == sorted(keys), "entries must be sorted by base then code"
    assert {e["base"] for e in ENTRIES} == BASES


def test_reference_targets_are_resource_types() -> None:
    for entry in ENTRIES:
        for target in entry.get("targets", []):
            if target != "Any":
                resource_model(target)  # raises if not an R4B resource type


@pytest.mark.parametrize(
    ("base", "path"),
    sorted({(e["base"], p) for e in ENTRIES for p in e["paths"]}),
    ids=lambda v: str(v),
)
def test_paths_exist_in_r4b_models(base: str, path: str) -> None:
    resolve_path(base, path)


def test_where_filters_name_child_elements() -> None:
    for entry in ENTRIES:
        for key in entry.get("where", {}):
            for path in entry["paths"]:
                resolve_path(entry["base"], f"{path}.{key}")


def test_resolver_rejects_unknown_elements() -> None:
    with pytest.raises(AssertionError):
        resolve_path("Patient", "nonsense")
    with pytest.raises(AssertionError):
        resolve_path("Patient", "name.nonsense")
    with pytest.raises(AssertionError):
        resolve_path("Encounter", "status.value")
    resolve_path("Encounter", "class")  # python field is class_fhir
    resolve_path("Observation", "effective[x]")


def spec(base: str, code: str) -> dict[str, Any]:
    assert (base, code) in BY_KEY, f"{base}:{code} missing"
    return BY_KEY[(base, code)]


def check(
    base: str,
    code: str,
    type_: str,
    paths: list[str],
    targets: list[str] | None = None,
) -> dict[str, Any]:
    entry = spec(base, code)
    assert entry["type"] == type_, entry
    assert entry["paths"] == paths, entry
    if targets is not None:
        assert sorted(entry["targets"]) == sorted(targets), entry
    return entry


def test_spot_check_encounter() -> None:
    check("Encounter", "patient", "reference", ["subject"], ["Patient"])
    check("Encounter", "subject", "reference", ["subject"], ["Group", "Patient"])
    check("Encounter", "class", "token", ["class"])
    check("Encounter", "status", "token", ["status"])
    check("Encounter", "date", "date", ["period"])
    check(
        "Encounter",
        "participant",
        "reference",
        ["participant.individual"],
        ["Practitioner", "PractitionerRole", "RelatedPerson"],
    )
    assert spec("Encounter", "patient")["description"] == (
        "The patient or group present at the encounter"
    )


def test_spot_check_task() -> None:
    check("Task", "patient", "reference", ["for"], ["Patient"])
    owner = check("Task", "owner", "reference", ["owner"])
    assert {"Practitioner", "Organization", "CareTeam", "PractitionerRole"} <= set(owner["targets"])
    check("Task", "status", "token", ["status"])
    check("Task", "code", "token", ["code"])
    check("Task", "business-status", "token", ["businessStatus"])
    check("Task", "focus", "reference", ["focus"], ["Any"])
    check("Task", "requester", "reference", ["requester"])


def test_spot_check_care_team_and_friends() -> None:
    check("CareTeam", "patient", "reference", ["subject"], ["Patient"])
    participant = check("CareTeam", "participant", "reference", ["participant.member"])
    assert {"Practitioner", "PractitionerRole", "Patient", "Organization"} <= set(
        participant["targets"]
    )
    check("Group", "member", "reference", ["member.entity"])
    check("Coverage", "beneficiary", "reference", ["beneficiary"], ["Patient"])
    check("Coverage", "payor", "reference", ["payor"], ["Organization", "Patient", "RelatedPerson"])
    check("EpisodeOfCare", "care-manager", "reference", ["careManager"], ["Practitioner"])
    check("Provenance", "patient", "reference", ["target"], ["Patient"])
    check("Provenance", "target", "reference", ["target"], ["Any"])
    audit = check("AuditEvent", "patient", "reference", ["agent.who", "entity.what"], ["Patient"])
    assert "entity.what" in audit["paths"]
    check(
        "QuestionnaireResponse",
        "questionnaire",
        "reference",
        ["questionnaire"],
        ["Questionnaire"],
    )


def test_spot_check_observation() -> None:
    check("Observation", "code", "token", ["code"])
    check("Observation", "value-quantity", "quantity", ["valueQuantity", "valueSampledData"])
    check("Observation", "date", "date", ["effective[x]"])
    check("Observation", "patient", "reference", ["subject"], ["Patient"])
    check("Observation", "value-string", "string", ["valueString", "valueCodeableConcept.text"])
    check("Condition", "onset-date", "date", ["onsetDateTime", "onsetPeriod"])
    assert ("Observation", "code-value-quantity") not in BY_KEY  # composite


def test_spot_check_patient() -> None:
    check("Patient", "identifier", "token", ["identifier"])
    name = check("Patient", "name", "string", ["name"])
    assert "where" not in name
    check("Patient", "family", "string", ["name.family"])
    check("Patient", "given", "string", ["name.given"])
    check("Patient", "phonetic", "string", ["name"])
    check("Patient", "birthdate", "date", ["birthDate"])
    check("Patient", "gender", "token", ["gender"])
    check("Patient", "death-date", "date", ["deceasedDateTime"])
    phone = check("Patient", "phone", "token", ["telecom"])
    assert phone["where"] == {"system": "phone"}
    assert spec("Practitioner", "email")["where"] == {"system": "email"}
