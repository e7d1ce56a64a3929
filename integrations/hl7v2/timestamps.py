"""HL7 v2 timestamps (DTM/TS) to FHIR dateTime and date, with a default zone for local times.

HL7 v2 lets a sender omit the UTC offset (``YYYYMMDDHHMM``); such a time is the sender's local
time, which CareCoord reads in the feed's configured zone (``default_timezone``, default UTC).
Precision is kept: ``202401`` is the FHIR ``2024-01``, a day stays a date, and a time gets seconds
and an offset as FHIR requires.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

import hl7  # type: ignore[import-untyped]

__all__ = ["fhir_date", "fhir_datetime", "parse_timestamp"]

# YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ], each part only after the one before it.
_DTM = re.compile(
    r"(?P<digits>\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?)"
    r"(?P<offset>[+-](?:0\d|1[0-4])[0-5]\d)?"
)


def parse_timestamp(value: str, zone: tzinfo) -> tuple[datetime, int]:
    """An aware datetime and its precision in digits (4 year ... 14 seconds); ValueError if bad.

    A value without an offset is in ``zone``.
    """
    text = value.strip()
    match = _DTM.fullmatch(text)
    if match is None:
        raise ValueError("not an HL7 timestamp")
    moment: datetime = hl7.parse_datetime(text)  # checks the calendar (month 13, day 32 ...)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment, len(match["digits"].split(".")[0])


def fhir_datetime(value: str, zone: tzinfo) -> str:
    """A FHIR dateTime for an HL7 timestamp; ValueError if it is not one."""
    moment, precision = parse_timestamp(value, zone)
    if precision == 4:
        return f"{moment.year:04d}"
    if precision == 6:
        return f"{moment.year:04d}-{moment.month:02d}"
    if precision == 8:
        return moment.date().isoformat()
    timespec = "microseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=timespec)


def fhir_date(value: str, zone: tzinfo) -> str:
    """A FHIR date (the date as written, no zone conversion) for an HL7 date or timestamp."""
    moment, precision = parse_timestamp(value, zone)
    if precision == 4:
        return f"{moment.year:04d}"
    if precision == 6:
        return f"{moment.year:04d}-{moment.month:02d}"
    return moment.date().isoformat()
