"""Counting periods on the 2025 and 2026 calendars (民法典 第二百零一至二百零三条)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from core.deadlines import (
    DEFAULT_TZ,
    TenantCalendar,
    compute_due,
    due_report,
    load_schedule,
)
from tests.deadlines.conftest import DATA, at, day


def test_complaint_on_the_eve_of_national_day(calendar: TenantCalendar) -> None:
    # Received 2025-09-30: day 1 is 10-01, day 15 is Wednesday 10-15, a working day.
    result = compute_due(at("2025-09-30 16:45"), 15, "natural_days", calendar)
    assert result.last_day == day("2025-10-15")
    assert result.due == at("2025-10-16 00:00")  # 24:00 of 10-15, as an exclusive bound
    assert result.due.tzinfo == DEFAULT_TZ
    assert result.provisional is False
    assert result.years == (2025,)


def test_fifteenth_day_inside_the_holiday_moves_past_it(calendar: TenantCalendar) -> None:
    # Received Saturday 2025-09-20: day 15 is 10-05, inside the 10-01..10-08 block; the first
    # working day after the holiday is Thursday 10-09.
    result = compute_due(at("2025-09-20 09:00"), 15, "natural_days", calendar)
    assert result.last_day == day("2025-10-09")
    assert result.due == at("2025-10-10 00:00")


def test_last_day_on_an_ordinary_weekend_moves_to_monday(calendar: TenantCalendar) -> None:
    # 2025-11-07 + 15 = Saturday 11-22: weekends count as 法定休假日.
    result = compute_due(at("2025-11-07 10:00"), 15, "natural_days", calendar)
    assert result.last_day == day("2025-11-24")


def test_last_day_on_an_adjusted_working_saturday_stays(calendar: TenantCalendar) -> None:
    # 2025-09-26 + 15 = Saturday 10-11, a 调休 working day: no 法定休假日, no move.
    result = compute_due(at("2025-09-26 10:00"), 15, "natural_days", calendar)
    assert result.last_day == day("2025-10-11")


def test_adjusted_working_days_count_in_a_working_day_clock(calendar: TenantCalendar) -> None:
    # From Friday 2025-09-26: Sunday 09-28 (调休) is working day 1, 09-29 is 2, 09-30 is 3,
    # the holiday 10-01..10-08 is skipped, 10-09 is 4 and 10-10 is 5.
    result = compute_due(at("2025-09-26 10:00"), 5, "working_days", calendar)
    assert result.last_day == day("2025-10-10")
    # From 10-09: 10-10 is 1, Saturday 10-11 (调休) is 2.
    assert compute_due(at("2025-10-09 10:00"), 2, "working_days", calendar).last_day == day(
        "2025-10-11"
    )


def test_five_working_days_across_spring_festival_2026(calendar: TenantCalendar) -> None:
    # From Thursday 2026-02-12: 02-13 (1), Saturday 02-14 调休 (2), 02-15..02-23 off,
    # 02-24 (3), 02-25 (4), 02-26 (5).
    result = compute_due(at("2026-02-12 11:00"), 5, "working_days", calendar)
    assert result.last_day == day("2026-02-26")
    assert result.due == at("2026-02-27 00:00")


def test_natural_days_ending_in_spring_festival_2026(calendar: TenantCalendar) -> None:
    result = compute_due(at("2026-02-10 11:00"), 7, "natural_days", calendar)
    assert result.last_day == day("2026-02-24")


def test_start_day_is_taken_in_the_tenant_time_zone(calendar: TenantCalendar) -> None:
    # 17:30 UTC on 09-30 is 01:30 on 10-01 in Shanghai: day 1 is 10-02, day 15 is 10-16.
    start = dt.datetime(2025, 9, 30, 17, 30, tzinfo=dt.UTC)
    result = compute_due(start, 15, "natural_days", calendar)
    assert result.last_day == day("2025-10-16")
    assert result.due == at("2025-10-17 00:00")


def test_close_of_business() -> None:
    calendar = TenantCalendar(business_hours=(dt.time(9), dt.time(17, 30)))
    result = compute_due(
        at("2025-09-30 16:45"), 15, "natural_days", calendar, ends_at="close_of_business"
    )
    assert result.due == at("2025-10-15 17:30")
    # Without business hours, close of business falls back to 24:00.
    plain = compute_due(
        at("2025-09-30 16:45"), 15, "natural_days", TenantCalendar(), ends_at="close_of_business"
    )
    assert plain.due == at("2025-10-16 00:00")


def test_tenant_closing_day() -> None:
    calendar = TenantCalendar(extra_closed={day("2025-10-15")})
    # A natural-day period ending on the closed day moves to the next working day.
    assert compute_due(at("2025-09-30 10:00"), 15, "natural_days", calendar).last_day == day(
        "2025-10-16"
    )
    # A working-day clock skips it: from 10-13, 10-14 (1), 10-16 (2).
    assert compute_due(at("2025-10-13 10:00"), 2, "working_days", calendar).last_day == day(
        "2025-10-16"
    )


def test_tenant_working_saturday_counts() -> None:
    calendar = TenantCalendar(extra_working={day("2025-11-22")})
    assert compute_due(at("2025-11-21 10:00"), 1, "working_days", calendar).last_day == day(
        "2025-11-22"
    )


def test_hours_are_plain_elapsed_time(calendar: TenantCalendar) -> None:
    result = compute_due(at("2025-09-30 16:45"), 24, "hours", calendar)
    assert result.due == at("2025-10-01 16:45")
    assert result.years == ()
    # Hours are elapsed time, also across a DST change (a tenant outside China).
    new_york = TenantCalendar(tz=ZoneInfo("America/New_York"))
    start = dt.datetime(2025, 3, 8, 12, tzinfo=new_york.tz)
    due = compute_due(start, 24, "hours", new_york).due
    assert due.astimezone(dt.UTC) - start.astimezone(dt.UTC) == dt.timedelta(hours=24)
    assert due.hour == 13


def test_excluded_periods(calendar: TenantCalendar) -> None:
    start = at("2025-11-03 10:00")
    assert compute_due(start, 15, "natural_days", calendar).last_day == day("2025-11-18")
    # Mediation from 11-05 14:00 to 11-12 11:00 excludes 11-06..11-12: 7 days.
    mediation = [(at("2025-11-05 14:00"), at("2025-11-12 11:00"))]
    result = compute_due(start, 15, "natural_days", calendar, excluded=mediation)
    assert result.last_day == day("2025-11-25")
    # Within one day: nothing excluded.
    same_day = [(at("2025-11-05 09:00"), at("2025-11-05 17:00"))]
    assert compute_due(start, 15, "natural_days", calendar, excluded=same_day).last_day == day(
        "2025-11-18"
    )
    # Working days: 11-04 10:00 .. 11-06 15:00 excludes the working days 11-05 and 11-06.
    appraisal = [(at("2025-11-04 10:00"), at("2025-11-06 15:00"))]
    assert compute_due(start, 5, "working_days", calendar).last_day == day("2025-11-10")
    assert compute_due(start, 5, "working_days", calendar, excluded=appraisal).last_day == day(
        "2025-11-12"
    )
    # Hours: the exact paused time.
    hours = compute_due(start, 48, "hours", calendar, excluded=appraisal)
    assert hours.due == at("2025-11-05 10:00") + (at("2025-11-06 15:00") - at("2025-11-04 10:00"))


def test_excluded_period_after_the_due_changes_nothing(calendar: TenantCalendar) -> None:
    late = [(at("2025-12-01 10:00"), at("2025-12-05 10:00"))]
    result = compute_due(at("2025-11-03 10:00"), 15, "natural_days", calendar, excluded=late)
    assert result.last_day == day("2025-11-18")


def test_bad_input(calendar: TenantCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_due(dt.datetime(2025, 9, 30, 10), 15, "natural_days", calendar)
    with pytest.raises(ValueError, match="at least 1"):
        compute_due(at("2025-09-30 10:00"), 0, "natural_days", calendar)
    with pytest.raises(ValueError, match="unknown unit"):
        compute_due(at("2025-09-30 10:00"), 3, "weeks", calendar)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ends before it begins"):
        compute_due(
            at("2025-09-30 10:00"),
            3,
            "natural_days",
            calendar,
            excluded=[(at("2025-10-02 10:00"), at("2025-10-01 10:00"))],
        )


def test_deadline_into_2027_is_provisional_until_the_notice_is_loaded(
    calendar: TenantCalendar,
) -> None:
    # A complaint received 2026-12-10 and extended to 60 days ends on 2027-02-08.
    start = at("2026-12-10 10:00")
    provisional = compute_due(start, 60, "natural_days", calendar)
    # Computed 2027: 02-05..02-08 (除夕 to 初三) off, so the period ends on Tuesday 02-09.
    assert provisional.last_day == day("2027-02-09")
    assert provisional.provisional is True
    assert provisional.years == (2026, 2027)
    # With the (invented, test-only) 2027 notice loaded: 02-05..02-13 off, 02-14 a Sunday.
    loaded = calendar.with_loaded(load_schedule(DATA / "2027-test-fixture.yaml"))
    final = compute_due(start, 60, "natural_days", loaded)
    assert final.provisional is False
    assert final.last_day == day("2027-02-15")
    assert final.due != provisional.due


def test_due_report(calendar: TenantCalendar) -> None:
    report = due_report(at("2026-12-10 10:00"), days=60, working_days=None, calendar=calendar)
    assert report == {
        "start": "2026-12-10T10:00:00+08:00",
        "due": "2027-02-10T00:00:00+08:00",
        "last_day": "2027-02-09",
        "unit": "natural_days",
        "amount": 60,
        "provisional": True,
        "calendar_years": {2026: "official", 2027: "provisional"},
    }
    report = due_report(at("2026-02-12 11:00"), days=None, working_days=5, calendar=calendar)
    assert (report["unit"], report["last_day"], report["provisional"]) == (
        "working_days",
        "2026-02-26",
        False,
    )
    with pytest.raises(ValueError, match="exactly one"):
        due_report(at("2026-02-12 11:00"), days=5, working_days=5, calendar=calendar)
