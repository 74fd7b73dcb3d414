"""Rules resolved into clocks, and the clock transitions (pause, extend, restart, complete)."""

from __future__ import annotations

import datetime as dt

import pytest

from core.deadlines import (
    REVIEW_DECISION,
    ClockError,
    ClockState,
    DeadlineRule,
    ExtensionPolicy,
    ExtensionRefused,
    ExtensionStep,
    TenantCalendar,
    clock_from_resolved,
    complete,
    extend,
    fraction_elapsed,
    is_breached,
    load_schedule,
    open_review_window,
    pause,
    resolve_rules,
    restart,
    resume,
    start_clock,
    start_review,
    status_at,
)
from tests.deadlines.conftest import DATA, at, day

DECISION = DeadlineRule(
    clock="complaint.decision",
    amount=15,
    unit="natural_days",
    citation="2020-complaints/18",
    source="statutory_cn",
    statutory=True,
)
TEN_WORKING_DAYS = DeadlineRule(
    clock="complaint.decision",
    amount=10,
    unit="working_days",
    citation="2010-life-service/29",
    source="group_policy",
    statutory=False,
)
BOGUS_TWENTY_DAYS = DeadlineRule(
    clock="complaint.decision",
    amount=20,
    unit="natural_days",
    citation="branch manual 3.2",
    source="branch_policy",
    statutory=False,
)
MATERIALS = DeadlineRule(
    clock="complaint.materials_notice",
    amount=5,
    unit="working_days",
    citation="客户服务管理规定/12",
    source="group_policy",
    statutory=False,
)


# -- resolve_rules ---------------------------------------------------------------------------


def test_statutory_bound_tighter_policy_and_ignored_loose_policy(
    calendar: TenantCalendar,
) -> None:
    start = at("2025-11-03 10:00")
    rules = [DECISION, TEN_WORKING_DAYS, BOGUS_TWENTY_DAYS, MATERIALS]
    resolved, warnings = resolve_rules(rules, start, calendar)
    by_clock = {r.clock: r for r in resolved}
    assert list(by_clock) == ["complaint.decision", "complaint.materials_notice"]
    decision = by_clock["complaint.decision"]
    # 10 working days end on Monday 11-17, before the statutory 15th day (Tuesday 11-18).
    assert decision.rule is TEN_WORKING_DAYS
    assert (decision.source, decision.citation) == ("group_policy", "2010-life-service/29")
    assert decision.last_day == day("2025-11-17")
    assert decision.due == at("2025-11-18 00:00")
    assert [c.ignored for c in decision.candidates] == [False, False, True]
    # The 20-day policy (due 11-24, after a weekend) is looser than the law: ignored, warned.
    assert len(warnings) == 1
    warning = warnings[0]
    assert (warning.source, warning.clock, warning.rule) == (
        "branch_policy",
        "complaint.decision",
        BOGUS_TWENTY_DAYS,
    )
    assert warning.due == at("2025-11-25 00:00")
    assert warning.statutory_due == at("2025-11-19 00:00")
    assert "branch_policy" in warning.message and "2020-complaints/18" in warning.message
    # No statutory rule for the materials notice: the policy stands.
    assert by_clock["complaint.materials_notice"].last_day == day("2025-11-10")


def test_working_day_policy_can_be_looser_across_a_holiday(calendar: TenantCalendar) -> None:
    # Received 2025-09-30: the 15th natural day is 10-15, but 10 working days run to 10-21
    # because of the National Day block. The policy is ignored for this case.
    resolved, warnings = resolve_rules(
        [TEN_WORKING_DAYS, DECISION], at("2025-09-30 10:00"), calendar
    )
    assert resolved[0].rule is DECISION
    assert resolved[0].last_day == day("2025-10-15")
    assert [w.source for w in warnings] == ["group_policy"]


