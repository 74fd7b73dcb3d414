"""Deadline rules, their resolution into clocks, and the clock's life: pure data transitions.

A plugin proposes :class:`DeadlineRule` objects; :func:`resolve_rules` picks one due per clock,
with the statutory rules as the outer bound (DESIGN.md: policies tighten, never loosen). A
:class:`ClockState` is then moved by :func:`pause`, :func:`resume`, :func:`extend`,
:func:`restart` and :func:`complete`, each returning a new state; the caller stores it and
writes the timeline event. Nothing here reads a clock or a database: ``at`` and ``now`` are
always passed in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from core.deadlines.calendar import TenantCalendar
from core.deadlines.counting import UNITS, DueResult, EndsAt, Unit, compute_due

ClockStatus = Literal["running", "paused", "met", "breached"]

RESTART_CITATION = "2020-complaints/18"
"""第十八条第三款: 如投诉人提出新的事实和理由，处理期限自收到新的投诉材料之日起重新计算."""


class ClockError(ValueError):
    """A transition that the clock's current state does not allow."""


class ExtensionRefused(ClockError):
    """An extension that the extension policy does not allow; the message says why."""


@dataclass(frozen=True, kw_only=True)
class DeadlineRule:
    """One plugin's proposal for one clock.

    :param clock: the clock it sets, e.g. ``complaint.decision``.
    :param amount: the length of the period, in ``unit``.
    :param unit: ``natural_days``, ``working_days`` or ``hours``.
    :param ends_at: ``midnight`` or ``close_of_business``.
    :param citation: the article it implements, e.g. ``2020-complaints/18``.
    :param source: the plugin that proposed it, e.g. ``statutory_cn``.
    :param statutory: whether it is the law's limit (the outer bound) or a policy.
    """

    clock: str
    amount: int
    unit: Unit
    citation: str
    source: str
    statutory: bool
    ends_at: EndsAt = "midnight"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.clock:
            raise ValueError("a rule needs a clock name")
        if self.amount < 1:
            raise ValueError(f"{self.clock}: amount must be at least 1, not {self.amount}")
        if self.unit not in UNITS:
            raise ValueError(f"{self.clock}: unknown unit {self.unit!r}")
        if self.ends_at not in ("midnight", "close_of_business"):
            raise ValueError(f"{self.clock}: unknown ends_at {self.ends_at!r}")


@dataclass(frozen=True)
class Candidate:
    """A rule considered for a clock, with its due; ``ignored`` when looser than the law."""

    rule: DeadlineRule
    due: dt.datetime
    last_day: dt.date
    provisional: bool
    ignored: bool = False


DEFAULT_REMINDER_FRACTION = 0.8
"""Remind a clock's handler when this share of its running time is used, unless the plugins
say otherwise (``insurdesk_reminder_fraction``)."""


@dataclass(frozen=True)
class ResolvedClock:
    """The rule that won a clock, its due, and every candidate considered."""

    clock: str
    rule: DeadlineRule
    start: dt.datetime
    due: dt.datetime
    last_day: dt.date
    provisional: bool
    candidates: tuple[Candidate, ...]
    reminder_fraction: float | None = None
    """When the handler is reminded (share of the running time); None: the platform default."""

    @property
    def citation(self) -> str:
        """The citation of the winning rule."""
        return self.rule.citation

    @property
    def source(self) -> str:
        """The plugin that proposed the winning rule."""
        return self.rule.source


@dataclass(frozen=True)
class RuleWarning:
    """A policy rule ignored because its due is later than the statutory due."""

    clock: str
    source: str
    rule: DeadlineRule
    due: dt.datetime
    statutory_rule: DeadlineRule
    statutory_due: dt.datetime

    @property
    def message(self) -> str:
        """A sentence for the log and the admin UI."""
        return (
            f"plugin {self.source!r} sets {self.clock} to {self.rule.amount} {self.rule.unit} "
            f"(due {self.due.isoformat()}), later than the statutory "
            f"{self.statutory_rule.amount} {self.statutory_rule.unit} of "
            f"{self.statutory_rule.citation} (due {self.statutory_due.isoformat()}); ignored"
        )


def _order(candidate: Candidate) -> tuple[dt.datetime, bool, str, str, int]:
    rule = candidate.rule
    return (candidate.due, not rule.statutory, rule.source, rule.citation, rule.amount)


