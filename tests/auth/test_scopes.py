"""SMART scope grammar: v2 permissions and query restrictions, v1 read/write."""

from __future__ import annotations

import pytest

from carecoord.smart.scopes import ClinicalScope, InvalidScope, parse_scope, parse_scopes


def test_v2_scopes() -> None:
    s = parse_scope("patient/Task.rs")
    assert s == ClinicalScope("patient", "Task", frozenset("rs"))
    assert s.covers("Task", "r") and s.covers("Task", "s")
    assert not s.covers("Task", "u") and not s.covers("Observation", "r")
    everything = parse_scope("user/*.cruds")
    assert everything is not None and everything.covers("Condition", "d")


def test_v2_query_restriction() -> None:
    s = parse_scope("patient/Observation.rs?category=http://x.org/cs|laboratory")
    assert s is not None
    assert s.params == (("category", "http://x.org/cs|laboratory"),)
    assert str(s) == "patient/Observation.rs?category=http://x.org/cs|laboratory"


def test_v1_scopes_map_to_v2_permissions() -> None:
    assert parse_scope("patient/Observation.read") == ClinicalScope(
        "patient", "Observation", frozenset("rs")
    )
    assert parse_scope("system/*.write") == ClinicalScope("system", "*", frozenset("cud"))
    assert parse_scope("user/*.*") == ClinicalScope("user", "*", frozenset("cruds"))


def test_non_clinical_scopes_are_skipped() -> None:
    scopes = parse_scopes("openid fhirUser launch launch/patient offline_access patient/*.rs")
    assert [str(s) for s in scopes] == ["patient/*.rs"]


@pytest.mark.parametrize(
    "text", ["patient/Observation.xyz", "patient/Observation.sr", "user/Task.", "system/task.rs"]
)
def test_malformed_clinical_scopes_are_errors(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(text)
