"""Index values: string search normalisation (case- and accent-insensitive, the same on every
path) and the microsecond ranges of FHIR dates."""

from __future__ import annotations

import calendar
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from carecoord.fhir.values import MAX_TIME, date_range, normalize_string

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


# -- date ranges ----------------------------------------------------------------------------------

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _by_datetime(value: str) -> tuple[int, int]:
    """The definition: datetime arithmetic over the whole precision the value gives."""
    g = _DATE.match(value.strip())
    if g is None:
        raise ValueError(value)
    year, epoch = int(g["y"]), datetime(1970, 1, 1, tzinfo=UTC)
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
    elif g["d"] is None:
        start = datetime(year, int(g["m"]), 1, tzinfo=UTC)
        end = start + timedelta(days=calendar.monthrange(year, int(g["m"]))[1])
    elif g["H"] is None:
        start = datetime(year, int(g["m"]), int(g["d"]), tzinfo=UTC)
        end = start + timedelta(days=1)
    else:
        if g["M"] is None:
            raise ValueError(value)
        frac = g["f"] or ""
        start = datetime(
            year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0),
            int((frac[1:] + "000000")[:6]) if frac else 0, tzinfo=UTC,
        )  # fmt: skip
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            start -= sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6]))
        if g["S"] is None:
            step = timedelta(minutes=1)
        elif frac:
            step = timedelta(microseconds=10 ** max(0, 6 - (len(frac) - 1)))
        else:
            step = timedelta(seconds=1)
        end = start + step
    low = (start - epoch) // timedelta(microseconds=1)
    return low, (end - epoch) // timedelta(microseconds=1) - 1 if end else MAX_TIME


def _dates(rng: random.Random) -> Iterator[str]:
    years = (1, 2, 1900, 1969, 1970, 2000, 2024, 2026, 9998, 9999)
    for _ in range(40_000):
        text = f"{rng.choice(years) if rng.random() < 0.6 else rng.randrange(0, 10_000):04d}"
        parts = (
            f"-{rng.choice((0, 1, 2, 12, 13, rng.randrange(1, 13))):02d}",
            f"-{rng.choice((0, 1, 28, 29, 30, 31, 32)):02d}",
            f"T{rng.choice((0, 23, 24, rng.randrange(24))):02d}",
            f":{rng.choice((0, 59, 60, rng.randrange(60))):02d}",
            f":{rng.choice((0, 59, 60, rng.randrange(60))):02d}",
            "." + str(rng.randrange(10**9)).zfill(rng.randrange(1, 10)),
        )
        text += "".join(parts[: rng.randrange(len(parts) + 1)])
        if "T" in text and rng.random() < 0.7:
            text += rng.choice(("Z", "+05:30", "-14:00", "+00:00", "-99:59"))
        yield text


def _outcome(f: Callable[[str], tuple[int, int]], value: str) -> object:
    try:
        return f(value)
    except ValueError:
        return ValueError  # an invalid month, day or time of day, or not a date at all
    except OverflowError:
        return OverflowError  # past the last microsecond datetime knows (year 9999)


def test_date_ranges_are_the_datetime_arithmetic_for_every_precision_and_edge() -> None:
    rng = random.Random(7)
    checked = 0
    for value in _dates(rng):
        assert _outcome(date_range, value) == _outcome(_by_datetime, value), value
        checked += 1
    assert checked == 40_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03", (1_772_323_200_000_000, 1_775_001_599_999_999)),
        ("2024-02-29", (1_709_164_800_000_000, 1_709_251_199_999_999)),
        ("2026-03-01T10:00+02:00", (1_772_352_000_000_000, 1_772_352_059_999_999)),
        ("2026-03-01T10:00:00.5Z", (1_772_359_200_500_000, 1_772_359_200_599_999)),
        (" 1970 ", (0, 31_535_999_999_999)),
        ("9999", (253_370_764_800_000_000, MAX_TIME)),
    ],
)
def test_date_ranges_cover_what_the_precision_says(value: str, expected: tuple[int, int]) -> None:
    assert date_range(value) == expected


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13", "2026-01-01T24:00", "2026-01-01T10"])
def test_impossible_dates_are_refused_every_time(value: str) -> None:
    for _ in range(2):  # a refusal is not remembered as a result
        with pytest.raises(ValueError):
            date_range(value)


def test_a_date_that_is_not_text_is_refused_as_before() -> None:
    with pytest.raises(AttributeError):
        date_range(20260101)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        date_range(["2026"])  # type: ignore[arg-type]
