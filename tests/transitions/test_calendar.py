"""Business days: US federal holidays as observed, closures, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from carecoord.transitions.calendar import BusinessCalendar, federal_holidays

NY = BusinessCalendar.us_federal()

FEDERAL_2025 = {
    date(2025, 1, 1),  # New Year's Day
    date(2025, 1, 20),  # Martin Luther King Jr. Day
    date(2025, 2, 17),  # Washington's Birthday
    date(2025, 5, 26),  # Memorial Day
    date(2025, 6, 19),  # Juneteenth
    date(2025, 7, 4),  # Independence Day
    date(2025, 9, 1),  # Labor Day
    date(2025, 10, 13),  # Columbus Day
    date(2025, 11, 11),  # Veterans Day
    date(2025, 11, 27),  # Thanksgiving
    date(2025, 12, 25),  # Christmas
}


def test_the_eleven_federal_holidays_and_no_inauguration_day() -> None:
    assert federal_holidays(2025) == FEDERAL_2025
    # Inauguration Day (Mon 2025-01-20 coincides with MLK day; 2029-01-20 is a Saturday,
    # 2033-01-20 a Thursday) is a DC holiday, not a federal one.
    assert NY.is_business_day(date(2033, 1, 20))
    assert not BusinessCalendar.us_federal(subdivision="DC").is_business_day(date(2033, 1, 20))


def test_new_year_2028_is_observed_on_friday_2027_12_31() -> None:
    assert date(2027, 12, 31) in federal_holidays(2027)
    assert not NY.is_business_day(date(2027, 12, 31))
    # and a calendar whose first question is about 2027 finds it too
    fresh = BusinessCalendar.us_federal()
    assert fresh.add_business_days(date(2027, 12, 30), 1) == date(2028, 1, 3)


@pytest.mark.parametrize(
    ("holiday", "observed"),
    [
        (date(2026, 7, 4), date(2026, 7, 3)),  # Saturday -> Friday before
        (date(2027, 7, 4), date(2027, 7, 5)),  # Sunday -> Monday after
        (date(2027, 12, 25), date(2027, 12, 24)),
        (date(2028, 11, 11), date(2028, 11, 10)),
    ],
)
def test_weekend_holidays_are_observed_on_a_weekday(holiday: date, observed: date) -> None:
    assert holiday.weekday() >= 5
    assert not NY.is_business_day(observed)
    assert observed.weekday() < 5


def test_weekends_are_not_business_days() -> None:
    assert NY.is_business_day(date(2025, 7, 7))  # Monday
    assert not NY.is_business_day(date(2025, 7, 5))  # Saturday
    assert not NY.is_business_day(date(2025, 7, 6))  # Sunday


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2025, 7, 7), 2, date(2025, 7, 9)),  # Monday -> Wednesday
        (date(2025, 7, 10), 2, date(2025, 7, 14)),  # Thursday -> Monday over the weekend
        (date(2025, 7, 11), 2, date(2025, 7, 15)),  # Friday -> Tuesday
        (date(2025, 7, 12), 2, date(2025, 7, 15)),  # Saturday -> Tuesday (Monday is day 1)
        (date(2025, 7, 13), 1, date(2025, 7, 14)),  # Sunday -> Monday
        (date(2025, 7, 3), 1, date(2025, 7, 7)),  # Thursday before the Jul 4 holiday
        (date(2025, 12, 24), 1, date(2025, 12, 26)),  # over Christmas
        (date(2025, 11, 26), 2, date(2025, 12, 1)),  # Thanksgiving Thursday, then a weekend
    ],
)
def test_add_business_days_counts_from_the_day_after(start: date, n: int, expected: date) -> None:
    assert NY.add_business_days(start, n) == expected
    assert NY.business_days_between(start, expected) == n


def test_add_zero_business_days_rolls_forward_only_off_business_days() -> None:
    assert NY.add_business_days(date(2025, 7, 7), 0) == date(2025, 7, 7)
    assert NY.add_business_days(date(2025, 7, 4), 0) == date(2025, 7, 7)
    with pytest.raises(ValueError):
        NY.add_business_days(date(2025, 7, 7), -1)


def test_business_days_between_for_countdowns() -> None:
    assert NY.business_days_between(date(2025, 7, 2), date(2025, 7, 2)) == 0
    assert NY.business_days_between(date(2025, 7, 2), date(2025, 7, 7)) == 2  # 3rd, (4th), 7th
    assert NY.business_days_between(date(2025, 7, 7), date(2025, 7, 2)) == -2


def test_closures_and_removed_holidays_and_state_holidays() -> None:
    cal = BusinessCalendar.us_federal(closures=[date(2025, 12, 26)], removed=[date(2025, 10, 13)])
    assert not cal.is_business_day(date(2025, 12, 26))  # the organisation is closed
    assert cal.is_business_day(date(2025, 10, 13))  # works on Columbus Day
    assert cal.add_business_days(date(2025, 12, 24), 1) == date(2025, 12, 29)
    texas = BusinessCalendar.us_federal("America/Chicago", subdivision="TX")
    assert not texas.is_business_day(date(2025, 11, 28))  # day after Thanksgiving in Texas
    assert NY.is_business_day(date(2025, 11, 28))


def test_bad_zone_or_subdivision_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        BusinessCalendar.us_federal("Mars/Olympus")
    with pytest.raises(ValueError, match="subdivision"):
        BusinessCalendar.us_federal(subdivision="ZZ")


def test_local_date_uses_the_organisation_time_zone() -> None:
    late_evening_ny = datetime(2025, 7, 3, 2, 30, tzinfo=UTC)  # 22:30 on Jul 2 in New York
    assert NY.local_date(late_evening_ny) == date(2025, 7, 2)
    assert BusinessCalendar.us_federal("UTC").local_date(late_evening_ny) == date(2025, 7, 3)
    with pytest.raises(ValueError, match="aware"):
        NY.local_date(datetime(2025, 7, 3, 2, 30))


def test_end_of_day_is_local_midnight_in_utc_across_dst() -> None:
    assert NY.end_of_day(date(2025, 7, 7)) == datetime(2025, 7, 8, 4, 0, tzinfo=UTC)  # EDT
    assert NY.end_of_day(date(2025, 12, 1)) == datetime(2025, 12, 2, 5, 0, tzinfo=UTC)  # EST
