"""The fast structural check never accepts what fhir.resources rejects.

``fast_check(m)`` True must imply ``model_validate(m)`` succeeds. The tests run real Synthea data
through the fast path, then a seeded mutation fuzzer over Synthea resources, a US Core-style
Patient and a transaction Bundle, then every primitive type against its model field.

``CARECOORD_FUZZ_MUTANTS`` raises the number of mutants (default 2,400) for a long run, and
``CARECOORD_FUZZ_SEED`` changes the seed.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.patient import Patient
from fhir_core.types import Integer
from pydantic import model_validator

from carecoord.fhir import fastvalidate
from carecoord.fhir.errors import InvalidRequest
from carecoord.fhir.fastvalidate import fast_check, warm
from carecoord.fhir.validation import validate_resource
from tests.conftest import SHARED_DATA

SEED = int(os.environ.get("CARECOORD_FUZZ_SEED", "20260101"))
MUTANTS = int(os.environ.get("CARECOORD_FUZZ_MUTANTS", "2400"))

Json = Any


def model_accepts(data: Json) -> bool:
    """The verdict of fhir.resources (what validate_resource falls back to)."""
    try:
        model = get_fhir_model_class(data["resourceType"])
        model.model_validate(data)
    except Exception:
        return False
    return True


def us_core_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "example-1",
        "meta": {
            "versionId": "3",
            "lastUpdated": "2025-03-01T10:15:30.123+01:00",
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
            "tag": [{"system": "urn:example:tags", "code": "vip"}],
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Amy V. Shaw</div>',
        },
        "contained": [
            {
                "resourceType": "Organization",
                "id": "org1",
                "name": "Good Health Clinic",
                "telecom": [{"system": "phone", "value": "555-0100"}],
            }
        ],
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                            "display": "White",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            },
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": "F",
            },
            {
                "url": "http://example.org/fhir/StructureDefinition/weight",
                "valueQuantity": {
                    "value": 61.5,
                    "unit": "kg",
                    "system": "http://unitsofmeasure.org",
                    "code": "kg",
                },
            },
        ],
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                        }
                    ],
                    "text": "Medical Record Number",
                },
                "system": "http://hospital.example.org",
                "value": "1032702",
                "period": {"start": "2010-05-01"},
                "assigner": {"reference": "#org1", "display": "Good Health Clinic"},
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": "Shaw",
                "given": ["Amy", None, "V."],
                "_given": [None, {"extension": [{"url": "urn:x", "valueString": "B"}]}, None],
                "period": {"start": "1987-02-20", "end": "2030-01-01T00:00:00Z"},
            }
        ],
        "telecom": [
            {"system": "phone", "value": "555-555-5555", "use": "home", "rank": 1},
            {"system": "email", "value": "amy.shaw@example.com"},
        ],
        "gender": "female",
        "_gender": {"id": "g1"},
        "birthDate": "1987-02-20",
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1987-02-20T08:30:00-05:00",
                }
            ]
        },
        "deceasedBoolean": False,
        "address": [
            {
                "use": "home",
                "line": ["49 Meadow St"],
                "city": "Mounds",
                "state": "OK",
                "postalCode": "74047",
                "country": "US",
                "period": {"start": "1987-02-20"},
            }
        ],
        "maritalStatus": {"text": "Married"},
        "multipleBirthInteger": 2,
        "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo=", "size": 8}],
        "contact": [
            {
                "relationship": [{"coding": [{"code": "C"}]}],
                "name": {"family": "Shaw", "given": ["Bob"]},
                "gender": "male",
            }
        ],
        "communication": [{"language": {"text": "English"}, "preferred": True}],
        "generalPractitioner": [{"reference": "Practitioner/p1"}],
        "managingOrganization": {"reference": "#org1"},
    }


def transaction_bundle() -> dict[str, Any]:
    patient = us_core_patient()
    del patient["id"]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5d7a2b1e-8f3c-4c4e-9a61-1f2d3c4b5a69",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:9e0f1a2b-3c4d-4e5f-8a7b-6c5d4e3f2a1b",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "urn:uuid:5d7a2b1e-8f3c-4c4e-9a61-1f2d3c4b5a69"},
                    "effectiveDateTime": "2025-03-01T10:15:30Z",
                    "valueQuantity": {"value": 72, "unit": "/min"},
                    "component": [
                        {"code": {"text": "a"}, "valueString": "b"},
                        {"code": {"text": "c"}, "valueTime": "10:00:00.5"},
                    ],
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def synthea_bundles() -> list[dict[str, Any]]:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/synthea-r4 is not present")
    return [json.loads(p.read_bytes()) for p in sorted(Path(SHARED_DATA).glob("*.json"))]


@pytest.fixture(scope="module")
def synthea_resources(synthea_bundles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry["resource"] for bundle in synthea_bundles for entry in bundle["entry"]]


def test_every_synthea_resource_takes_the_fast_path(
    synthea_resources: list[dict[str, Any]],
) -> None:
    fallbacks = Counter(r["resourceType"] for r in synthea_resources if not fast_check(r))
    assert len(synthea_resources) > 5000
    assert sum(fallbacks.values()) <= len(synthea_resources) // 100, fallbacks
    assert not fallbacks, f"fell back: {dict(fallbacks)}"


def test_synthea_bundles_take_the_fast_path(synthea_bundles: list[dict[str, Any]]) -> None:
    assert all(fast_check(bundle) for bundle in synthea_bundles)
    smallest = min(synthea_bundles, key=lambda bundle: len(bundle["entry"]))
    assert model_accepts(smallest)


def test_fast_path_agrees_with_the_models_on_a_synthea_sample(
    synthea_resources: list[dict[str, Any]],
) -> None:
    rng = random.Random(SEED)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in synthea_resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    sample = [r for group in by_type.values() for r in rng.sample(group, min(4, len(group)))]
    for resource in sample:
        assert fast_check(resource)
        assert model_accepts(resource), resource["resourceType"]


def test_hand_written_resources_take_the_fast_path() -> None:
    for resource in (us_core_patient(), transaction_bundle()):
        assert fast_check(resource)
        assert model_accepts(resource)


# ---------------------------------------------------------------------------------------------
# Mutation fuzzer

UNKNOWN_KEYS = (
    "foo",
    "_foo",
    "fhir_comments",
    "resource_type",
    "class_fhir",
    "Value",
    "valueFoo",
    "_",
    "",
    "extension ",
    "resourceType",
)
CHOICE_PREFIXES = (
    "value",
    "effective",
    "onset",
    "abatement",
    "deceased",
    "multipleBirth",
    "occurrence",
    "performed",
    "medication",
    "serviced",
    "location",
    "timing",
    "born",
    "age",
    "asNeeded",
    "product",
    "reported",
)
CHOICE_SUFFIXES: tuple[tuple[str, Json], ...] = (
    ("String", "x"),
    ("Boolean", True),
    ("DateTime", "2020-01-01"),
    ("Integer", 3),
    ("CodeableConcept", {"text": "x"}),
    ("Reference", {"reference": "Patient/1"}),
    ("Period", {"start": "2020"}),
    ("Quantity", {"value": 1}),
)
WRONG_VALUES: tuple[Json, ...] = (
    "x",
    "",
    " ",
    0,
    1,
    -1,
    1.5,
    True,
    False,
    None,
    {},
    [],
    {"a": 1},
    ["x"],
    [None],
    [{}],
    [[]],
    {"text": "x"},
    {"reference": "Patient/1"},
    {"extension": []},
    {"url": "http://x", "valueString": "y"},
    {"coding": [{"code": "x"}]},
)
BAD_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x0b",
    "\t",
    "a\n",
    " a",
    "a  b",
    "a b",
    "\xa0",
    "\u2028",
    "é",
    "日本",
    "a\ud800",
    "abc$",
    "a" * 256,
    "2020-13-01",
    "2021-02-29",
    "2020-02-30T10:00:00Z",
    "2020-02-03T01:02:03",
    "2020-02-03T25:00:00Z",
    "2020-02-03T10:00:60Z",
    "2020-02-03T10:00:00.1234567890123Z",
    "2020-02-03T10:00:00+14:01",
    "2020-02",
    "2020",
    "0000",
    "23:59:60",
    "24:00:00",
    "10:00",
    "1.5",
    "true",
    "YQ=",
    "YWJj",
    "urn:oid:1.2.3",
    "Patient/1",
    "http://example.org/a b",
)
BAD_NUMBERS: tuple[Json, ...] = (
    0,
    -1,
    1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**64,
    1.0,
    0.5,
    -0.0,
    1e300,
    float("nan"),
    float("inf"),
    True,
    "1",
    "1.5",
)
EXT_VALUES: tuple[Json, ...] = (
    {},
    [],
    None,
    "x",
    1,
    {"extension": []},
    {"foo": 1},
    {"id": ""},
    {"id": "e1"},
    {"extension": [{"url": "urn:x", "valueString": "y"}]},
    {"extension": [{"valueString": "y"}]},
    {"extension": [None]},
    [None],
    [{"id": "e1"}],
    [{"id": "e1"}, None],
    [None, {"id": "e1"}],
    [{}],
)
CONTAINED_TYPES: tuple[Json, ...] = (
    "Foo",
    "Coding",
    "PatientContact",
    "Resource",
    "DomainResource",
    "Element",
    "",
    None,
    5,
    "patient",
    "Organization",
    "Bundle",
    "Observation",
    "FHIRPrimitiveExtension",
)
CHARS = ("a", "Z", "0", " ", "\n", "\t", "\x0b", "\x00", "é", "\xa0", "$", "-", ":", "T", "/")

Slot = tuple[Any, Any]  # (container, key or index)


def _slots(node: Json) -> Iterator[Slot]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _slots(value)


def _dicts(node: Json) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_dicts(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_dicts(value))
    return found


def _is_primitive(value: Json) -> bool:
    return isinstance(value, str | int | float | bool)


def _mutate_string(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    choice = rng.random()
    if choice < 0.4:
        return text[:at] + rng.choice(CHARS) + text[at:]
    if choice < 0.7 and text:
        return text[:at] + text[at + 1 :]
    if choice < 0.85:
        return text.upper() if text != text.upper() else text.lower()
    return text + rng.choice(CHARS)


def _op_slot(rng: random.Random, root: Json) -> str:
    slots = list(_slots(root))
    if not slots:
        return "none"
    parent, key = rng.choice(slots)
    value = parent[key]
    op = rng.choice(
        ("remove", "null", "wrong", "wrap", "unwrap", "empty", "format", "swap", "string")
    )
    if op == "remove":
        del parent[key]
    elif op == "null":
        parent[key] = None
    elif op == "wrong":
        parent[key] = copy.deepcopy(rng.choice(WRONG_VALUES))
    elif op == "wrap":
        parent[key] = [value]
    elif op == "unwrap":
        if isinstance(value, list) and value:
            parent[key] = value[0]
        elif isinstance(value, dict) and value:
            parent[key] = next(iter(value.values()))
        else:
            parent[key] = [value, value]
    elif op == "empty":
        parent[key] = rng.choice(("", [], {}))
    elif op == "format":
        if isinstance(value, bool):
            parent[key] = rng.choice(("true", 1, 0, None, "false"))
        elif isinstance(value, int | float):
            parent[key] = rng.choice(BAD_NUMBERS)
        else:
            parent[key] = rng.choice(BAD_STRINGS)
    elif op == "swap":
        _, other_key = other = rng.choice(slots)
        parent[key] = copy.deepcopy(other[0][other_key])
    elif isinstance(value, str):
        parent[key] = _mutate_string(rng, value)
    else:
        parent[key] = rng.choice(BAD_STRINGS)
    return op


def _op_dict(rng: random.Random, root: Json) -> str:
    targets = _dicts(root)
    target = rng.choice(targets)
    op = rng.choice(("unknown", "choice", "ext", "contained", "resource_type", "rename"))
    keys = list(target)
    if op == "unknown":
        target[rng.choice(UNKNOWN_KEYS)] = copy.deepcopy(rng.choice(WRONG_VALUES[:9]))
    elif op == "choice":
        present = [k for k in keys if k.startswith(CHOICE_PREFIXES)]
        prefix = rng.choice(CHOICE_PREFIXES)
        for key in present:
            prefix = next(p for p in CHOICE_PREFIXES if key.startswith(p))
        suffix, value = rng.choice(CHOICE_SUFFIXES)
        target[prefix + suffix] = copy.deepcopy(value)
    elif op == "ext":
        primitive = [k for k in keys if not k.startswith("_") and _is_primitive(target[k])]
        primitive += [
            k
            for k in keys
            if isinstance(target[k], list) and target[k] and _is_primitive(target[k][0])
        ]
        key = rng.choice(primitive) if primitive else rng.choice(keys or ["x"])
        value = copy.deepcopy(rng.choice(EXT_VALUES))
        if isinstance(target.get(key), list) and rng.random() < 0.5:
            size = len(target[key])
            value = [rng.choice([None, {"id": "e"}, {}, "x"]) for _ in range(size)]
        target["_" + key] = value
    elif op == "contained":
        res_type = rng.choice(CONTAINED_TYPES)
        item: dict[str, Any] = {"id": "c1"}
        if rng.random() < 0.9:
            item["resourceType"] = res_type
        if rng.random() < 0.3:
            item["status"] = "final"
        target["contained"] = [item] if rng.random() < 0.8 else item
    elif op == "resource_type":
        target["resourceType"] = rng.choice(CONTAINED_TYPES)
    elif keys:
        key = rng.choice(keys)
        target[_mutate_string(rng, key) or "x"] = target.pop(key)
    return op


def _mutant(rng: random.Random, base: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    mutant = orjson.loads(orjson.dumps(base))
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if rng.random() < 0.7:
            ops.append(_op_slot(rng, mutant))
        else:
            ops.append(_op_dict(rng, mutant))
    if not isinstance(mutant, dict) or "resourceType" not in mutant:
        mutant = {
            "resourceType": base["resourceType"],
            **(mutant if isinstance(mutant, dict) else {}),
        }
    return mutant, ops


def _fuzz_bases() -> list[dict[str, Any]]:
    bases: list[dict[str, Any]] = [us_core_patient(), transaction_bundle()]
    if SHARED_DATA.is_dir():
        rng = random.Random(SEED + 1)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(Path(SHARED_DATA).glob("*.json")):
            for entry in json.loads(path.read_bytes())["entry"]:
                resource = entry["resource"]
                by_type.setdefault(resource["resourceType"], []).append(resource)
        for group in by_type.values():
            group.sort(key=lambda r: len(json.dumps(r)))
            small = group[: max(1, len(group) // 2)]
            bases.extend(rng.sample(small, min(3, len(small))))
    return bases


def test_mutants_accepted_by_fast_check_are_accepted_by_the_models() -> None:
    rng = random.Random(SEED)
    bases = _fuzz_bases()
    outcomes: Counter[tuple[bool, bool]] = Counter()
    ops_seen: Counter[str] = Counter()
    unsafe: list[tuple[list[str], dict[str, Any]]] = []
    for number in range(MUTANTS):
        # The hand-written Patient and Bundle get a third of the mutants.
        base = bases[number % 2] if number % 3 == 0 else rng.choice(bases)
        mutant, ops = _mutant(rng, base)
        ops_seen.update(ops)
        fast = fast_check(mutant)
        full = model_accepts(mutant)
        outcomes[fast, full] += 1
        if fast and not full:
            unsafe.append((ops, mutant))
    print(f"\nfuzzer: {MUTANTS} mutants of {len(bases)} resources; outcomes {dict(outcomes)}")
    print(f"fuzzer operations: {dict(ops_seen)}")
    assert not unsafe, f"fast_check accepted {len(unsafe)} invalid mutants; first: {unsafe[0]}"
    rejected = outcomes[False, False]
    assert rejected >= MUTANTS // 3, outcomes
    assert outcomes[True, True] >= MUTANTS // 20, outcomes


# ---------------------------------------------------------------------------------------------
# Primitive types against their model fields

Carrier = Callable[[Json], dict[str, Any]]


def _observation(**fields: Json) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **fields}


CARRIERS: dict[str, Carrier] = {
    "string": lambda v: {"resourceType": "Patient", "name": [{"family": v}]},
    "string list": lambda v: {"resourceType": "Patient", "name": [{"given": ["A", v]}]},
    "code": lambda v: {"resourceType": "Patient", "gender": v},
    "id": lambda v: {"resourceType": "Patient", "id": v},
    "uri": lambda v: {"resourceType": "Patient", "implicitRules": v},
    "canonical": lambda v: {"resourceType": "Patient", "meta": {"profile": [v]}},
    "url": lambda v: {"resourceType": "Patient", "photo": [{"url": v}]},
    "markdown": lambda v: _observation(note=[{"text": v}]),
    "xhtml": lambda v: {"resourceType": "Patient", "text": {"status": "generated", "div": v}},
    "date": lambda v: {"resourceType": "Patient", "birthDate": v},
    "dateTime": lambda v: {"resourceType": "Patient", "deceasedDateTime": v},
    "instant": lambda v: {"resourceType": "Patient", "meta": {"lastUpdated": v}},
    "time": lambda v: _observation(valueTime=v),
    "decimal": lambda v: _observation(valueQuantity={"value": v}),
    "integer": lambda v: _observation(valueInteger=v),
    "unsignedInt": lambda v: {"resourceType": "Patient", "photo": [{"size": v}]},
    "positiveInt": lambda v: {"resourceType": "Patient", "telecom": [{"rank": v}]},
    "base64Binary": lambda v: {"resourceType": "Patient", "photo": [{"data": v}]},
    "boolean": lambda v: {"resourceType": "Patient", "active": v},
}


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randrange(0, 6)))


def _random_temporal(rng: random.Random) -> str:
    year = rng.choice((0, 1, 999, 1000, 1999, 2000, 2020, 2021, 2100, 9999))
    month = rng.choice((0, 1, 2, 4, 9, 12, 13))
    day = rng.choice((0, 1, 28, 29, 30, 31, 32))
    text = f"{year:04d}"
    if rng.random() < 0.8:
        text += f"-{month:02d}"
        if rng.random() < 0.8:
            text += f"-{day:02d}"
    if rng.random() < 0.6:
        clock = (
            f"{rng.choice((0, 9, 23, 24))}:{rng.choice((0, 59, 60)):02d}:"
            f"{rng.choice((0, 59, 60, 61)):02d}"
        )
        clock = clock.zfill(8) if rng.random() < 0.9 else clock
        fraction = rng.choice(("", ".", ".5", ".123456", ".1234567890", ".1234567890123"))
        zone = rng.choice(("Z", "+00:00", "-00:00", "+14:00", "+14:01", "-13:59", "+1:00", ""))
        if rng.random() < 0.15:
            return clock + fraction + rng.choice(("", "Z"))
        text += rng.choice(("T", "T", "T", "t", " ")) + clock + fraction + zone
    return text


def _primitive_values(rng: random.Random) -> list[Json]:
    values: list[Json] = [*BAD_STRINGS, *BAD_NUMBERS, *WRONG_VALUES]
    values += ["ok", "male", "abc-1.2", "http://x.org/a", "urn:uuid:1", "YWJjZA==", "<div/>"]
    values += ["2020", "2020-02-29", "2020-02-29T23:59:59.999Z", "10:00:00", "1"]
    values += [_random_text(rng) for _ in range(40)]
    values += [_random_temporal(rng) for _ in range(60)]
    values += [rng.choice((-1, 1)) * rng.choice((0, 1, 7, 2**31 - 1, 2**31)) for _ in range(10)]
    values += [
        "".join(rng.choice("YWJjZA=+/ \n") for _ in range(rng.randrange(9))) for _ in range(20)
    ]
    return values


@pytest.mark.parametrize("kind", sorted(CARRIERS))
def test_primitive_values_accepted_fast_are_accepted_by_the_models(kind: str) -> None:
    rng = random.Random(f"{SEED}-{kind}")
    carrier = CARRIERS[kind]
    accepted = 0
    for value in _primitive_values(rng):
        resource = carrier(value)
        fast = fast_check(resource)
        full = model_accepts(resource)
        assert full or not fast, f"{kind}: fast_check accepted {value!r}"
        accepted += fast
    assert accepted >= 1, f"{kind}: no value took the fast path"


# ---------------------------------------------------------------------------------------------
# Specific rules


def _patient(**fields: Json) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


@pytest.mark.parametrize(
    ("resource", "fast"),
    [
        (_patient(), True),
        (_patient(gender=None), False),
        (_patient(name=[]), False),
        (_patient(name={"family": "x"}), False),
        (_patient(name=[{"family": ["x"]}]), False),
        (_patient(name=[None]), False),
        (_patient(name=[{}]), False),
        (_patient(active="true"), False),
        (_patient(active=1), False),
        (_patient(deceasedBoolean=True, deceasedDateTime="2020"), False),
        (_patient(multipleBirthInteger=True), False),
        (_patient(unknown=1), False),
        (_patient(fhir_comments="x"), False),
        (_patient(resource_type="Patient"), False),
        (_patient(_gender={}), False),
        (_patient(_gender=[{"id": "x"}]), False),
        (_patient(gender="male", _gender={"id": "x"}), True),
        (_patient(name=[{"given": ["a", None]}]), False),
        (_patient(name=[{"given": ["a", None], "_given": [None, {"id": "x"}]}]), True),
        (_patient(name=[{"given": ["a", None], "_given": [None, None]}]), False),
        (_patient(name=[{"given": ["a"], "_given": [None, {"id": "x"}]}]), False),
        (_patient(name=[{"_given": [{"id": "x"}]}]), True),
        (_patient(contained=[{"id": "x"}]), False),
        (_patient(contained=[{"resourceType": "Coding", "code": "x"}]), False),
        (_patient(contained=[{"resourceType": "Foo"}]), False),
        (_patient(contained=[{"resourceType": "Organization", "name": "x"}]), True),
        (_patient(birthDate="2023-02-29"), False),
        (_patient(deceasedDateTime="2016-12-31T23:59:60Z"), False),
        (_patient(meta={"lastUpdated": "2020-01-01"}), False),
        (_patient(id="a b"), False),
        (_patient(text={"status": "generated"}), False),
        (_patient(text={"status": "generated", "div": "<div>x</div>"}), True),
        (_patient(link=[{"type": "seealso"}]), False),
        ({"resourceType": "Observation", "status": "final"}, False),
        ({"resourceType": "Observation", "code": {"text": "x"}}, False),
        ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}, True),
        ({"resourceType": "Extension", "url": "x"}, False),
        ({"resourceType": "PatientContact"}, False),
        ({"resourceType": "Nope"}, False),
        ({"resourceType": ""}, False),
        ({"resourceType": None}, False),
        ({}, False),
        ([], False),
        ("Patient", False),
    ],
)
def test_rules(resource: Json, fast: bool) -> None:
    assert fast_check(resource) is fast
    if fast:
        assert model_accepts(resource)


def test_extension_choice_is_at_most_one() -> None:
    ext = {"url": "urn:x", "valueString": "a", "valueCode": "b"}
    assert not fast_check(_patient(extension=[ext]))
    assert not model_accepts(_patient(extension=[ext]))


def test_deep_nesting_falls_back() -> None:
    def nested(depth: int) -> dict[str, Any]:
        ext: dict[str, Any] = {"url": "urn:x", "valueString": "x"}
        for _ in range(depth):
            ext = {"url": "urn:x", "extension": [ext]}
        return _patient(extension=[ext])

    assert fast_check(nested(30))
    assert model_accepts(nested(38))
    assert not fast_check(nested(60))


def test_validate_resource_skips_the_models_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import carecoord.fhir.validation as validation

    def boom(res_type: str) -> None:
        raise AssertionError("the full validation ran")

    monkeypatch.setattr(validation, "get_fhir_model_class", boom)
    res_type, data = validate_resource(us_core_patient(), expected_type="Patient")
    assert res_type == "Patient"
    assert data["name"][0]["family"] == "Shaw"


def test_validate_resource_still_reports_invalid_elements() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_resource(_patient(gender=["male"], foo=1))
    assert "Patient.gender" in str(caught.value)
    assert "Patient.foo: Unknown element" in str(caught.value)


def test_warm_builds_tables_for_the_given_types() -> None:
    warm(("Patient", "Encounter", "NotAType"))
    assert fast_check({"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"}})


def test_a_checker_more_lenient_than_its_annotation_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fastvalidate, "_make_checker", lambda annotation, slow: lambda value: True)
    annotation = Annotated[int, Integer(min_length=0, max_length=5)]
    with pytest.raises(fastvalidate._Unsupported):
        fastvalidate._primitive_checker(annotation)


def test_a_model_with_an_unknown_validator_is_not_fast_checked() -> None:
    class GuardedPatient(Patient):
        @model_validator(mode="after")
        def no_twins(self) -> GuardedPatient:
            if self.multipleBirthInteger == 2:
                raise ValueError("no twins")
            return self

    table = fastvalidate._Builder({}).run(GuardedPatient)
    assert not table.fields
    assert not fastvalidate._check({"resourceType": "Patient"}, table, 1)
