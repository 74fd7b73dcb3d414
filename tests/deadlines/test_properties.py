"""Property tests of counting and rule resolution, against a day-by-day reference."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from core.deadlines import (
    DEFAULT_TZ,
    DeadlineRule,
    TenantCalendar,
    compute_due,
    dump_schedule,
    official_schedule,
    pause,
    resolve_rules,
    resume,
    schedule_from_dict,
    start_clock,
)
from core.deadlines.counting import Unit

CALENDAR = TenantCalendar(
    extra_closed={dt.date(2025, 12, 15), dt.date(2027, 3, 3)},
    extra_working={dt.date(2026, 3, 7)},
)

starts = st.datetimes(
    min_value=dt.datetime(2024, 1, 1),
    max_value=dt.datetime(2028, 6, 30),
    timezones=st.just(DEFAULT_TZ),
)
amounts = st.integers(min_value=1, max_value=90)
day_units = st.sampled_from(["natural_days", "working_days"])

STATUTORY = DeadlineRule(
    clock="complaint.decision",
    amount=15,
    unit="natural_days",
    citation="2020-complaints/18",
    source="statutory_cn",
    statutory=True,
)


def policy(amount: int, unit: Unit) -> DeadlineRule:
    return DeadlineRule(
        clock="complaint.decision",
        amount=amount,
        unit=unit,
        citation="policy",
        source="group_policy",
        statutory=False,
    )


def reference_last_day(
    start: dt.datetime, amount: int, unit: Unit, excluded: list[tuple[dt.date, dt.date]]
) -> dt.date:
    """Day by day: skip the start day and excluded days (p1, p2], count, then move off rest."""
    day = start.astimezone(DEFAULT_TZ).date()
    counted = 0
    while counted < amount:
        day += dt.timedelta(days=1)
        if any(p1 < day <= p2 for p1, p2 in excluded):
            continue
        if unit == "natural_days" or CALENDAR.is_working_day(day):
            counted += 1
    while not CALENDAR.is_working_day(day):
        day += dt.timedelta(days=1)
    return day


@given(starts, amounts, day_units)
def test_matches_the_day_by_day_reference(start: dt.datetime, amount: int, unit: Unit) -> None:
    result = compute_due(start, amount, unit, CALENDAR)
    assert result.last_day == reference_last_day(start, amount, unit, [])
    assert result.due == dt.datetime.combine(
        result.last_day + dt.timedelta(days=1), dt.time(0), tzinfo=DEFAULT_TZ
    )


@given(
    starts,
    amounts,
    day_units,
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=3),
)
def test_excluded_periods_match_the_reference(
    start: dt.datetime, amount: int, unit: Unit, gaps: list[tuple[int, int]]
) -> None:
    windows = []
    for offset, length in gaps:
        begin = start + dt.timedelta(days=offset, hours=3)
        windows.append((begin, begin + dt.timedelta(days=length, hours=1)))
    excluded_days = [(b.date(), e.date()) for b, e in windows]
    result = compute_due(start, amount, unit, CALENDAR, excluded=windows)
    assert result.last_day == reference_last_day(start, amount, unit, excluded_days)


@given(starts, amounts, st.sampled_from(["natural_days", "working_days", "hours"]))
def test_due_is_after_the_start(start: dt.datetime, amount: int, unit: Unit) -> None:
    assert compute_due(start, amount, unit, CALENDAR).due > start


@given(starts, amounts, day_units)
def test_last_day_is_a_working_day(start: dt.datetime, amount: int, unit: Unit) -> None:
    assert CALENDAR.is_working_day(compute_due(start, amount, unit, CALENDAR).last_day)


@given(starts, amounts, amounts, day_units)
def test_more_days_never_end_earlier(start: dt.datetime, a: int, b: int, unit: Unit) -> None:
    low, high = sorted((a, b))
    assert (
        compute_due(start, low, unit, CALENDAR).due <= compute_due(start, high, unit, CALENDAR).due
    )


@given(starts, amounts, amounts, day_units)
def test_tightening_a_policy_never_moves_the_due_later(
    start: dt.datetime, a: int, b: int, unit: Unit
) -> None:
    tight, loose = sorted((a, b))
    due_tight = resolve_rules([STATUTORY, policy(tight, unit)], start, CALENDAR)[0][0].due
    due_loose = resolve_rules([STATUTORY, policy(loose, unit)], start, CALENDAR)[0][0].due
    assert due_tight <= due_loose


@given(starts, amounts, st.sampled_from(["natural_days", "working_days", "hours"]))
def test_a_policy_never_moves_the_due_past_the_statutory(
    start: dt.datetime, amount: int, unit: Unit
) -> None:
    statutory_due = compute_due(start, 15, "natural_days", CALENDAR).due
    proposed = policy(amount, unit)
    (resolved,), warnings = resolve_rules([proposed, STATUTORY], start, CALENDAR)
    assert resolved.due <= statutory_due
    policy_due = compute_due(start, amount, unit, CALENDAR).due
    assert bool(warnings) == (policy_due > statutory_due)
    assert resolved.rule == (proposed if policy_due < statutory_due else STATUTORY)


@given(starts, st.integers(0, 40), st.integers(0, 40 * 24), day_units)
def test_a_pause_never_brings_the_due_forward(
    start: dt.datetime, offset_hours: int, length_hours: int, unit: Unit
) -> None:
    rule = policy(15, unit)
    state = start_clock(rule, start, CALENDAR)
    begin = start + dt.timedelta(hours=offset_hours)
    resumed = resume(
        pause(state, begin, "调解"), begin + dt.timedelta(hours=length_hours), CALENDAR
    )
    assert resumed.due_at >= state.due_at


@given(starts, st.integers(1, 400))
def test_working_day_count_and_nth_agree(start: dt.datetime, n: int) -> None:
    ordinal = start.toordinal()
    assert CALENDAR.count_working(ordinal, CALENDAR.nth_working_after(ordinal, n)) == n


@settings(max_examples=23)
@given(st.integers(2004, 2026))
def test_official_years_dump_and_reload(year: int) -> None:
    official = official_schedule(year)
    assert official is not None
    again = schedule_from_dict(dump_schedule(official), filename=f"dump-{year}")
    assert (again.holidays, again.workdays) == (official.holidays, official.workdays)
