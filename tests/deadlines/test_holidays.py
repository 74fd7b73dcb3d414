"""Year schedules: the library's official years and the provisional computed ones."""

from __future__ import annotations

import datetime as dt

import chinese_calendar
import pytest
from lunar_python import Lunar, LunarMonth

from core.deadlines.holidays import (
    YearSchedule,
    official_schedule,
    provisional_schedule,
    qingming,
    spring_festival_eve,
    statutory_holidays,
)
from tests.deadlines.conftest import day


@pytest.mark.parametrize("year", [2025, 2026])
def test_computed_statutory_days_are_official_days_off(year: int) -> None:
    # The 2024 amendment's 13 statutory days, computed from the lunar calendar, are all days
    # off in the State Council notice of the year.
    computed = statutory_holidays(year)
    official = official_schedule(year)
    assert official is not None
    assert len(computed) == 13
    assert set(computed) <= official.holidays


@pytest.mark.parametrize("year", range(2014, 2025))
def test_computed_days_match_the_2013_text_in_earlier_years(year: int) -> None:
    official = official_schedule(year)
    assert official is not None
    assert set(statutory_holidays(year)) <= official.holidays


@pytest.mark.parametrize(
    ("year", "eve", "tomb_sweeping", "dragon_boat", "mid_autumn"),
    [
        (2026, "2026-02-16", "2026-04-05", "2026-06-19", "2026-09-25"),
        (2027, "2027-02-05", "2027-04-05", "2027-06-09", "2027-09-15"),
    ],
)
def test_lunar_dates(
    year: int, eve: str, tomb_sweeping: str, dragon_boat: str, mid_autumn: str
) -> None:
    names = statutory_holidays(year)
    assert spring_festival_eve(year) == day(eve)
    assert qingming(year) == day(tomb_sweeping)
    assert names[day(eve)] == "春节"
    assert names[day(tomb_sweeping)] == "清明"
    assert names[day(dragon_boat)] == "端午"
    assert names[day(mid_autumn)] == "中秋"


@pytest.mark.parametrize("year", range(2025, 2036))
def test_eve_is_the_last_day_of_the_twelfth_lunar_month(year: int) -> None:
    # 腊月 has 29 or 30 days; the eve is its last day whichever it is (2025: 29, 2024: 30).
    last = LunarMonth.fromYm(year - 1, 12).getDayCount()
    solar = Lunar.fromYmd(year - 1, 12, last).getSolar()
    assert spring_festival_eve(year) == dt.date(solar.getYear(), solar.getMonth(), solar.getDay())


def test_provisional_2027_has_the_2024_statutory_days_and_no_swaps() -> None:
    schedule = provisional_schedule(2027)
    assert schedule.source == "provisional"
    assert schedule.workdays == frozenset()
    assert sorted(schedule.holidays) == [
        day("2027-01-01"),
        day("2027-02-05"),
        day("2027-02-06"),
        day("2027-02-07"),
        day("2027-02-08"),
        day("2027-04-05"),
        day("2027-05-01"),
        day("2027-05-02"),
        day("2027-06-09"),
        day("2027-09-15"),
        day("2027-10-01"),
        day("2027-10-02"),
        day("2027-10-03"),
    ]


def test_official_schedule_comes_from_the_library() -> None:
    schedule = official_schedule(2025)
    assert schedule is not None
    assert schedule.source == "official"
    assert day("2025-09-28") in schedule.workdays
    assert day("2025-10-08") in schedule.holidays
    assert schedule.names[day("2025-10-01")] == "国庆节"


def test_library_does_not_know_2027() -> None:
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(day("2027-01-04"))
    assert official_schedule(2027) is None


def test_year_schedule_rejects_days_of_another_year_and_overlaps() -> None:
    with pytest.raises(ValueError, match="another year"):
        YearSchedule(2027, frozenset({day("2026-12-31")}), frozenset(), "loaded")
    with pytest.raises(ValueError, match="both a holiday and a workday"):
        YearSchedule(2027, frozenset({day("2027-01-02")}), frozenset({day("2027-01-02")}), "loaded")