def test_ties_prefer_statutory_then_source_name(calendar: TenantCalendar) -> None:
    same_as_law = DeadlineRule(
        clock="complaint.decision",
        amount=15,
        unit="natural_days",
        citation="policy",
        source="aaa_policy",
        statutory=False,
    )
    resolved, warnings = resolve_rules([same_as_law, DECISION], at("2025-11-03 10:00"), calendar)
    assert resolved[0].rule is DECISION
    assert warnings == []
    other = DeadlineRule(
        clock="consultation.first_response",
        amount=24,
        unit="hours",
        citation="policy",
        source="zzz",
        statutory=False,
    )
    first = DeadlineRule(
        clock="consultation.first_response",
        amount=24,
        unit="hours",
        citation="policy",
        source="agency",
        statutory=False,
    )
    resolved, _ = resolve_rules([other, first], at("2025-11-03 10:00"), calendar)
    assert resolved[0].source == "agency"


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DeadlineRule(clock="x", amount=0, unit="hours", citation="c", source="s", statutory=False)


# -- extension -------------------------------------------------------------------------------


@pytest.fixture
def decision(calendar: TenantCalendar) -> ClockState:
    state = start_clock(DECISION, at("2025-11-03 09:00"), calendar)
    assert state.last_day == day("2025-11-18")
    return state


def test_extend_to_30_then_60_with_approval(decision: ClockState, calendar: TenantCalendar) -> None:
    with pytest.raises(ExtensionRefused, match="only after an extension to 30"):
        extend(
            decision,
            60,
            reason="特别复杂",
            approved_by="总公司 王副总",
            at=at("2025-11-10 10:00"),
            calendar=calendar,
        )
    with pytest.raises(ExtensionRefused, match="needs a reason"):
        extend(decision, 30, reason=" ", at=at("2025-11-10 10:00"), calendar=calendar)
    thirty = extend(decision, 30, reason="情况复杂", at=at("2025-11-10 10:00"), calendar=calendar)
    assert thirty.amount == 30
    assert thirty.last_day == day("2025-12-03")  # from the original start, 2025-11-03
    assert thirty.due_at == at("2025-12-04 00:00")
    with pytest.raises(ExtensionRefused, match="approval of a senior manager"):
        extend(thirty, 60, reason="特别复杂", at=at("2025-11-25 10:00"), calendar=calendar)
    with pytest.raises(ExtensionRefused, match="already extended"):
        extend(thirty, 30, reason="again", at=at("2025-11-25 10:00"), calendar=calendar)
    sixty = extend(
        thirty,
        60,
        reason="需外部鉴定，特别复杂",
        approved_by="总公司 王副总",
        at=at("2025-11-25 10:00"),
        calendar=calendar,
    )
    # Day 60 is 2026-01-02, inside 元旦 (01-01..01-03); Sunday 01-04 is a 调休 working day.
    assert sixty.last_day == day("2026-01-04")
    assert [(e.to_amount, e.approved_by) for e in sixty.extensions] == [
        (30, None),
        (60, "总公司 王副总"),
    ]
    assert sixty.extensions[1].citation == "2020-complaints/18"


def test_extension_refused_after_the_due_and_where_no_rule_allows(
    decision: ClockState, calendar: TenantCalendar
) -> None:
    with pytest.raises(ExtensionRefused, match="cannot be extended after it ended"):
        extend(decision, 30, reason="late", at=at("2025-11-19 00:00"), calendar=calendar)
    with pytest.raises(ExtensionRefused, match="only to 30 or 60, not 45"):
        extend(decision, 45, reason="x", at=at("2025-11-10 10:00"), calendar=calendar)
    materials = start_clock(MATERIALS, at("2025-11-03 09:00"), calendar)
    with pytest.raises(ExtensionRefused, match="no rule allows extending"):
        extend(materials, 10, reason="x", at=at("2025-11-04 10:00"), calendar=calendar)


