"""Search-index extraction: the compiled extractors give exactly the rows of a plain walk.

``extract_index`` runs each type's parameters compiled into small functions (a top-level key
check, the path walked without [x] handling where it has none, rows built in place). The plain
walk below is the definition those must match row for row, in the same order, and with the same
exception types on input that is not FHIR: over real Synthea data, the resources a PCCM batch
writes, hand-written edge cases and a seeded mutation fuzzer.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from carecoord.fhir.searchparams import (
    KINDS,
    IndexRows,
    SearchParam,
    SearchRegistry,
    default_registry,
    extract_index,
    parse_reference,
)
from carecoord.fhir.values import MAX_TIME, MIN_TIME, date_range, normalize_string
from carecoord.pccm.model import Accepting, Decision, Pcp, RuleNote
from carecoord.pccm.resources import (
    Assignment,
    care_team,
    establish_care_task,
    member_notice,
    provenance,
)
from tests.conftest import SHARED_DATA
from tests.pccm.helpers import default_program

SEED = int(os.environ.get("CARECOORD_FUZZ_SEED", "20260101"))
MUTANTS = int(os.environ.get("CARECOORD_FUZZ_MUTANTS", "3000"))

# ---------------------------------------------------------------------------------------------
# The plain walk: every parameter of the type, every path, every value, rows deduplicated.

_CONTACT = {"phone", "fax", "email", "pager", "url", "sms", "other"}
_NAME = ("family", "given", "prefix", "suffix", "text")
_ADDRESS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _walk(node: Any, steps: tuple[str, ...], choice: str = "") -> Iterator[tuple[Any, str]]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps, choice)
    elif not steps:
        yield node, choice
    elif isinstance(node, dict):
        head, rest = steps[0], steps[1:]
        if head.endswith("[x]"):
            prefix = head[:-3]
            for key, value in node.items():
                if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                    yield from _walk(value, rest, key[len(prefix) :])
        elif node.get(head) is not None:
            yield from _walk(node[head], rest, choice)


def _clip(text: Any, size: int) -> Any:
    return text if text is None or len(text) <= size else text[:size]


def _plain_rows(
    param: SearchParam, value: Any, choice: str, last: str
) -> Iterator[tuple[Any, ...]]:
    if param.type in ("token", "uri"):
        pairs: list[tuple[Any, Any]] = []
        if isinstance(value, bool):
            pairs.append((None, "true" if value else "false"))
        elif isinstance(value, str):
            pairs.append((None, value))
        elif isinstance(value, dict):
            if "coding" in value:
                for coding in value["coding"] or ():
                    if isinstance(coding, dict) and ("code" in coding or "system" in coding):
                        pairs.append((coding.get("system"), coding.get("code")))
            elif "code" in value:
                pairs.append((value.get("system"), value["code"]))
            elif "value" in value:
                contact = last == "telecom" or value.get("system") in _CONTACT
                pairs.append((None if contact else value.get("system"), str(value["value"])))
        for system, code in pairs:
            if system is not None or code is not None:
                yield _clip(system, 2048), _clip(code, 255)
    elif param.type == "string":
        texts: list[Any] = []
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for part in _NAME if ("family" in value or "given" in value) else _ADDRESS:
                item = value.get(part)
                texts.extend(
                    [item] if isinstance(item, str) else item if isinstance(item, list) else []
                )
        for text in texts:
            if isinstance(text, str) and normalize_string(text):
                yield _clip(normalize_string(text), 255), _clip(text, 2048)
    elif param.type == "reference":
        ref = value.get("reference") if isinstance(value, dict) else value
        if isinstance(ref, str):
            target_type, target_id, url = parse_reference(ref)
            in_scope = param.targets is None or target_type in (None, *param.targets)
            if (target_type is not None or url is not None) and in_scope:
                yield target_type, target_id, url
    elif param.type == "date":
        try:
            if isinstance(value, str) and choice in ("", "DateTime", "Date", "Instant"):
                yield date_range(value)
            elif isinstance(value, dict) and ("start" in value or "end" in value):
                low = date_range(value["start"])[0] if value.get("start") else MIN_TIME
                high = date_range(value["end"])[1] if value.get("end") else MAX_TIME
                yield low, high
            elif isinstance(value, dict) and "event" in value:
                for event in value["event"] or ():
                    yield date_range(event)
        except (ValueError, TypeError):
            return
    elif param.type == "number" or choice in ("", "Quantity", "Decimal", "Integer"):
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            yield float(value), None, None
        elif isinstance(value, dict) and isinstance(value.get("value"), int | float):
            yield float(value["value"]), value.get("system"), value.get("code") or value.get("unit")


def plain_index(res_type: str, resource: dict[str, Any], registry: SearchRegistry) -> IndexRows:
    rows: IndexRows = {kind: [] for kind in KINDS}
    for param in registry.for_type(res_type):
        seen: set[tuple[Any, ...]] = set()
        for path in param.paths:
            for value, choice in _walk(resource, path):
                if param.where and not (
                    isinstance(value, dict) and all(value.get(k) == v for k, v in param.where)
                ):
                    continue
                for row in _plain_rows(param, value, choice, path[-1]):
                    if row not in seen:
                        seen.add(row)
                        rows[param.table].append((param.code, *row))
    return rows


def _outcome(extract: Any, res_type: str, resource: dict[str, Any]) -> Any:
    try:
        rows = extract(res_type, resource, default_registry())
    except Exception as exc:  # compared by type: input that is not FHIR
        return type(exc).__name__
    return {kind: [[(type(v).__name__, v) for v in row] for row in r] for kind, r in rows.items()}


def assert_same_rows(res_type: str, resource: dict[str, Any]) -> None:
    assert _outcome(extract_index, res_type, resource) == _outcome(plain_index, res_type, resource)


# ---------------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def synthea() -> list[dict[str, Any]]:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/synthea-r4 is not present")
    bundles = [json.loads(p.read_bytes()) for p in sorted(Path(SHARED_DATA).glob("*.json"))]
    return [entry["resource"] for bundle in bundles for entry in bundle["entry"]]


def pccm_resources() -> list[dict[str, Any]]:
    """A member's PCCM outputs as a batch writes them (Patient, CareTeam, Task, notice) and the
    transaction's Provenance."""
    pcp = Pcp(
        id="pr-00012",
        pcp_type="general",
        min_age=0,
        max_age=130,
        sexes=frozenset({"female", "male"}),
        accepting=Accepting.NEW,
        practice="org-0001",
        practitioner="dr-00012",
        location=(35.7, -78.6),
        name="Dr Doc12",
    )
    note = RuleNote("distance", True, "nearest available within 30 miles")
    decision = Decision("m-000123", pcp.id, "distance", note.reason, (note,), (), 3, 4.2)
    day = date(2026, 7, 1)
    a = Assignment(
        default_program(), "m-000123", 1, pcp, decision, "auto", day, day, day, day,
        "2026-07-01T10:00:00.123456Z",
    )  # fmt: skip
    patient = {
        "resourceType": "Patient",
        "id": "m-000123",
        "meta": {"versionId": "2", "lastUpdated": "2026-07-01T10:00:00.123456Z"},
        "gender": "female",
        "birthDate": "1980-04-15",
        "address": [{"use": "home", "line": ["123 Main St"], "postalCode": "27601"}],
        "generalPractitioner": [{"reference": "PractitionerRole/pr-00012", "display": "Dr"}],
    }
    targets = ["Patient/m-000123/_history/2", "CareTeam/ct", "Task/t", "Communication/c"]
    prov = provenance([a], targets)
    return [patient, care_team(a, None), establish_care_task(a), member_notice(a), prov]


