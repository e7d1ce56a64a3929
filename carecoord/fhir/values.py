"""FHIR primitive values turned into index values: date ranges, normalised strings, number ranges.

Dates become closed ranges of microseconds since the Unix epoch (UTC). A value without a time zone
is read as UTC. Precision defines the range: ``2025-07`` covers the whole month.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

__all__ = [
    "MAX_TIME",
    "MIN_TIME",
    "date_range",
    "format_instant",
    "normalize_string",
    "number_range",
    "to_micros",
]

MIN_TIME = -(2**62)
MAX_TIME = 2**62
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def to_micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def format_instant(micros: int) -> str:
    """Microseconds since the epoch as a FHIR instant (UTC, microsecond precision)."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def date_range(value: str) -> tuple[int, int]:
    """The closed microsecond range a FHIR date, dateTime or instant covers.

    Raises ValueError for anything that is not a FHIR date/dateTime/instant. Results are cached:
    the same few dates recur (a batch's timestamps, birth dates, a search's bounds).
    """
    return _cached_date_range(value) if isinstance(value, str) else _date_range(value)


def _date_range(value: str) -> tuple[int, int]:
    match = _DATE_RE.match(value.strip())
    if not match:
        raise ValueError(f"not a FHIR date/dateTime: {value!r}")
    y, m, d, hh, mm, ss, frac, tz = match.groups()
    year = int(y)
    if not 1 < year < 9999:  # a range or time-zone shift may leave datetime's years
        return _date_range_edge(match)
    if m is None:
        low = _day(year, 1, 1)
        return low, _day(year + 1, 1, 1) - 1
    month = int(m)
    if d is None:
        low = _day(year, month, 1)
        return low, _day(year + month // 12, month % 12 + 1, 1) - 1
    low = _day(year, month, int(d))
    if hh is None:
        return low, low + _DAY - 1
    if mm is None:
        raise ValueError(f"a time needs minutes: {value!r}")
    hour, minute = int(hh), int(mm)
    second = int(ss) if ss is not None else 0
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"not a FHIR time of day: {value!r}")
    low += ((hour * 60 + minute) * 60 + second) * _US
    if frac:
        low += int((frac[1:] + "000000")[:6])
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        low -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * _US
    if ss is None:
        step = 60 * _US
    elif frac:
        step = 10 ** max(0, 6 - (len(frac) - 1))
    else:
        step = _US
    return low, low + step - 1


_cached_date_range = lru_cache(maxsize=4096)(_date_range)
_DAY = 86_400 * _US
_EPOCH_ORDINAL = _EPOCH.toordinal()


def _day(year: int, month: int, day: int) -> int:
    """Microseconds from the epoch to midnight UTC of a calendar day (ValueError if none)."""
    return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * _DAY


def _date_range_edge(match: re.Match[str]) -> tuple[int, int]:
    """:func:`date_range` with datetime arithmetic, for the first and last years datetime
    knows (where a range or a time-zone shift may leave them)."""
    g = match.groupdict()
    year = int(g["y"])
    offset = timedelta(0)
    tz = g["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
    elif g["d"] is None:
        month = int(g["m"])
        start = datetime(year, month, 1, tzinfo=UTC)
        days = calendar.monthrange(year, month)[1]
        end = start + timedelta(days=days)
    elif g["H"] is None:
        start = datetime(year, int(g["m"]), int(g["d"]), tzinfo=UTC)
        end = start + timedelta(days=1)
    else:
        if g["M"] is None:
            raise ValueError(f"a time needs minutes: {match.string!r}")
        second = int(g["S"]) if g["S"] is not None else 0
        frac = g["f"] or ""
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        start = datetime(
            year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), second, micro, tzinfo=UTC
        )
        start -= offset
        if g["S"] is None:
            step = timedelta(minutes=1)
        elif frac:
            step = timedelta(microseconds=10 ** max(0, 6 - (len(frac) - 1)))
        else:
            step = timedelta(seconds=1)
        end = start + step
    low = to_micros(start)
    high = to_micros(end) - 1 if end is not None else MAX_TIME
    return low, high


_COMBINING = re.compile(r"[\u0300-\u036f]")


def normalize_string(value: str) -> str:
    """Case- and accent-insensitive form used for string search (FHIR default matching)."""
    if value.isascii():  # nothing to decompose (most names and addresses): same result, faster
        return value.lower().strip()
    decomposed = unicodedata.normalize("NFKD", value)
    return _COMBINING.sub("", decomposed).casefold().strip()


def number_range(text: str) -> tuple[float, float, float]:
    """A search number with its implicit precision range: ``5.4`` → (5.4, 5.35, 5.45).

    Raises ValueError for anything that is not a decimal number.
    """
    try:
        dec = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not dec.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(dec), float(dec - half), float(dec + half)
