"""Member rights and dates: choice window, annual opportunity, cause, re-enrolment gap."""

from __future__ import annotations

from datetime import date

from carecoord.pccm.program import EffectiveDateRule, effective_date, months_after
from carecoord.pccm.rules import age_on, change_right, change_window_end, reenrolment_pcp
from tests.pccm.helpers import default_program

NOTICE = date(2026, 1, 15)


def _right(today: date, *, cause: bool = False, last: date | None = None) -> tuple[bool, str]:
    r = change_right(
        default_program(),
        today=today,
        notice_date=NOTICE,
        assigned_since=NOTICE,
        last_change_without_cause=last,
        for_cause=cause,
    )
    return r.allowed, r.basis


def test_choice_window_is_90_days_from_the_notice() -> None:
    assert change_window_end(default_program(), NOTICE) == date(2026, 4, 15)
    assert _right(date(2026, 4, 15)) == (True, "within the choice window")
    allowed, basis = _right(date(2026, 4, 16))
    assert not allowed
    assert "closed on 2026-04-15" in basis and "2027-01-15" in basis


def test_annual_opportunity_and_cause() -> None:
    assert _right(date(2027, 1, 15)) == (True, "annual opportunity")
    assert _right(date(2027, 3, 1), last=date(2026, 3, 1)) == (True, "annual opportunity")
    assert not _right(date(2027, 1, 15), last=date(2026, 6, 1))[0]
    assert _right(date(2026, 8, 1), cause=True) == (True, "for cause")


def test_reenrolment_within_two_months_returns_the_same_pcp() -> None:
    ended = [
        ("old", date(2025, 1, 1), "disenrolled"),
        ("pcp-a", date(2026, 3, 31), "disenrolled"),
        ("pcp-b", date(2026, 4, 10), "changed"),
    ]
    assert reenrolment_pcp(ended, date(2026, 5, 31), 2) == "pcp-a"
    assert reenrolment_pcp(ended, date(2026, 6, 1), 2) is None
    assert reenrolment_pcp([("x", date(2026, 3, 1), "pcp-left")], date(2026, 3, 2), 2) is None


def test_effective_dates_and_ages() -> None:
    assert effective_date(EffectiveDateRule.FIRST_OF_NEXT_MONTH, date(2026, 12, 31)) == date(
        2027, 1, 1
    )
    assert effective_date(EffectiveDateRule.NEXT_DAY, date(2026, 2, 28)) == date(2026, 3, 1)
    assert months_after(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert months_after(date(2026, 3, 31), -24) == date(2024, 3, 31)
    assert age_on(date(2010, 6, 2), date(2026, 6, 1)) == 15
    assert age_on(date(2010, 6, 2), date(2026, 6, 2)) == 16