def resolve_rules(
    rules: Iterable[DeadlineRule], start: dt.datetime, calendar: TenantCalendar
) -> tuple[list[ResolvedClock], list[RuleWarning]]:
    """Pick one due per clock from the rules of all plugins.

    For a clock with statutory rules, the earliest statutory due is the outer bound: a policy
    whose due is later is ignored with a :class:`RuleWarning`. Among the remaining rules the
    earliest due wins; ties prefer a statutory rule, then the source name, then the citation.
    A clock without statutory rules takes the earliest policy. Results are sorted by clock.
    """
    by_clock: dict[str, list[DeadlineRule]] = {}
    for rule in rules:
        by_clock.setdefault(rule.clock, []).append(rule)
    dues: dict[tuple[int, Unit, EndsAt], DueResult] = {}
    resolved: list[ResolvedClock] = []
    warnings: list[RuleWarning] = []
    for clock in sorted(by_clock):
        candidates = []
        for rule in by_clock[clock]:
            key = (rule.amount, rule.unit, rule.ends_at)
            result = dues.get(key)
            if result is None:
                result = compute_due(start, rule.amount, rule.unit, calendar, ends_at=rule.ends_at)
                dues[key] = result
            candidates.append(Candidate(rule, result.due, result.last_day, result.provisional))
        statutory = [c for c in candidates if c.rule.statutory]
        if statutory:
            bound = min(statutory, key=_order)
            for i, candidate in enumerate(candidates):
                if candidate.due > bound.due:
                    candidates[i] = dataclasses.replace(candidate, ignored=True)
                    if not candidate.rule.statutory:
                        warnings.append(
                            RuleWarning(
                                clock=clock,
                                source=candidate.rule.source,
                                rule=candidate.rule,
                                due=candidate.due,
                                statutory_rule=bound.rule,
                                statutory_due=bound.due,
                            )
                        )
        winner = min((c for c in candidates if not c.ignored), key=_order)
        resolved.append(
            ResolvedClock(
                clock=clock,
                rule=winner.rule,
                start=start,
                due=winner.due,
                last_day=winner.last_day,
                provisional=winner.provisional,
                candidates=tuple(candidates),
            )
        )
    return resolved, warnings


# -- clock states --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """A closed pause: the clock did not run from ``begin`` to ``end``."""

    begin: dt.datetime
    end: dt.datetime
    reason: str


@dataclass(frozen=True)
class Extension:
    """An extension granted: the period became ``to_amount`` ``unit``."""

    to_amount: int
    unit: Unit
    reason: str
    approved_by: str | None
    at: dt.datetime
    citation: str


@dataclass(frozen=True)
class Restart:
    """A restart of the period (new facts or reasons), with what it replaced."""

    at: dt.datetime
    reason: str
    citation: str
    previous_started_at: dt.datetime
    previous_due_at: dt.datetime
    previous_amount: int
    previous_pauses: tuple[Pause, ...]
    previous_extensions: tuple[Extension, ...]


@dataclass(frozen=True)
class ClockState:
    """A running, paused or completed deadline clock.

    ``due_at`` is the exclusive due in force (see :mod:`core.deadlines.counting`); while paused it
    is the due the clock had when the pause began, and :func:`resume` moves it. ``status`` is
    the stored status; :func:`status_at` adds ``breached`` for a running clock past its due.
    ``paused_total`` is the exact time spent in closed pauses.
    """

    clock: str
    rule: DeadlineRule
    amount: int
    unit: Unit
    started_at: dt.datetime
    due_at: dt.datetime
    last_day: dt.date
    provisional: bool
    status: ClockStatus = "running"
    paused_at: dt.datetime | None = None
    pause_reason: str = ""
    paused_total: dt.timedelta = dt.timedelta(0)
    pauses: tuple[Pause, ...] = ()
    extensions: tuple[Extension, ...] = ()
    restarts: tuple[Restart, ...] = ()
    completed_at: dt.datetime | None = None
    reminder_fraction: float | None = None
    """Remind the handler when this share of the running time is used (the plugins'
    ``insurdesk_reminder_fraction``); None: the platform default."""


def _check_at(state: ClockState, at: dt.datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what}: the time must be timezone-aware: {at!r}")
    if at < state.started_at:
        raise ClockError(f"{what} {state.clock} at {at} before it started ({state.started_at})")
    if state.status in ("met", "breached"):
        raise ClockError(f"cannot {what} {state.clock}: it was completed at {state.completed_at}")


def _due(
    calendar: TenantCalendar,
    started_at: dt.datetime,
    amount: int,
    unit: Unit,
    rule: DeadlineRule,
    pauses: tuple[Pause, ...],
) -> DueResult:
    excluded = [(p.begin, p.end) for p in pauses]
    return compute_due(started_at, amount, unit, calendar, ends_at=rule.ends_at, excluded=excluded)