def test_claim_decision_extends_from_working_days_to_days(calendar: TenantCalendar) -> None:
    claim = DeadlineRule(
        clock="claim.decision",
        amount=5,
        unit="working_days",
        citation="2010-life-service/23",
        source="statutory_cn",
        statutory=True,
    )
    state = start_clock(claim, at("2025-11-03 09:00"), calendar)
    assert state.last_day == day("2025-11-10")
    longer = extend(state, 30, reason="情形复杂", at=at("2025-11-05 09:00"), calendar=calendar)
    assert (longer.amount, longer.unit, longer.last_day) == (30, "natural_days", day("2025-12-03"))


def test_custom_extension_policy(calendar: TenantCalendar) -> None:
    policy = ExtensionPolicy(
        {"complaint.materials_notice": (ExtensionStep(10, requires_reason=False),)}
    )
    materials = start_clock(MATERIALS, at("2025-11-03 09:00"), calendar)
    longer = extend(
        materials, 10, reason="", at=at("2025-11-04 10:00"), calendar=calendar, policy=policy
    )
    assert longer.last_day == day("2025-11-17")


# -- pause, resume, restart --------------------------------------------------------------------


def test_mediation_pause_keeps_the_remaining_time(
    calendar: TenantCalendar,
) -> None:
    state = start_clock(DECISION, at("2025-11-03 10:00"), calendar)
    paused = pause(state, at("2025-11-05 14:00"), "调解 (2020-complaints/23)")
    assert status_at(paused, at("2025-11-20 10:00")) == "paused"
    assert not is_breached(paused, at("2025-11-20 10:00"))
    with pytest.raises(ClockError, match="already paused"):
        pause(paused, at("2025-11-06 10:00"), "again")
    resumed = resume(paused, at("2025-11-12 11:00"), calendar)
    # Counted before the pause: 11-04 and 11-05 (2 days); 11-06..11-12 are not counted; the
    # remaining 13 days run 11-13..11-25.
    assert resumed.last_day == day("2025-11-25")
    assert resumed.due_at == at("2025-11-26 00:00")
    assert resumed.paused_total == at("2025-11-12 11:00") - at("2025-11-05 14:00")
    assert [p.reason for p in resumed.pauses] == ["调解 (2020-complaints/23)"]
    # An extension afterwards still leaves the pause out.
    longer = extend(resumed, 30, reason="复杂", at=at("2025-11-20 10:00"), calendar=calendar)
    assert longer.last_day == day("2025-12-10")


def test_pause_of_a_working_day_clock(calendar: TenantCalendar) -> None:
    state = start_clock(MATERIALS, at("2025-11-03 10:00"), calendar)
    assert state.last_day == day("2025-11-10")
    resumed = resume(pause(state, at("2025-11-04 10:00"), "鉴定"), at("2025-11-06 15:00"), calendar)
    assert resumed.last_day == day("2025-11-12")


def test_paused_after_the_due_is_breached(decision: ClockState) -> None:
    late = pause(decision, at("2025-11-20 10:00"), "too late")
    assert status_at(late, at("2025-11-21 10:00")) == "breached"


def test_restart_on_new_facts(decision: ClockState, calendar: TenantCalendar) -> None:
    thirty = extend(decision, 30, reason="复杂", at=at("2025-11-05 10:00"), calendar=calendar)
    fresh = restart(thirty, at("2025-11-10 15:00"), calendar, reason="投诉人提出新的事实和理由")
    assert fresh.started_at == at("2025-11-10 15:00")
    assert (fresh.amount, fresh.extensions) == (15, ())
    assert fresh.last_day == day("2025-11-25")
    record = fresh.restarts[0]
    assert record.citation == "2020-complaints/18"
    assert record.previous_due_at == thirty.due_at
    assert record.previous_extensions == thirty.extensions
    with pytest.raises(ClockError, match="resume it first"):
        restart(pause(fresh, at("2025-11-11 10:00"), "调解"), at("2025-11-12 10:00"), calendar)


# -- completion, breach, fraction --------------------------------------------------------------


