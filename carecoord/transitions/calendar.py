"""Business days of an organisation: Monday to Friday minus observed holidays, in its time zone.

US federal holidays come from the ``holidays`` package (5 U.S.C. 6103, observed dates: a Saturday
holiday is observed the Friday before, a Sunday one the Monday after, which can cross a year).
The default is the package's ``public`` category for the whole country: the 11 federal holidays
and no Inauguration Day (that is a District of Columbia holiday, included with
``subdivision="DC"``). A subdivision adds its state holidays; ``closures`` adds an organisation's
own closed days and ``removed`` takes holidays off the list (days the organisation works).
Holiday sets are cached per (subdivision, year), business-day sums per calendar.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

__all__ = ["BusinessCalendar", "federal_holidays"]

_ONE_DAY = timedelta(days=1)
_MEMO_SIZE = 100_000  # (start, n) answers kept per calendar: a few MB at most
_US_SUBDIVISIONS: frozenset[str] = frozenset(holidays.country_holidays("US").subdivisions)


@lru_cache(maxsize=512)
def federal_holidays(year: int, subdivision: str | None = None) -> frozenset[date]:
    """The observed US holidays that fall in ``year`` (federal, plus ``subdivision``'s).

    Observed dates are collected from the neighbouring years too, so that New Year's Day 2028
    (a Saturday) is a holiday on Friday 2027-12-31 whatever the package does at year ends.
    """
    days: set[date] = set()
    for source_year in (year - 1, year, year + 1):
        calendar = holidays.country_holidays(
            "US", subdiv=subdivision, years=source_year, observed=True
        )
        days.update(d for d in calendar if d.year == year)
    return frozenset(days)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as America/New_York)"
        ) from None


@dataclass(frozen=True)
class BusinessCalendar:
    """Monday to Friday minus holidays (and closures) in ``timezone``."""

    timezone: ZoneInfo
    subdivision: str | None = None
    closures: frozenset[date] = frozenset()
    removed: frozenset[date] = frozenset()
    _years: dict[int, frozenset[date]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _added: dict[tuple[date, int], date] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def us_federal(
        cls,
        timezone: str = "America/New_York",
        *,
        subdivision: str | None = None,
        closures: Iterable[date] = (),
        removed: Iterable[date] = (),
    ) -> BusinessCalendar:
        """US federal holidays as observed, optionally a state's (``subdivision``, e.g. "TX")."""
        if subdivision is not None and subdivision not in _US_SUBDIVISIONS:
            raise ValueError(f"unknown US subdivision {subdivision!r}")
        return cls(
            timezone=_zone(timezone),
            subdivision=subdivision,
            closures=frozenset(closures),
            removed=frozenset(removed),
        )

    @property
    def timezone_name(self) -> str:
        return self.timezone.key

    def holidays_in(self, year: int) -> frozenset[date]:
        """The holidays (as observed) and closures of ``year``, less the removed days."""
        days = self._years.get(year)
        if days is None:
            base = federal_holidays(year, self.subdivision)
            extra = {d for d in self.closures if d.year == year}
            days = frozenset((base | extra) - self.removed)
            self._years[year] = days
        return days

    def is_business_day(self, d: date) -> bool:
        return d.weekday() < 5 and d not in self.holidays_in(d.year)

    def add_business_days(self, start: date, n: int) -> date:
        """The ``n``-th business day after ``start`` (counting starts the day after; ``n`` >= 0).

        ``n == 0`` is ``start`` itself when it is a business day, else the next business day.
        """
        found = self._added.get((start, n))
        if found is not None:
            return found
        if n < 0:
            raise ValueError("n must not be negative")
        day, left = start, n
        if n == 0:
            while not self.is_business_day(day):
                day += _ONE_DAY
        while left:
            day += _ONE_DAY
            if self.is_business_day(day):
                left -= 1
        if len(self._added) < _MEMO_SIZE:
            self._added[(start, n)] = day
        return day

    def business_days_between(self, start: date, end: date) -> int:
        """Business days after ``start`` up to and including ``end`` (negative when ``end`` is
        before ``start``): ``business_days_between(d, add_business_days(d, n)) == n``."""
        if end < start:
            return -self.business_days_between(end, start)
        count = 0
        day = start + _ONE_DAY
        while day <= end:
            if self.is_business_day(day):
                count += 1
            day += _ONE_DAY
        return count

    def local_date(self, instant: datetime) -> date:
        """The date of an aware instant in the calendar's time zone."""
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError("instant must be timezone-aware")
        return instant.astimezone(self.timezone).date()

    def end_of_day(self, d: date) -> datetime:
        """The aware UTC instant at which local day ``d`` ends (local midnight that follows)."""
        return datetime.combine(d + _ONE_DAY, time(0), tzinfo=self.timezone).astimezone(UTC)
