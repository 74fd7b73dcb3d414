"""Year schedules of Chinese public holidays: official, provisional (computed) and loaded.

Three sources of a year's days off and adjusted working days (调休):

* ``official``: the State Council notices as shipped in the ``chinese_calendar`` library
  (2004 to the newest year the installed version knows);
* ``loaded``: a notice transcribed by a platform admin into a YAML file
  (see :mod:`core.deadlines.schedule_file`), stored in the database by the caller;
* ``provisional``: for a year nobody has published yet, the statutory holidays of
  全国年节及纪念日放假办法 computed from the lunar calendar, with no 调休 swaps (those are set
  only by the annual notice).

Everything here is pure and cached per year; nothing reads files or the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Literal

import chinese_calendar
from chinese_calendar.constants import Holiday
from lunar_python import Lunar

ScheduleSource = Literal["official", "provisional", "loaded"]

#: Chinese names of the library's holiday labels ("Spring Festival" -> "春节").
_LIBRARY_NAMES: Mapping[str, str] = MappingProxyType({h.value: h.chinese for h in Holiday})

#: The 2024 amendment of 全国年节及纪念日放假办法 (State Council decree 795) applies from this year.
AMENDED_2024_FROM = 2025


@dataclass(frozen=True)
class YearSchedule:
    """The days off and adjusted working days of one calendar year.

    ``holidays`` are the official days off (including the weekend days inside a holiday block, as
    the notices list them); ``workdays`` are the Saturdays and Sundays made working days (调休).
    ``notice`` names the notice a loaded schedule transcribes; ``names`` labels days for display.
    """

    year: int
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    source: ScheduleSource
    notice: str = ""
    names: Mapping[dt.date, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        object.__setattr__(self, "workdays", frozenset(self.workdays))
        object.__setattr__(self, "names", MappingProxyType(dict(self.names)))
        stray = sorted(d for d in self.holidays | self.workdays if d.year != self.year)
        if stray:
            raise ValueError(f"schedule for {self.year} lists days of another year: {stray[0]}")
        both = sorted(self.holidays & self.workdays)
        if both:
            raise ValueError(f"schedule for {self.year}: {both[0]} is both a holiday and a workday")


@cache
def library_years() -> frozenset[int]:
    """Years for which the installed ``chinese_calendar`` has the State Council notice."""
    return frozenset(d.year for d in chinese_calendar.holidays)


@lru_cache(maxsize=64)
def official_schedule(year: int) -> YearSchedule | None:
    """The library's schedule for ``year``, or ``None`` when the library does not know the year."""
    if year not in library_years():
        return None
    holidays = {d: n for d, n in chinese_calendar.holidays.items() if d.year == year}
    workdays = {d: n for d, n in chinese_calendar.workdays.items() if d.year == year}
    names = {d: _LIBRARY_NAMES.get(n, n) for d, n in (holidays | workdays).items()}
    return YearSchedule(
        year=year,
        holidays=frozenset(holidays),
        workdays=frozenset(workdays),
        source="official",
        notice="chinese_calendar " + str(getattr(chinese_calendar, "__version__", "")),
        names=names,
    )


def _lunar_to_solar(lunar_year: int, month: int, day: int) -> dt.date:
    solar = Lunar.fromYmd(lunar_year, month, day).getSolar()
    return dt.date(solar.getYear(), solar.getMonth(), solar.getDay())


def spring_festival_eve(year: int) -> dt.date:
    """农历除夕 falling in Gregorian ``year``: the last day of the lunar year before 正月初一.

    Taken as the day before 正月初一, so a 腊月 of 29 or 30 days (or a leap 腊月) needs no case.
    """
    return _lunar_to_solar(year, 1, 1) - dt.timedelta(days=1)


def qingming(year: int) -> dt.date:
    """The day of the 清明 solar term in ``year`` (Beijing time, as lunar_python computes it)."""
    solar = Lunar.fromYmd(year, 1, 1).getJieQiTable()["清明"]
    return dt.date(solar.getYear(), solar.getMonth(), solar.getDay())


@lru_cache(maxsize=64)
def statutory_holidays(year: int) -> Mapping[dt.date, str]:
    """The statutory days off of 全国年节及纪念日放假办法 for ``year``, computed, without 调休.

    From 2025 (the 2024 amendment): 元旦 1 day, 春节 4 days (除夕 and 正月初一 to 初三), 清明 1 day,
    劳动节 2 days (May 1-2), 端午 1 day (五月初五), 中秋 1 day (八月十五), 国庆节 3 days (Oct 1-3).
    Earlier years use the text then in force: 2014-2024 春节 初一 to 初三 and 劳动节 May 1;
    2008-2013 春节 除夕 to 初二; before 2008 no 清明, 端午, 中秋, and 劳动节 May 1-3.
    """
    new_year = _lunar_to_solar(year, 1, 1)
    eve = spring_festival_eve(year)
    if year >= AMENDED_2024_FROM:
        spring = [eve, *(new_year + dt.timedelta(days=i) for i in range(3))]
        labour = 2
    elif year >= 2014:
        spring, labour = [new_year + dt.timedelta(days=i) for i in range(3)], 1
    elif year >= 2008:
        spring, labour = [eve, new_year, new_year + dt.timedelta(days=1)], 1
    else:
        spring, labour = [new_year + dt.timedelta(days=i) for i in range(3)], 3
    days: dict[dt.date, str] = {dt.date(year, 1, 1): "元旦"}
    days.update((d, "春节") for d in spring)
    days.update((dt.date(year, 5, i), "劳动节") for i in range(1, labour + 1))
    if year >= 2008:
        days[qingming(year)] = "清明"
        days[_lunar_to_solar(year, 5, 5)] = "端午"
        days[_lunar_to_solar(year, 8, 15)] = "中秋"
    days.update((dt.date(year, 10, i), "国庆节") for i in range(1, 4))
    return MappingProxyType(dict(sorted(days.items())))


@lru_cache(maxsize=64)
def provisional_schedule(year: int) -> YearSchedule:
    """A schedule computed from the statutory holidays alone, for a year with no notice yet."""
    names = statutory_holidays(year)
    return YearSchedule(
        year=year,
        holidays=frozenset(names),
        workdays=frozenset(),
        source="provisional",
        notice="全国年节及纪念日放假办法 (computed, no 调休)",
        names=names,
    )