def edge_cases() -> list[dict[str, Any]]:
    """Shapes the fast paths treat specially: [x] choices, where-filtered telecoms, meta, nested
    lists, duplicates, clipping, every reference form, Period and Timing dates, bad dates."""
    long = "x" * 3000
    return [
        {
            "resourceType": "Patient",
            "meta": {"tag": [{"system": "s", "code": "t"}], "profile": ["http://p", "http://p"]},
            "active": False,
            "telecom": [
                {"system": "email", "value": "A@B.org"},
                {"system": "phone", "value": 5550100},
                {"value": "no-system"},
            ],
            "name": [{"family": "Ünal", "given": ["Zoë", "", 7]}, {"text": long}],
            "identifier": [{"system": long, "value": long}, {"system": "u", "value": "1"}] * 2,
            "deceasedDateTime": "2020-02-30",
            "communication": [{"language": {"coding": [{"code": "es"}, {"system": "only"}]}}],
            "link": [{"other": {"reference": "RelatedPerson/r1"}}, {"other": "Patient/p2"}],
            "managingOrganization": {"reference": "Practitioner/not-an-org"},
            "address": [[{"city": "Nested"}], {"city": "Durham", "line": ["1 A St"]}],
        },
        {
            "resourceType": "Observation",
            "meta": {"security": [{"code": "R"}], "source": "x"},
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}] * 2},
            "subject": {"reference": "https://ehr.example/fhir/Patient/p1/_history/3"},
            "encounter": {"reference": "urn:uuid:0a0b"},
            "performer": [{"reference": "#contained"}, {"reference": "not a reference"}],
            "effectivePeriod": {"start": "2024-01-01T10:00:00+02:00"},
            "effectiveness": {"start": "2024-05-05"},  # not effective[x]: lower case follows
            "valueQuantity": {"value": 7, "unit": "mg", "system": "http://unitsofmeasure.org"},
            "component": [{"valueInteger": 3}, {"valueString": "no"}, {"valueQuantity": {}}],
        },
        {
            "resourceType": "CarePlan",
            "activity": [
                {"detail": {"scheduledTiming": {"event": ["2024-01-01", "bad", "2024-02"]}}},
                {"detail": {"scheduledString": "2024-03-03"}},
                {"detail": {"scheduledPeriod": {"end": "2024"}}},
            ],
        },
        {
            "resourceType": "RiskAssessment",
            "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": 1}}],
        },
        {"resourceType": "Task", "status": True, "for": "Patient/p1", "owner": [None, {}]},
        {"resourceType": "Basic"},
    ]


