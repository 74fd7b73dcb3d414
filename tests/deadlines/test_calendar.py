"""The tenant calendar: day predicates, precedence of sources, tenant overrides."""

from __future__ import annotations

import datetime as dt

import pytest

from core.deadlines import TenantCalendar, load_schedule
from tests.deadlines.conftest import DATA, day


def test_adjusted_working_days_and_holidays_2025(calendar: TenantCalendar) -> None:
    assert calendar.is_working_day(day("2025-09-28"))  # Sunday, 调休
    assert calendar.is_working_day(day("2025-10-11"))  # Saturday, 调休
    assert not calendar.is_working_day(day("2025-10-08"))  # Wednesday, National Day block
    assert not calendar.is_working_day(day("2025-10-12"))  # ordinary Sunday
    assert calendar.is_working_day(day("2025-10-09"))


def test_statutory_holiday_is_not_a_plain_weekend(calendar: TenantCalendar) -> None:
    assert calendar.is_statutory_holiday(day("2025-10-01"))
    assert not calendar.is_statutory_holiday(day("2025-10-12"))
    assert calendar.is_rest_day(day("2025-10-12"))
    assert not calendar.is_rest_day(day("2025-10-11"))  # a working Saturday is no rest day


def test_precedence_loaded_over_library_over_provisional(calendar: TenantCalendar) -> None:
    assert calendar.source_of(2026) == "official"
    assert calendar.source_of(2027) == "provisional"
    fixture = load_schedule(DATA / "2027-test-fixture.yaml")
    loaded = calendar.with_loaded(fixture, load_schedule(DATA / "2026-notice.yaml"))
    assert loaded.source_of(2027) == "loaded"
    assert loaded.source_of(2026) == "loaded"
    assert loaded.schedule_for(2027) is fixture
    # Provisional 2027: 2027-02-09 is an ordinary Tuesday; the loaded notice makes it a day off.
    assert calendar.is_working_day(day("2027-02-09"))
    assert not loaded.is_working_day(day("2027-02-09"))
    assert loaded.is_working_day(day("2027-02-20"))  # Saturday 调休 of the fixture
    # The calendar that had no 2027 notice is unchanged.
    assert calendar.source_of(2027) == "provisional"


def test_provisional_years(calendar: TenantCalendar) -> None:
    dates = [day("2026-12-31"), day("2027-01-04"), day("2028-03-01")]
    assert calendar.provisional_years(dates) == {2027, 2028}
    loaded = calendar.with_loaded(load_schedule(DATA / "2027-test-fixture.yaml"))
    assert loaded.provisional_years(dates) == {2028}


def test_tenant_overrides() -> None:
    closed = day("2025-10-15")
    both = day("2025-10-16")
    working_saturday = day("2025-10-18")
    calendar = TenantCalendar(extra_closed={closed, both}, extra_working={working_saturday, both})
    assert not calendar.is_working_day(closed)
    assert not calendar.is_working_day(both)  # extra_closed wins
    assert calendar.is_working_day(working_saturday)
    # Overrides are the tenant's; the national rest-day predicates ignore them.
    assert calendar.is_rest_day(working_saturday)
    assert not calendar.is_rest_day(closed)


def test_calendar_is_immutable_and_hashable(calendar: TenantCalendar) -> None:
    same = TenantCalendar()
    assert calendar == same
    assert hash(calendar) == hash(same)
    assert {calendar: 1}[same] == 1
    other = TenantCalendar(extra_closed={day("2025-10-15")})
    assert other != calendar
    with pytest.raises(AttributeError):
        calendar.tz = calendar.tz


def test_loaded_key_must_match_the_schedule_year() -> None:
    fixture = load_schedule(DATA / "2027-test-fixture.yaml")
    with pytest.raises(ValueError, match="holds the schedule of 2027"):
        TenantCalendar({2028: fixture})


def test_business_hours_must_open_before_closing() -> None:
    with pytest.raises(ValueError, match="open before"):
        TenantCalendar(business_hours=(dt.time(18), dt.time(9)))


def test_working_day_arithmetic_across_years(calendar: TenantCalendar) -> None:
    # From Wednesday 2025-12-31: 2026-01-01..03 off, 2026-01-04 Sunday 调休 is a working day.
    start = day("2025-12-31").toordinal()
    assert calendar.nth_working_after(start, 1) == day("2026-01-04").toordinal()
    assert calendar.nth_working_after(start, 2) == day("2026-01-05").toordinal()
    assert calendar.count_working(start, day("2026-01-05").toordinal()) == 2