def start_clock(
    rule: DeadlineRule, started_at: dt.datetime, calendar: TenantCalendar
) -> ClockState:
    """A running clock for ``rule`` started at ``started_at``."""
    result = compute_due(started_at, rule.amount, rule.unit, calendar, ends_at=rule.ends_at)
    return ClockState(
        clock=rule.clock,
        rule=rule,
        amount=rule.amount,
        unit=rule.unit,
        started_at=started_at,
        due_at=result.due,
        last_day=result.last_day,
        provisional=result.provisional,
    )


def clock_from_resolved(resolved: ResolvedClock) -> ClockState:
    """A running clock for a clock resolved by :func:`resolve_rules` (no recomputation)."""
    return ClockState(
        clock=resolved.clock,
        rule=resolved.rule,
        amount=resolved.rule.amount,
        unit=resolved.rule.unit,
        started_at=resolved.start,
        due_at=resolved.due,
        last_day=resolved.last_day,
        provisional=resolved.provisional,
        reminder_fraction=resolved.reminder_fraction,
    )


def pause(state: ClockState, at: dt.datetime, reason: str) -> ClockState:
    """Stop the clock at ``at`` (appraisal, mediation...): the time until :func:`resume` is not
    counted (2020-complaints 第十八条第二款, 第二十三条)."""
    _check_at(state, at, "pause")
    if state.paused_at is not None:
        raise ClockError(f"{state.clock} is already paused since {state.paused_at}")
    if not reason.strip():
        raise ClockError(f"pausing {state.clock} needs a reason")
    if state.pauses and at < state.pauses[-1].end:
        raise ClockError(f"pause at {at} is before the last resume ({state.pauses[-1].end})")
    return dataclasses.replace(state, status="paused", paused_at=at, pause_reason=reason)


def resume(state: ClockState, at: dt.datetime, calendar: TenantCalendar) -> ClockState:
    """Restart a paused clock at ``at``; the due moves by the days the pause excluded.

    The pause from day P1 to day P2 removes days P1+1 .. P2 from a natural-day period and the
    working days among them from a working-day period; an hour clock moves by the exact time.
    """
    _check_at(state, at, "resume")
    if state.paused_at is None:
        raise ClockError(f"{state.clock} is not paused")
    if at < state.paused_at:
        raise ClockError(f"resume at {at} is before the pause ({state.paused_at})")
    pauses = (*state.pauses, Pause(state.paused_at, at, state.pause_reason))
    result = _due(calendar, state.started_at, state.amount, state.unit, state.rule, pauses)
    return dataclasses.replace(
        state,
        status="running",
        paused_at=None,
        pause_reason="",
        paused_total=state.paused_total + (at - state.paused_at),
        pauses=pauses,
        due_at=result.due,
        last_day=result.last_day,
        provisional=result.provisional,
    )


@dataclass(frozen=True)
class ExtensionStep:
    """One allowed extension of a clock.

    :param to_amount: the new length of the period, counted from the original start.
    :param unit: the new unit, if it changes (a claim: 5 working days -> 30 days).
    :param requires_reason: a reason must be given.
    :param requires_approver: ``approved_by`` must name the approving senior manager.
    :param after: the previous extension must have been to this amount.
    """

    to_amount: int
    unit: Unit | None = None
    requires_reason: bool = True
    requires_approver: bool = False
    after: int | None = None
    citation: str = ""
    description: str = ""