# ---------------------------------------------------------------------------------------------
# Tests


def test_pccm_outputs_index_as_the_plain_walk_does() -> None:
    for resource in pccm_resources():
        assert_same_rows(resource["resourceType"], resource)


def test_pccm_outputs_have_the_rows_searches_rely_on() -> None:
    patient, _, task, _, prov = pccm_resources()
    registry = default_registry()
    gp = extract_index("Patient", patient, registry)["reference"]
    assert gp == [("general-practitioner", "PractitionerRole", "pr-00012", None)]
    task_tokens = dict((p, c) for p, _, c in extract_index("Task", task, registry)["token"])
    assert task_tokens["status"] == "requested" and task_tokens["code"] == "establish-care"
    refs = extract_index("Provenance", prov, registry)["reference"]
    assert ("patient", "Patient", "m-000123", None) in refs
    assert [r for r in refs if r[0] == "target"][-1] == ("target", "Communication", "c", None)


def test_hand_written_edge_cases_index_as_the_plain_walk_does() -> None:
    for resource in edge_cases():
        assert_same_rows(resource["resourceType"], resource)


def test_synthea_resources_index_as_the_plain_walk_does(synthea: list[dict[str, Any]]) -> None:
    assert len(synthea) > 5000
    for resource in synthea:
        assert_same_rows(resource["resourceType"], resource)


def test_a_registry_of_its_own_is_compiled_for_itself() -> None:
    registry = SearchRegistry(
        [
            SearchParam("Patient", "nick", "string", (("name", "text"), ("alias",)), None),
            SearchParam("Patient", "mail", "token", (("telecom",),), None, (("system", "email"),)),
        ]
    )
    resource = {
        "resourceType": "Patient",
        "alias": ["Bo", "Bo"],
        "name": [{"text": "Robert"}],
        "telecom": [{"system": "email", "value": "r@x.org"}, {"system": "phone", "value": "1"}],
    }
    rows = extract_index("Patient", resource, registry)
    assert rows["string"] == [("nick", "robert", "Robert"), ("nick", "bo", "Bo")]
    assert rows["token"] == [("mail", None, "r@x.org")]
    shipped = extract_index("Patient", resource, default_registry())["string"]
    assert shipped and all(code != "nick" for code, *_ in shipped)


# -- mutation fuzzer ----------------------------------------------------------------------------

_ODD_VALUES: tuple[Any, ...] = (
    None, True, 0, 2.5, "", " x ", "2024-13-01", "2024-02-29T24:00:00Z", "Patient/1",
    "urn:uuid:1", "#c", [], {}, [None], {"value": 1}, {"code": 3}, {"coding": {"code": "a"}},
    {"start": 5}, {"event": [1]}, {"system": ["s"], "value": "v"}, {"reference": 7}, ["a", ["b"]],
)  # fmt: skip


def _containers(node: Any) -> Iterator[dict[str, Any] | list[Any]]:
    if isinstance(node, dict | list):
        yield node
        for child in node.values() if isinstance(node, dict) else node:
            yield from _containers(child)


def _mutate(rng: random.Random, base: dict[str, Any]) -> dict[str, Any]:
    resource = copy.deepcopy(base)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(list(_containers(resource)))
        if isinstance(target, list):
            if target and rng.random() < 0.5:
                target.append(copy.deepcopy(rng.choice(target)))  # a duplicate
            else:
                target.insert(0, copy.deepcopy(rng.choice(_ODD_VALUES)))
        elif target:
            key = rng.choice(sorted(target))
            if key == "resourceType":
                continue
            op = rng.random()
            if op < 0.3:
                del target[key]
            elif op < 0.6:
                target[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
            elif op < 0.8:
                target[key] = [target[key], copy.deepcopy(target[key])]
            else:
                target[key + rng.choice(("DateTime", "Period", "Quantity", "String"))] = target[key]
    return resource


def test_mutants_index_as_the_plain_walk_does(synthea: list[dict[str, Any]]) -> None:
    rng = random.Random(SEED)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in [*synthea, *pccm_resources(), *edge_cases()]:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    bases = [r for group in by_type.values() for r in rng.sample(group, min(6, len(group)))]
    failed = 0
    for _ in range(MUTANTS):
        mutant = _mutate(rng, rng.choice(bases))
        res_type = mutant["resourceType"]
        if _outcome(extract_index, res_type, mutant) != _outcome(plain_index, res_type, mutant):
            failed += 1
            assert_same_rows(res_type, mutant)  # shows the first difference
    assert failed == 0
