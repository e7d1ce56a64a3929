"""Deadlines of checklist Tasks counted in business days in the organisation's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "Deadline",
    "DeadlineState",
    "business_days_between",
    "deadline_of",
    "is_business_day",
    "parse_deadline",
]

DeadlineState = Literal["done", "overdue", "due-today", "due-soon", "on-track"]


@lru_cache(maxsize=64)
def _federal(year: int) -> frozenset[date]:
    # A holiday observed across a year boundary (Jan 1 2028 -> Fri Dec 31 2027) appears only when
    # the next year is asked for too.
    days = holidays.country_holidays("US", years=(year - 1, year, year + 1), observed=True)
    return frozenset(d for d in days if d.year == year)


def is_business_day(day: date) -> bool:
    """Monday to Friday and not a US federal holiday as observed (rules §1)."""
    return day.weekday() < 5 and day not in _federal(day.year)


@lru_cache(maxsize=8192)
def business_days_between(start: date, end: date) -> int:
    """Business days after ``start`` up to and including ``end``; negative when ``end`` is
    before ``start`` (counting then runs backwards), 0 when they are the same day."""
    if end == start:
        return 0
    step = 1 if end > start else -1
    count = 0
    day = start
    while day != end:
        day += timedelta(days=step)
        if is_business_day(day if step > 0 else day + timedelta(days=1)):
            count += step
    return count


@lru_cache(maxsize=8192)
def parse_deadline(value: str, tz: ZoneInfo) -> tuple[date, datetime] | None:
    """``restriction.period.end`` as (local due date, the instant it ends).

    A date means "by the end of that day" in ``tz``; an instant is taken as is.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
            return day, end
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=tz)
    return instant.astimezone(tz).date(), instant


@dataclass(frozen=True, slots=True)
class Deadline:
    """A Task's deadline as the screens show it."""

    due_date: date
    due_at: datetime
    business_days_left: int
    state: DeadlineState

    @property
    def label(self) -> str:
        """Short words for the countdown column."""
        days = self.business_days_left
        if self.state == "done":
            return f"due {self.due_date.isoformat()}"
        if self.state == "overdue":
            late = -days if days < 0 else 0
            return "overdue" if late == 0 else f"overdue by {late} business day{_s(late)}"
        if self.state == "due-today":
            return "due today"
        return f"{days} business day{_s(days)} left"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def deadline_of(value: str | None, *, now: datetime, tz: ZoneInfo, done: bool) -> Deadline | None:
    """The countdown of a deadline at ``now`` (None when there is no readable deadline)."""
    if not value:
        return None
    parsed = parse_deadline(value, tz)
    if parsed is None:
        return None
    due_date, due_at = parsed
    today = now.astimezone(tz).date()
    left = business_days_between(today, due_date)
    state: DeadlineState
    if done:
        state = "done"
    elif now >= due_at:
        state = "overdue"
    elif due_date == today:
        state = "due-today"
    elif left <= 1:
        state = "due-soon"
    else:
        state = "on-track"
    return Deadline(due_date=due_date, due_at=due_at, business_days_left=left, state=state)
