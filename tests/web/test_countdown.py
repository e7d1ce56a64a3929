"""Business-day countdowns of checklist deadlines (rules §1, §8 TCM worked examples)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from carecoord.web.countdown import business_days_between, deadline_of, parse_deadline

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("discharge", "contact_due"),
    [
        (date(2025, 7, 2), date(2025, 7, 7)),  # Jul 4 holiday
        (date(2025, 11, 7), date(2025, 11, 12)),  # Veterans Day Tue 11-11
        (date(2026, 7, 2), date(2026, 7, 7)),  # Jul 4 on Saturday, observed Fri 07-03
        (date(2027, 12, 30), date(2028, 1, 4)),  # New Year 2028 observed Fri 2027-12-31
    ],
)
def test_tcm_contact_deadline_is_two_business_days_after_discharge(
    discharge: date, contact_due: date
) -> None:
    assert business_days_between(discharge, contact_due) == 2
    # the day before the deadline is only one business day after discharge
    assert business_days_between(discharge, date.fromordinal(contact_due.toordinal() - 1)) < 2


def test_counting_backwards_gives_business_days_late() -> None:
    assert business_days_between(date(2025, 7, 7), date(2025, 7, 2)) == -2
    assert business_days_between(date(2025, 7, 7), date(2025, 7, 7)) == 0


def test_a_date_deadline_lasts_until_the_end_of_that_day_in_the_organisations_zone() -> None:
    due = "2025-07-07"
    late_evening = datetime(2025, 7, 7, 23, 30, tzinfo=NY)
    next_morning = datetime(2025, 7, 8, 0, 0, 1, tzinfo=NY)
    today = deadline_of(due, now=late_evening, tz=NY, done=False)
    assert today is not None and today.state == "due-today" and today.label == "due today"
    late = deadline_of(due, now=next_morning, tz=NY, done=False)
    assert late is not None and late.state == "overdue"
    assert late.label == "overdue by 1 business day"


def test_an_instant_deadline_is_compared_as_an_instant() -> None:
    parsed = parse_deadline("2025-07-07T16:00:00Z", NY)
    assert parsed == (date(2025, 7, 7), datetime(2025, 7, 7, 16, tzinfo=UTC))
    before = deadline_of(
        "2025-07-07T16:00:00Z", now=datetime(2025, 7, 7, 15, tzinfo=UTC), tz=NY, done=False
    )
    after = deadline_of(
        "2025-07-07T16:00:00Z", now=datetime(2025, 7, 7, 17, tzinfo=UTC), tz=NY, done=False
    )
    assert before is not None and before.state == "due-today"
    assert after is not None and after.state == "overdue"


def test_countdown_labels_and_states_before_the_deadline() -> None:
    wednesday = datetime(2025, 7, 2, 10, tzinfo=NY)
    soon = deadline_of("2025-07-03", now=wednesday, tz=NY, done=False)
    later = deadline_of("2025-07-09", now=wednesday, tz=NY, done=False)  # Jul 4 and a weekend
    assert soon is not None and (soon.state, soon.label) == ("due-soon", "1 business day left")
    assert later is not None and (later.state, later.label) == ("on-track", "4 business days left")


def test_a_done_task_is_done_whatever_the_date_and_bad_values_have_no_deadline() -> None:
    done = deadline_of("2020-01-01", now=datetime(2025, 1, 1, tzinfo=UTC), tz=NY, done=True)
    assert done is not None and done.state == "done"
    assert (
        deadline_of("not a date", now=datetime(2025, 1, 1, tzinfo=UTC), tz=NY, done=False) is None
    )
    assert deadline_of(None, now=datetime(2025, 1, 1, tzinfo=UTC), tz=NY, done=False) is None
