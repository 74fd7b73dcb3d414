"""The tenant calendar: which days are working days for one tenant.

A :class:`TenantCalendar` combines, per year, the best schedule available (a loaded notice, else
the ``chinese_calendar`` library, else the provisional computed schedule) with the tenant's own
overrides, in the tenant's time zone. It is immutable: a newly loaded year means a new calendar.
Per-year lookups are precomputed once into a flag per day and a running count of working days,
so that counting N working days is a binary search, not a walk.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from core.deadlines.holidays import (
    ScheduleSource,
    YearSchedule,
    official_schedule,
    provisional_schedule,
)

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
_MAX_SEARCH_YEARS = 50


class _Year:
    """Precomputed working-day data of one year on one tenant calendar."""

    __slots__ = ("cum", "first", "last", "provisional", "schedule", "working", "year")

    def __init__(
        self,
        schedule: YearSchedule,
        extra_closed: frozenset[dt.date],
        extra_working: frozenset[dt.date],
    ) -> None:
        self.year = schedule.year
        self.schedule = schedule
        self.provisional = schedule.source == "provisional"
        first_day = dt.date(schedule.year, 1, 1)
        self.first = first_day.toordinal()
        self.last = dt.date(schedule.year, 12, 31).toordinal()
        flags = bytearray()
        cum: list[int] = []
        count = 0
        for offset in range(self.last - self.first + 1):
            day = first_day + dt.timedelta(days=offset)
            if day in extra_closed:
                working = False
            elif day in extra_working:
                working = True
            elif day in schedule.holidays:
                working = False
            elif day in schedule.workdays:
                working = True
            else:
                working = day.weekday() < 5
            flags.append(working)
            count += working
            cum.append(count)
        self.working = bytes(flags)
        #: cum[i] = number of working days from Jan 1 up to and including day i of the year.
        self.cum = cum


class TenantCalendar:
    """One tenant's working-day calendar (immutable, hashable).

    :param loaded: platform-loaded schedules by year; they take precedence over the library and
        the provisional computation.
    :param tz: the tenant's time zone; day arithmetic happens in it.
    :param extra_closed: days the tenant is closed although the national calendar works
        (e.g. a local ethnic holiday, a government-ordered typhoon closure). Wins over
        ``extra_working`` when a day is in both.
    :param extra_working: days the tenant works although the national calendar rests.
    :param business_hours: ``(open, close)``; the close is the end of a period whose rule ends
        at close of business (民法典 第二百零三条第二款).
    """

    __slots__ = (
        "_key",
        "_years",
        "business_hours",
        "extra_closed",
        "extra_working",
        "loaded",
        "tz",
    )

    _key: tuple[Any, ...]
    _years: dict[int, _Year]
    loaded: Mapping[int, YearSchedule]
    tz: ZoneInfo
    extra_closed: frozenset[dt.date]
    extra_working: frozenset[dt.date]
    business_hours: tuple[dt.time, dt.time] | None

    def __init__(
        self,
        loaded: Mapping[int, YearSchedule] | None = None,
        tz: ZoneInfo = DEFAULT_TZ,
        *,
        extra_closed: Iterable[dt.date] = (),
        extra_working: Iterable[dt.date] = (),
        business_hours: tuple[dt.time, dt.time] | None = None,
    ) -> None:
        loaded = dict(loaded or {})
        for year, schedule in loaded.items():
            if schedule.year != year:
                raise ValueError(f"loaded[{year}] holds the schedule of {schedule.year}")
        if business_hours is not None:
            opens, closes = business_hours
            if not opens < closes:
                raise ValueError(f"business hours must open before they close: {business_hours}")
        set_ = object.__setattr__
        set_(self, "loaded", MappingProxyType(loaded))
        set_(self, "tz", tz)
        set_(self, "extra_closed", frozenset(extra_closed))
        set_(self, "extra_working", frozenset(extra_working))
        set_(self, "business_hours", business_hours)
        set_(
            self,
            "_key",
            (
                tuple(sorted(loaded.items(), key=lambda item: item[0])),
                str(tz.key),
                self.extra_closed,
                self.extra_working,
                business_hours,
            ),
        )
        set_(self, "_years", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TenantCalendar is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TenantCalendar):
            return NotImplemented
        return bool(self._key == other._key)

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (
            f"TenantCalendar(loaded={sorted(self.loaded)}, tz={self.tz.key!r}, "
            f"extra_closed={len(self.extra_closed)}, extra_working={len(self.extra_working)}, "
            f"business_hours={self.business_hours})"
        )

    def with_loaded(self, *schedules: YearSchedule) -> TenantCalendar:
        """A new calendar with ``schedules`` added to (or replacing) the loaded years."""
        loaded = dict(self.loaded)
        loaded.update((s.year, s) for s in schedules)
        return TenantCalendar(
            loaded,
            self.tz,
            extra_closed=self.extra_closed,
            extra_working=self.extra_working,
            business_hours=self.business_hours,
        )

    # -- per-year data ---------------------------------------------------------------------

    def _year(self, year: int) -> _Year:
        data: _Year | None = self._years.get(year)
        if data is None:
            data = _Year(self.schedule_for(year), self.extra_closed, self.extra_working)
            self._years[year] = data
        return data

    def schedule_for(self, year: int) -> YearSchedule:
        """The schedule used for ``year``: loaded, else the library's, else provisional."""
        cached: _Year | None = self._years.get(year)
        if cached is not None:
            return cached.schedule
        schedule = self.loaded.get(year) or official_schedule(year)
        return schedule if schedule is not None else provisional_schedule(year)

    def source_of(self, year: int) -> ScheduleSource:
        """Where the schedule of ``year`` comes from (``official``, ``loaded``, ``provisional``)."""
        return self._year(year).schedule.source

    def is_provisional_year(self, year: int) -> bool:
        """Whether the schedule of ``year`` is provisional (computed, no notice known)."""
        return self._year(year).provisional

    def provisional_years(self, dates: Iterable[dt.date]) -> set[int]:
        """The years among ``dates`` whose schedule is provisional (no notice known yet)."""
        return {y for y in {d.year for d in dates} if self._year(y).provisional}

    # -- day predicates --------------------------------------------------------------------

    def is_working_day(self, day: dt.date) -> bool:
        """Whether ``day`` is a working day for this tenant (holidays, 调休, overrides applied)."""
        data = self._year(day.year)
        return bool(data.working[day.toordinal() - data.first])

    def is_statutory_holiday(self, day: dt.date) -> bool:
        """Whether ``day`` is an official day off of the year's schedule (not a plain weekend)."""
        return day in self._year(day.year).schedule.holidays

    def is_rest_day(self, day: dt.date) -> bool:
        """Whether ``day`` is a national rest day: a holiday, or a weekend day not made a workday.

        Tenant overrides are not applied; :meth:`is_working_day` applies them.
        """
        schedule = self._year(day.year).schedule
        if day in schedule.holidays:
            return True
        return day.weekday() >= 5 and day not in schedule.workdays

    # -- ordinal arithmetic used by counting -----------------------------------------------

    def _year_of_ordinal(self, ordinal: int) -> _Year:
        return self._year(dt.date.fromordinal(ordinal).year)

    def working_ordinal(self, ordinal: int) -> bool:
        """:meth:`is_working_day` for a proleptic Gregorian ordinal."""
        data = self._year_of_ordinal(ordinal)
        return bool(data.working[ordinal - data.first])

    def count_working(self, after: int, through: int) -> int:
        """Number of working days ``d`` with ``after < d <= through`` (ordinals)."""
        if through <= after:
            return 0
        total = 0
        data = self._year_of_ordinal(after)
        base = data.cum[after - data.first]
        while through > data.last:
            total += data.cum[-1] - base
            data = self._year(data.year + 1)
            base = 0
        return total + data.cum[through - data.first] - base

    def nth_working_after(self, ordinal: int, n: int) -> int:
        """The ordinal of the ``n``-th working day strictly after ``ordinal`` (``n >= 1``)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        data = self._year_of_ordinal(ordinal)
        target = data.cum[ordinal - data.first] + n
        start_year = data.year
        while target > data.cum[-1]:
            target -= data.cum[-1]
            data = self._year(data.year + 1)
            if data.year - start_year > _MAX_SEARCH_YEARS:
                raise ValueError(f"no working day within {_MAX_SEARCH_YEARS} years of {ordinal}")
        return data.first + bisect_left(data.cum, target)

    def working_on_or_after(self, ordinal: int) -> int:
        """The ordinal of the first working day on or after ``ordinal``."""
        if self.working_ordinal(ordinal):
            return ordinal
        return self.nth_working_after(ordinal, 1)
