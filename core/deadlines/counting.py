"""Counting periods the way Chinese law counts them (民法典 第二百零一条至第二百零四条).

* 第二百零一条: "按照年、月、日、小时计算期间的，开始的当日不计入，自下一日开始计算。
  按照小时计算期间的，自法律规定或者当事人约定的时间开始计算。"
  A period of N days started on day D runs D+1 .. D+N.
* 第二百零三条: "期间的最后一日是法定休假日的，以法定休假日结束的次日为期间的最后一日。
  期间的最后一日的截止时间为二十四时；有业务时间的，停止业务活动的时间为截止时间。"
* 2020-complaints 第四十三条: "日" are natural days unless the text says working days.

Representation of "24:00": a due is an *exclusive* instant. A period whose last day is D ends at
D+1 00:00 in the tenant's time zone; an act is in time when it happens strictly before ``due``,
and the clock is breached when ``now >= due``. ``DueResult.last_day`` is D, for display.
With ``ends_at="close_of_business"`` (and business hours on the calendar) the due is D at the
closing time, with the same strict comparison.

法定休假日: the last day of a natural-day period is moved when it is not a working day of the
tenant calendar: official holidays, weekends not swapped by 调休, and the tenant's closures.
It moves to the first working day after it. Weekends count as 法定休假日 (the 2024 放假办法 and
the Labour Law give everybody a weekly rest day), 调休 working Saturdays and Sundays do not.

Excluded periods (appraisal, mediation: 2020-complaints 第十八条, 第二十三条) are counted the way
the law counts a period: the day a pause begins is still counted, the days after it up to and
including the day it ends are not. A pause from day P1 to day P2 thus removes the days
P1+1 .. P2 (P2 - P1 days; none when it begins and ends on the same day). For working-day
clocks the working days among P1+1 .. P2 are not counted; for hour clocks the exact paused
time is not counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core.deadlines.calendar import TenantCalendar

Unit = Literal["natural_days", "working_days", "hours"]
EndsAt = Literal["midnight", "close_of_business"]
UNITS: tuple[Unit, ...] = ("natural_days", "working_days", "hours")

_UTC = dt.UTC
_MIDNIGHT = dt.time(0)
_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DueResult:
    """The end of a period.

    ``due`` is the exclusive end instant in the tenant's time zone; ``last_day`` the last day of
    the period; ``provisional`` is true when a day between start and due lies in a year whose
    holidays are computed, not published; ``years`` are the calendar years consulted.
    """

    due: dt.datetime
    last_day: dt.date
    provisional: bool
    years: tuple[int, ...]


def _aware(value: dt.datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware: {value!r}")


def _day_windows(
    excluded: Sequence[tuple[dt.datetime, dt.datetime]], start_ordinal: int, tz: ZoneInfo
) -> list[tuple[int, int]]:
    """Excluded periods as merged ordinal windows ``(p1, p2]``, clipped to the start day."""
    windows: list[tuple[int, int]] = []
    for begin, end in excluded:
        _aware(begin, "an excluded period's start")
        _aware(end, "an excluded period's end")
        if end < begin:
            raise ValueError(f"excluded period ends before it begins: {begin} .. {end}")
        p1 = max(begin.astimezone(tz).toordinal(), start_ordinal)
        p2 = end.astimezone(tz).toordinal()
        if p2 > p1:
            windows.append((p1, p2))
    windows.sort()
    merged: list[tuple[int, int]] = []
    for p1, p2 in windows:
        if merged and p1 <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], p2))
        else:
            merged.append((p1, p2))
    return merged


def _natural_last(start: int, amount: int, windows: list[tuple[int, int]]) -> int:
    pos, remaining = start, amount
    for p1, p2 in windows:
        gap = p1 - pos
        if gap >= remaining:
            break
        remaining -= gap
        pos = p2
    return pos + remaining


def _working_last(
    calendar: TenantCalendar, start: int, amount: int, windows: list[tuple[int, int]]
) -> int:
    pos, remaining = start, amount
    for p1, p2 in windows:
        counted = calendar.count_working(pos, p1)
        if counted >= remaining:
            break
        remaining -= counted
        pos = p2
    return calendar.nth_working_after(pos, remaining)


def _due_hours(
    start: dt.datetime,
    amount: int,
    excluded: Sequence[tuple[dt.datetime, dt.datetime]],
    tz: ZoneInfo,
) -> DueResult:
    # Elapsed time is added in UTC: aware datetime arithmetic in a zone is wall-clock arithmetic.
    pos = start.astimezone(_UTC)
    remaining = dt.timedelta(hours=amount)
    windows = []
    for begin, end in excluded:
        _aware(begin, "an excluded period's start")
        _aware(end, "an excluded period's end")
        if end < begin:
            raise ValueError(f"excluded period ends before it begins: {begin} .. {end}")
        windows.append((max(begin.astimezone(_UTC), pos), end.astimezone(_UTC)))
    for begin, end in sorted(windows):
        if end <= pos:
            continue
        gap = max(begin - pos, dt.timedelta(0))
        if gap >= remaining:
            break
        remaining -= gap
        pos = end
    due = (pos + remaining).astimezone(tz)
    return DueResult(due=due, last_day=due.date(), provisional=False, years=())


def compute_due(
    start: dt.datetime,
    amount: int,
    unit: Unit,
    calendar: TenantCalendar,
    *,
    ends_at: EndsAt = "midnight",
    excluded: Sequence[tuple[dt.datetime, dt.datetime]] = (),
) -> DueResult:
    """The due of a period of ``amount`` ``unit`` starting at ``start`` on ``calendar``.

    :param start: when the period starts (receipt of the complaint, of the request...), aware.
    :param amount: the length, at least 1.
    :param unit: ``natural_days`` (start day not counted; a last day that is not a working day
        moves to the next working day), ``working_days`` (the ``amount``-th working day after
        the start day), or ``hours`` (plain elapsed hours, no calendar).
    :param ends_at: ``midnight`` (24:00 of the last day, returned as the next day's 00:00) or
        ``close_of_business`` (the calendar's closing time; midnight if it has no business hours).
    :param excluded: periods not counted (appraisal, mediation), as ``(begin, end)`` instants;
        see the module docstring for how partial days are counted.
    :returns: a :class:`DueResult`; ``due`` is an exclusive bound in the calendar's time zone.
    """
    _aware(start, "start")
    if amount < 1:
        raise ValueError(f"a period must be at least 1 {unit}, not {amount}")
    tz = calendar.tz
    if unit == "hours":
        return _due_hours(start, amount, excluded, tz)
    local = start.astimezone(tz)
    first = local.toordinal()
    windows = _day_windows(excluded, first, tz) if excluded else []
    if unit == "natural_days":
        last = _natural_last(first, amount, windows)
        if not calendar.working_ordinal(last):
            last = calendar.nth_working_after(last, 1)
    elif unit == "working_days":
        last = _working_last(calendar, first, amount, windows)
    else:
        raise ValueError(f"unknown unit {unit!r}; expected one of {UNITS}")
    last_day = dt.date.fromordinal(last)
    hours = calendar.business_hours
    if ends_at == "close_of_business" and hours is not None:
        due = dt.datetime.combine(last_day, hours[1], tzinfo=tz)
    elif ends_at in ("midnight", "close_of_business"):
        due = dt.datetime.combine(last_day + _ONE_DAY, _MIDNIGHT, tzinfo=tz)
    else:
        raise ValueError(f"unknown ends_at {ends_at!r}")
    years = tuple(range(local.year, last_day.year + 1))
    provisional = any(calendar.is_provisional_year(y) for y in years)
    return DueResult(due=due, last_day=last_day, provisional=provisional, years=years)


def due_report(
    start: dt.datetime,
    *,
    days: int | None = None,
    working_days: int | None = None,
    calendar: TenantCalendar,
    ends_at: EndsAt = "midnight",
) -> dict[str, Any]:
    """A JSON-ready summary of one due, for ``insurdesk deadlines due``.

    Exactly one of ``days`` (natural days) and ``working_days`` is given. Returns
    ``{"start", "due", "last_day", "unit", "amount", "provisional", "calendar_years"}`` with
    instants as ISO 8601 strings in the tenant's time zone and ``calendar_years`` mapping each
    year consulted to the source of its schedule (``official``, ``loaded``, ``provisional``).
    """
    if (days is None) == (working_days is None):
        raise ValueError("give exactly one of days and working_days")
    unit: Unit
    if days is not None:
        unit, amount = "natural_days", days
    else:
        assert working_days is not None
        unit, amount = "working_days", working_days
    result = compute_due(start, amount, unit, calendar, ends_at=ends_at)
    return {
        "start": start.astimezone(calendar.tz).isoformat(),
        "due": result.due.isoformat(),
        "last_day": result.last_day.isoformat(),
        "unit": unit,
        "amount": amount,
        "provisional": result.provisional,
        "calendar_years": {year: calendar.source_of(year) for year in result.years},
    }