@dataclass(frozen=True)
class ExtensionPolicy:
    """The extensions allowed, per clock, in the order they may be granted."""

    steps: Mapping[str, tuple[ExtensionStep, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        frozen = {clock: tuple(steps) for clock, steps in self.steps.items()}
        object.__setattr__(self, "steps", MappingProxyType(frozen))

    def steps_for(self, clock: str) -> tuple[ExtensionStep, ...]:
        """The steps allowed for ``clock`` (empty: the clock cannot be extended)."""
        return self.steps.get(clock, ())


DEFAULT_EXTENSION_POLICY = ExtensionPolicy(
    {
        "complaint.decision": (
            ExtensionStep(
                30,
                citation="2020-complaints/18",
                description="情况复杂的可以延长至30日",
            ),
            ExtensionStep(
                60,
                requires_approver=True,
                after=30,
                citation="2020-complaints/18",
                description=(
                    "情况特别复杂或者有其他特殊原因的，经其上级机构或者总行、总公司高级管理人员审批"
                    "并告知投诉人，可以再延长30日"
                ),
            ),
        ),
        "claim.decision": (
            ExtensionStep(
                30,
                unit="natural_days",
                citation="2010-life-service/23",
                description="情形复杂的，应当在30日内作出核定",
            ),
        ),
    }
)


def _unit_words(amount: int, unit: Unit) -> str:
    return f"{amount} {unit.replace('_', ' ')}"


def extend(
    state: ClockState,
    to_amount: int,
    *,
    reason: str,
    approved_by: str | None = None,
    at: dt.datetime,
    calendar: TenantCalendar,
    policy: ExtensionPolicy = DEFAULT_EXTENSION_POLICY,
) -> ClockState:
    """Extend the period to ``to_amount`` as ``policy`` allows, or raise :class:`ExtensionRefused`.

    The due is recomputed from the original start with the new length, pauses still excluded.
    An extension is granted only while the period runs (not after its due) and only in the
    order of the policy's steps: ``complaint.decision`` goes 15 -> 30 (a reason) -> 60 (a
    reason and the approving senior manager, and only after the extension to 30).
    """
    _check_at(state, at, "extend")
    steps = policy.steps_for(state.clock)
    if not steps:
        raise ExtensionRefused(f"no rule allows extending {state.clock}")
    index = next((i for i, s in enumerate(steps) if s.to_amount == to_amount), None)
    if index is None:
        allowed = " or ".join(str(s.to_amount) for s in steps)
        raise ExtensionRefused(f"{state.clock} can be extended only to {allowed}, not {to_amount}")
    step = steps[index]
    unit = step.unit or state.unit
    target = _unit_words(to_amount, unit)
    done = [e.to_amount for e in state.extensions]
    current = max((i for i, s in enumerate(steps) if s.to_amount in done), default=-1)
    if index <= current:
        raise ExtensionRefused(
            f"{state.clock} is already extended to {_unit_words(state.amount, state.unit)}"
        )
    if step.after is not None and (not done or done[-1] != step.after):
        raise ExtensionRefused(
            f"{state.clock} can be extended to {target} only after an extension to "
            f"{step.after} ({step.citation})"
        )
    if step.requires_reason and not reason.strip():
        raise ExtensionRefused(f"extending {state.clock} to {target} needs a reason")
    if step.requires_approver and not (approved_by or "").strip():
        raise ExtensionRefused(
            f"extending {state.clock} to {target} needs the approval of a senior manager of the "
            f"superior unit or head office ({step.citation}); approved_by is empty"
        )
    if status_at(state, at) == "breached":
        raise ExtensionRefused(
            f"{state.clock} ran out at {state.due_at.isoformat()}; a period cannot be extended "
            "after it ended"
        )
    result = _due(calendar, state.started_at, to_amount, unit, state.rule, state.pauses)
    extension = Extension(
        to_amount=to_amount,
        unit=unit,
        reason=reason,
        approved_by=approved_by,
        at=at,
        citation=step.citation,
    )
    return dataclasses.replace(
        state,
        amount=to_amount,
        unit=unit,
        extensions=(*state.extensions, extension),
        due_at=result.due,
        last_day=result.last_day,
        provisional=result.provisional,
    )


def restart(
    state: ClockState,
    at: dt.datetime,
    calendar: TenantCalendar,
    *,
    reason: str = "new facts or reasons",
    rule: DeadlineRule | None = None,
) -> ClockState:
    """Count the period afresh from ``at``, the receipt of new facts or reasons.

    2020-complaints 第十八条第三款: "如投诉人提出新的事实和理由，处理期限自收到新的投诉材料之日起
    重新计算".
    The period returns to the rule's length (an extension must be granted again), earlier pauses
    no longer matter; what was replaced is kept in :attr:`ClockState.restarts`. A paused clock
    must be resumed first.

    :param rule: the rule to count the new period on (the rules resolved again at ``at``: a
        policy that was tighter at the first start may be looser now, and the statute bounds
        it); default: the clock's rule.
    """
    _check_at(state, at, "restart")
    if state.paused_at is not None:
        raise ClockError(f"{state.clock} is paused since {state.paused_at}; resume it first")
    rule = rule or state.rule
    result = compute_due(at, rule.amount, rule.unit, calendar, ends_at=rule.ends_at)
    record = Restart(
        at=at,
        reason=reason,
        citation=RESTART_CITATION,
        previous_started_at=state.started_at,
        previous_due_at=state.due_at,
        previous_amount=state.amount,
        previous_pauses=state.pauses,
        previous_extensions=state.extensions,
    )
    return dataclasses.replace(
        state,
        rule=rule,
        amount=rule.amount,
        unit=rule.unit,
        started_at=at,
        due_at=result.due,
        last_day=result.last_day,
        provisional=result.provisional,
        paused_total=dt.timedelta(0),
        pauses=(),
        extensions=(),
        restarts=(*state.restarts, record),
    )


def complete(state: ClockState, at: dt.datetime) -> ClockState:
    """Stop the clock for good at ``at``: ``met`` when ``at < due_at``, else ``breached``.

    Completing a paused clock closes the pause; it is met unless the time had run out before
    the pause began.
    """
    _check_at(state, at, "complete")
    if state.paused_at is not None:
        if at < state.paused_at:
            raise ClockError(f"complete at {at} is before the pause ({state.paused_at})")
        met = state.paused_at < state.due_at
        return dataclasses.replace(
            state,
            status="met" if met else "breached",
            paused_at=None,
            pause_reason="",
            paused_total=state.paused_total + (at - state.paused_at),
            pauses=(*state.pauses, Pause(state.paused_at, at, state.pause_reason)),
            completed_at=at,
        )
    met = at < state.due_at
    return dataclasses.replace(state, status="met" if met else "breached", completed_at=at)


def status_at(state: ClockState, now: dt.datetime) -> ClockStatus:
    """The status at ``now``: the stored one, or ``breached`` for a running clock past its due
    (and for a clock paused after its due had passed)."""
    if state.status in ("met", "breached"):
        return state.status
    if state.paused_at is not None:
        return "breached" if state.paused_at >= state.due_at else "paused"
    return "breached" if now >= state.due_at else "running"


def is_breached(state: ClockState, now: dt.datetime) -> bool:
    """Whether the clock is (or was completed) past its due at ``now``."""
    return status_at(state, now) == "breached"


def _paused_between(state: ClockState, begin: dt.datetime, end: dt.datetime) -> dt.timedelta:
    total = dt.timedelta(0)
    for pause_ in state.pauses:
        overlap = min(pause_.end, end) - max(pause_.begin, begin)
        if overlap > dt.timedelta(0):
            total += overlap
    return total


def fraction_elapsed(state: ClockState, now: dt.datetime) -> float:
    """The share of the clock's running time used at ``now`` (0.0 at start, 1.0 at the due).

    Paused time counts neither as used nor as available: the running time is the time from
    start to due minus the pauses within it. Frozen while paused and after completion; above
    1.0 once overdue.
    """
    end = now
    if state.completed_at is not None:
        end = min(end, state.completed_at)
    if state.paused_at is not None:
        end = min(end, state.paused_at)
    if end <= state.started_at:
        return 0.0
    available = state.due_at - state.started_at
    available -= _paused_between(state, state.started_at, state.due_at)
    used = end - state.started_at - _paused_between(state, state.started_at, end)
    if available <= dt.timedelta(0):
        return 1.0 if end >= state.due_at else 0.0
    return max(used / available, 0.0)


# -- review of a complaint decision (2020-complaints 第二十条) -------------------------------

REVIEW_REQUEST_WINDOW = DeadlineRule(
    clock="complaint.review_request_window",
    amount=30,
    unit="natural_days",
    citation="2020-complaints/20",
    source="core.deadlines",
    statutory=True,
    description="投诉人可以自收到处理决定之日起30日内向其上级机构书面申请核查",
)
REVIEW_DECISION = DeadlineRule(
    clock="complaint.review",
    amount=30,
    unit="natural_days",
    citation="2020-complaints/20",
    source="core.deadlines",
    statutory=True,
    description="核查机构应当自收到核查申请之日起30日内作出核查决定并告知投诉人",
)


def open_review_window(decision_received_at: dt.datetime, calendar: TenantCalendar) -> ClockState:
    """The window in which the complainant may ask for a review: 30 days from receiving the
    decision (2020-complaints 第二十条)."""
    return start_clock(REVIEW_REQUEST_WINDOW, decision_received_at, calendar)


def start_review(
    window: ClockState, requested_at: dt.datetime, calendar: TenantCalendar
) -> tuple[ClockState, ClockState]:
    """A review request received at ``requested_at``: closes the window and starts the review
    clock (30 days from the request). Raises :class:`ClockError` if the window had closed."""
    if window.clock != REVIEW_REQUEST_WINDOW.clock:
        raise ClockError(f"{window.clock} is not a review request window")
    if status_at(window, requested_at) == "breached" or requested_at >= window.due_at:
        raise ClockError(
            f"the review request of {requested_at.isoformat()} is late: the window closed at "
            f"{window.due_at.isoformat()} (2020-complaints/20)"
        )
    closed = complete(window, requested_at)
    return closed, start_clock(REVIEW_DECISION, requested_at, calendar)
