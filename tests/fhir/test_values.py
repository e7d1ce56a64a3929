"""String search normalisation: case- and accent-insensitive, the same on every path."""

from __future__ import annotations

import re
import unicodedata

import pytest

from carecoord.fhir.values import normalize_string

_COMBINING = re.compile(r"[\u0300-\u036f]")


def _by_decomposition(value: str) -> str:
    return _COMBINING.sub("", unicodedata.normalize("NFKD", value)).casefold().strip()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  O'Brien ", "o'brien"),
        ("ZOË", "zoe"),
        ("Ångström", "angstrom"),
        ("Straße", "strasse"),
        ("ﬁnn", "finn"),  # a compatibility ligature
        ("", ""),
    ],
)
def test_names_match_regardless_of_case_and_accents(value: str, expected: str) -> None:
    assert normalize_string(value) == expected


def test_plain_ascii_takes_the_short_path_with_the_same_result() -> None:
    samples = ["Smith", "MAIN ST 12\t", "Tab\tand\nnewline ", "a-b_c.d@e", " ", "Ω-free"]
    for value in samples:
        assert normalize_string(value) == _by_decomposition(value)