def test_complete_met_and_breached(decision: ClockState) -> None:
    # due_at is 11-19 00:00, the end (24:00) of the last day 11-18.
    assert complete(decision, at("2025-11-18 23:59")).status == "met"
    assert complete(decision, at("2025-11-19 00:00")).status == "breached"
    assert is_breached(decision, at("2025-11-19 00:00"))
    assert not is_breached(decision, at("2025-11-18 23:59"))
    done = complete(decision, at("2025-11-10 10:00"))
    with pytest.raises(ClockError, match="completed"):
        pause(done, at("2025-11-11 10:00"), "x")
    assert status_at(done, at("2026-01-01 00:00")) == "met"


def test_complete_while_paused(decision: ClockState) -> None:
    paused = pause(decision, at("2025-11-10 10:00"), "鉴定")
    done = complete(paused, at("2025-11-25 10:00"))
    assert done.status == "met"
    assert done.paused_at is None
    assert done.pauses[-1].end == at("2025-11-25 10:00")


def test_fraction_elapsed_is_pause_aware(calendar: TenantCalendar) -> None:
    state = start_clock(DECISION, at("2025-11-03 00:00"), calendar)
    assert state.due_at == at("2025-11-19 00:00")  # 16 days of running time
    assert fraction_elapsed(state, at("2025-11-03 00:00")) == 0.0
    assert fraction_elapsed(state, at("2025-11-11 00:00")) == 0.5
    paused = pause(state, at("2025-11-05 00:00"), "调解")
    assert fraction_elapsed(paused, at("2025-11-06 12:00")) == 0.125  # frozen at 2 / 16 days
    resumed = resume(paused, at("2025-11-07 00:00"), calendar)
    assert resumed.due_at == at("2025-11-21 00:00")
    assert fraction_elapsed(resumed, at("2025-11-13 00:00")) == 0.5
    assert fraction_elapsed(resumed, resumed.due_at) == 1.0
    assert fraction_elapsed(resumed, at("2025-11-25 00:00")) == 1.25


# -- review (2020-complaints 第二十条) -----------------------------------------------------------


def test_review_window_and_review_clock(calendar: TenantCalendar) -> None:
    window = open_review_window(at("2025-11-20 10:00"), calendar)
    # Day 30 is Saturday 12-20: the window stays open until the end of Monday 12-22.
    assert window.last_day == day("2025-12-22")
    assert window.rule.citation == "2020-complaints/20"
    closed, review = start_review(window, at("2025-12-21 16:00"), calendar)
    assert closed.status == "met"
    assert review.rule is REVIEW_DECISION
    assert review.last_day == day("2026-01-20")
    with pytest.raises(ClockError, match="late"):
        start_review(window, at("2025-12-23 09:00"), calendar)


# -- provisional years -------------------------------------------------------------------------


def test_clock_into_2027_provisional_then_loaded(calendar: TenantCalendar) -> None:
    state = start_clock(DECISION, at("2026-12-10 10:00"), calendar)
    # 15 days end on Friday 2026-12-25: only the official 2026 calendar is consulted.
    assert (state.last_day, state.provisional) == (day("2026-12-25"), False)
    thirty = extend(state, 30, reason="复杂", at=at("2026-12-15 10:00"), calendar=calendar)
    sixty = extend(
        thirty, 60, reason="特别复杂", approved_by="总公司", at=at("2026-12-30"), calendar=calendar
    )
    assert (sixty.last_day, sixty.provisional) == (day("2027-02-09"), True)
    loaded = calendar.with_loaded(load_schedule(DATA / "2027-test-fixture.yaml"))
    final = extend(
        thirty, 60, reason="特别复杂", approved_by="总公司", at=at("2026-12-30"), calendar=loaded
    )
    assert (final.last_day, final.provisional) == (day("2027-02-15"), False)


def test_clock_from_resolved(calendar: TenantCalendar) -> None:
    resolved, _ = resolve_rules([DECISION], at("2025-11-03 10:00"), calendar)
    state = clock_from_resolved(resolved[0])
    assert (state.due_at, state.amount, state.status) == (resolved[0].due, 15, "running")
    assert state.started_at == at("2025-11-03 10:00")
    assert isinstance(state.paused_total, dt.timedelta)
