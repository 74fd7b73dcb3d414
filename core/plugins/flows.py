"""Asking the enabled plugins: one plugin at a time, results checked, then combined.

These are the functions the rest of the core calls (the case service, the SLA sweep, the visit
planner, the inspection scheduler, the outbox). Each takes the :class:`TenantPlugins` of the
unit concerned (``host.for_unit(tenant_id, unit.path)``), calls the hook on every enabled plugin
that implements it with that plugin's own settings, checks what came back, and combines the
results as the hook's specification says (:mod:`core.hookspecs`).

Failure isolation: a plugin that raises or returns something of the wrong type raises
:class:`PluginFailed`, a 502 problem naming the plugin and the hook, logged with the traceback.
Callers compute everything they need from plugins *before* writing (see
:func:`plan_case_opening`), so a failing plugin never leaves a half-written case.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from core.api.problems import Problem
from core.deadlines import (
    ClockState,
    DeadlineRule,
    ResolvedClock,
    RuleWarning,
    TenantCalendar,
    resolve_rules,
)
from core.plugins.resolution import TenantPlugins
from core.plugins.types import (
    CalendarAdjustment,
    CaseFacts,
    ClockPause,
    FollowUp,
    InspectionSchedule,
    NotificationChannel,
    Period,
    RubricItem,
    UnitFacts,
    VisitQuota,
)

log = structlog.get_logger("insurdesk.plugins")

MAX_INSPECTION_INTERVAL_MONTHS = 6
"""Periodic inspections at least every half-year (客服中心服务质量检查管理办法 第九条)."""
INSPECTION_INTERVAL_CITATION = "seed:客服中心服务质量检查管理办法/9"

T = TypeVar("T")


class PluginFailed(Problem):
    """A plugin raised or returned something invalid: 502, ``plugin-failed``, naming it.

    502 (Bad Gateway) because the request was fine and the core worked, but a component it
    depends on answered badly; the client can retry after the tenant admin fixes or disables
    the plugin.
    """

    def __init__(self, plugin: str, hook: str, reason: str) -> None:
        super().__init__(
            502,
            f"plugin {plugin!r} failed in {hook}: {reason}. Nothing was saved; a tenant "
            "administrator can fix its settings or disable it.",
            slug="plugin-failed",
            title="Plugin failed",
            plugin=plugin,
            hook=hook,
        )
        self.plugin = plugin
        self.hook = hook


def call_each(tp: TenantPlugins, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call ``hook`` on each enabled plugin implementing it, with its own ``settings``.

    :returns: ``(plugin, result)`` pairs in calling order (``None`` when it returned None).
    :raises PluginFailed: when a plugin raises.
    """
    results: list[tuple[str, Any]] = []
    for name, caller, settings in tp.calls(hook):
        try:
            returned = caller(settings=settings, **kwargs)
        except Exception as exc:
            log.error(
                "plugin_failed",
                plugin=name,
                hook=hook,
                tenant=str(tp.tenant_id),
                error=repr(exc),
                exc_info=True,
            )
            raise PluginFailed(name, hook, f"it raised {type(exc).__name__}: {exc}") from exc
        results.append((name, returned[0] if returned else None))
    return results


def _invalid(plugin: str, hook: str, tp: TenantPlugins, reason: str) -> PluginFailed:
    log.error("plugin_failed", plugin=plugin, hook=hook, tenant=str(tp.tenant_id), error=reason)
    return PluginFailed(plugin, hook, reason)


def _items(
    tp: TenantPlugins, plugin: str, hook: str, value: Any, cls: type[T] | tuple[type, ...]
) -> list[T]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _invalid(plugin, hook, tp, f"it returned {type(value).__name__}, not a list")
    for item in value:
        if not isinstance(item, cls):
            wanted = cls.__name__ if isinstance(cls, type) else "/".join(c.__name__ for c in cls)
            raise _invalid(
                plugin, hook, tp, f"it returned a {type(item).__name__} where {wanted} belongs"
            )
    return list(value)


def _one(tp: TenantPlugins, plugin: str, hook: str, value: Any, cls: type[T]) -> T | None:
    if value is None or isinstance(value, cls):
        return value
    raise _invalid(plugin, hook, tp, f"it returned {type(value).__name__}, not {cls.__name__}")


# -- deadlines ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadlinePlan:
    """Clocks for a trigger, and the policy rules the engine ignored (looser than the law)."""

    clocks: list[ResolvedClock]
    warnings: list[RuleWarning]

    @property
    def messages(self) -> list[str]:
        """The warnings as sentences (for the log, the API and the admin UI)."""
        return [w.message for w in self.warnings]


def deadline_rules(tp: TenantPlugins, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
    """All enabled plugins' rules for ``trigger``, each stamped with its plugin as ``source``.

    Only always-on plugins may propose statutory rules: any other plugin doing so fails.
    """
    hook = "insurdesk_deadline_rules"
    rules: list[DeadlineRule] = []
    for plugin, value in call_each(tp, hook, case=case, trigger=trigger):
        always_on = tp.registry.plugins[plugin].always_on
        for rule in _items(tp, plugin, hook, value, DeadlineRule):
            if rule.statutory and not always_on:
                raise _invalid(
                    plugin,
                    hook,
                    tp,
                    f"rule {rule.clock} claims to be statutory; only the statutory baseline "
                    "may set the law's limits",
                )
            if rule.source != plugin:
                rule = dataclasses.replace(rule, source=plugin)
            rules.append(rule)
    return rules


def compute_deadlines(
    tp: TenantPlugins,
    case: CaseFacts,
    calendar: TenantCalendar,
    *,
    trigger: str = "received",
    start: dt.datetime | None = None,
) -> DeadlinePlan:
    """The clocks ``trigger`` starts for ``case``, resolved by the deadline engine.

    :param calendar: the calendar of the case's unit (:func:`unit_calendar`).
    :param start: when the trigger happened (default: the case's ``received_at``).
    """
    rules = deadline_rules(tp, case, trigger)
    clocks, warnings = resolve_rules(rules, start or case.received_at, calendar)
    for warning in warnings:
        log.warning(
            "plugin_rule_ignored",
            plugin=warning.source,
            clock=warning.clock,
            tenant=str(tp.tenant_id),
            reason=warning.message,
        )
    return DeadlinePlan(with_reminders(tp, case, clocks), warnings)


def reminder_fraction(tp: TenantPlugins, case: CaseFacts, clock: str) -> float | None:
    """The share of ``clock``'s running time after which its handler is reminded.

    Every enabled plugin may answer (``insurdesk_reminder_fraction``); the smallest answer wins
    (the earliest reminder: the tightest policy). None when no plugin answers (the platform
    default, ``core.deadlines.DEFAULT_REMINDER_FRACTION``, 0.8, applies).

    :raises PluginFailed: a plugin answered something that is not a number in (0, 1).
    """
    hook = "insurdesk_reminder_fraction"
    answers: list[float] = []
    for plugin, value in call_each(tp, hook, case=case, clock=clock):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise _invalid(
                plugin,
                hook,
                tp,
                f"it returned {value!r} for {clock}; a reminder fraction is a number between "
                "0 and 1 (exclusive)",
            )
        answers.append(float(value))
    return min(answers, default=None)


def with_reminders(
    tp: TenantPlugins, case: CaseFacts, clocks: Iterable[ResolvedClock]
) -> list[ResolvedClock]:
    """``clocks`` with the plugins' reminder fraction of each (:func:`reminder_fraction`)."""
    out = []
    for c in clocks:
        fraction = reminder_fraction(tp, case, c.clock)
        out.append(
            c
            if fraction == c.reminder_fraction
            else dataclasses.replace(c, reminder_fraction=fraction)
        )
    return out


@dataclass(frozen=True)
class PauseRule:
    """A plugin's :class:`ClockPause`, and whether the plugin is always on (the statutory
    baseline: only such a plugin may pause a clock that has a statutory rule)."""

    pause: ClockPause
    always_on: bool


def clock_pauses(tp: TenantPlugins, case: CaseFacts) -> list[PauseRule]:
    """The clocks the enabled plugins stop in which states (``insurdesk_clock_pauses``), each
    stamped with its plugin as ``source``; the caller decides which it honours (see the hook)."""
    hook = "insurdesk_clock_pauses"
    found: list[PauseRule] = []
    for plugin, value in call_each(tp, hook, case=case):
        always_on = tp.registry.plugins[plugin].always_on
        for pause in _items(tp, plugin, hook, value, ClockPause):
            if pause.source != plugin:
                pause = dataclasses.replace(pause, source=plugin)
            found.append(PauseRule(pause, always_on))
    return found


# -- calendar -------------------------------------------------------------------------------------


def calendar_adjustments(tp: TenantPlugins, unit: UnitFacts) -> CalendarAdjustment:
    """The enabled plugins' calendar adjustments at ``unit``, combined."""
    hook = "insurdesk_calendar_adjustments"
    closed: set[dt.date] = set()
    working: set[dt.date] = set()
    opens: dt.time | None = None
    closes: dt.time | None = None
    sources = []
    for plugin, value in call_each(tp, hook, unit=unit):
        adj = _one(tp, plugin, hook, value, CalendarAdjustment)
        if adj is None:
            continue
        sources.append(plugin)
        closed |= adj.extra_closed
        working |= adj.extra_working
        if adj.business_hours is not None:
            o, c = adj.business_hours
            opens = o if opens is None else max(opens, o)
            closes = c if closes is None else min(closes, c)
    hours = None
    if opens is not None and closes is not None:
        if opens >= closes:
            raise _invalid(
                "+".join(sources),
                hook,
                tp,
                f"the plugins' business hours do not overlap ({opens}..{closes})",
            )
        hours = (opens, closes)
    return CalendarAdjustment(
        extra_closed=frozenset(closed),
        extra_working=frozenset(working - closed),
        business_hours=hours,
        source="+".join(sources),
    )


def unit_calendar(tp: TenantPlugins, unit: UnitFacts, base: TenantCalendar) -> TenantCalendar:
    """``base`` (the tenant calendar) with the plugins' adjustments at ``unit`` (memoized with
    the unit's resolved plugins, so it is rebuilt only when the configuration changes)."""
    key = ("calendar", unit.path, base)
    found = tp.memo.get(key)
    if found is None:
        adj = calendar_adjustments(tp, unit)
        if not (adj.extra_closed or adj.extra_working or adj.business_hours):
            found = base
        else:
            found = TenantCalendar(
                base.loaded,
                base.tz,
                extra_closed=base.extra_closed | adj.extra_closed,
                extra_working=base.extra_working | adj.extra_working,
                business_hours=adj.business_hours or base.business_hours,
            )
        tp.memo[key] = found
    return found


# -- visits and inspections ---------------------------------------------------------------------


def visit_quotas(tp: TenantPlugins, unit: UnitFacts, period: Period) -> list[VisitQuota]:
    """The callback-visit quotas of ``unit`` for ``period``: per ``(kind, population)`` the
    largest share and the largest minimum; ``source`` names every plugin that asked."""
    hook = "insurdesk_visit_quotas"
    merged: dict[tuple[str, str], VisitQuota] = {}
    sources: dict[tuple[str, str], list[str]] = {}
    for plugin, value in call_each(tp, hook, unit=unit, period=period):
        for quota in _items(tp, plugin, hook, value, VisitQuota):
            key = (quota.kind, quota.population)
            sources.setdefault(key, []).append(plugin)
            old = merged.get(key)
            if old is None:
                merged[key] = dataclasses.replace(quota, source=plugin)
                continue
            share_from = quota if quota.share > old.share else old
            merged[key] = dataclasses.replace(
                share_from,
                share=max(old.share, quota.share),
                minimum=max(old.minimum, quota.minimum),
                citation="; ".join(c for c in dict.fromkeys([old.citation, quota.citation]) if c),
            )
    out = []
    for key, quota in merged.items():
        sampling = "all" if quota.share >= 1 else quota.sampling
        out.append(dataclasses.replace(quota, sampling=sampling, source="+".join(sources[key])))
    return sorted(out, key=lambda q: (q.kind, q.population))


@dataclass(frozen=True)
class InspectionPlan:
    """A unit's inspection rubric and interval, with any clamp the core applied."""

    rubric: list[RubricItem]
    interval_months: int
    interval_source: str
    warnings: list[str]


def inspection_plan(tp: TenantPlugins, unit: UnitFacts) -> InspectionPlan:
    """The rubric (union by key, first plugin wins) and the interval (shortest, capped at 6)."""
    hook = "insurdesk_inspection_rubric"
    rubric: dict[str, RubricItem] = {}
    for plugin, value in call_each(tp, hook, unit=unit):
        for item in _items(tp, plugin, hook, value, RubricItem):
            rubric.setdefault(item.key, dataclasses.replace(item, source=plugin))
    hook = "insurdesk_inspection_schedule"
    interval, source = MAX_INSPECTION_INTERVAL_MONTHS, INSPECTION_INTERVAL_CITATION
    warnings = []
    for plugin, value in call_each(tp, hook, unit=unit):
        schedule = _one(tp, plugin, hook, value, InspectionSchedule)
        if schedule is None:
            continue
        if schedule.interval_months > MAX_INSPECTION_INTERVAL_MONTHS:
            message = (
                f"plugin {plugin!r} schedules inspections every {schedule.interval_months} "
                f"months; the core keeps at most {MAX_INSPECTION_INTERVAL_MONTHS} "
                f"({INSPECTION_INTERVAL_CITATION})"
            )
            warnings.append(message)
            log.warning("plugin_rule_ignored", plugin=plugin, hook=hook, reason=message)
            continue
        if schedule.interval_months < interval or source == INSPECTION_INTERVAL_CITATION:
            interval, source = min(interval, schedule.interval_months), plugin
    return InspectionPlan(list(rubric.values()), interval, source, warnings)


# -- lifecycle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFollowUp:
    """A follow-up of one kind, combined across plugins, with its due computed."""

    kind: str
    due: dt.datetime | None
    rule: DeadlineRule | None
    recipients: tuple[str, ...]
    channel: str | None
    notes: tuple[str, ...]
    sources: tuple[str, ...]


def _combine_follow_ups(
    tp: TenantPlugins,
    hook: str,
    results: Iterable[tuple[str, Any]],
    start: dt.datetime,
    calendar: TenantCalendar,
) -> list[PlannedFollowUp]:
    by_kind: dict[str, list[FollowUp]] = {}
    for plugin, value in results:
        for item in _items(tp, plugin, hook, value, FollowUp):
            if item.due is not None and item.due.statutory:
                raise _invalid(plugin, hook, tp, "a follow-up's due cannot be statutory")
            if item.source != plugin:
                item = dataclasses.replace(item, source=plugin)
            by_kind.setdefault(item.kind, []).append(item)
    planned = []
    for kind, items in by_kind.items():
        rules = [
            dataclasses.replace(i.due, clock=f"follow_up.{kind}", source=i.source)
            for i in items
            if i.due is not None
        ]
        due: dt.datetime | None = None
        rule: DeadlineRule | None = None
        if rules:
            (clock,), _ = resolve_rules(rules, start, calendar)
            due, rule = clock.due, clock.rule
        planned.append(
            PlannedFollowUp(
                kind=kind,
                due=due,
                rule=rule,
                recipients=tuple(dict.fromkeys(r for i in items for r in i.recipients)),
                channel=next((i.channel for i in items if i.channel), None),
                notes=tuple(i.note for i in items if i.note),
                sources=tuple(dict.fromkeys(i.source for i in items)),
            )
        )
    return sorted(planned, key=lambda p: p.kind)


def follow_ups_on_created(
    tp: TenantPlugins, case: CaseFacts, calendar: TenantCalendar
) -> list[PlannedFollowUp]:
    """What the plugins want done because ``case`` was registered."""
    hook = "insurdesk_case_created"
    return _combine_follow_ups(tp, hook, call_each(tp, hook, case=case), case.received_at, calendar)


def follow_ups_on_transition(
    tp: TenantPlugins,
    case: CaseFacts,
    from_state: str,
    to_state: str,
    at: dt.datetime,
    calendar: TenantCalendar,
) -> list[PlannedFollowUp]:
    """What the plugins want done because ``case`` moves from ``from_state`` to ``to_state``."""
    hook = "insurdesk_case_transitioned"
    results = call_each(tp, hook, case=case, from_state=from_state, to_state=to_state, at=at)
    return _combine_follow_ups(tp, hook, results, at, calendar)


def follow_ups_on_deadline(
    tp: TenantPlugins,
    case: CaseFacts,
    clock: ClockState,
    now: dt.datetime,
    calendar: TenantCalendar,
    *,
    breached: bool,
) -> list[PlannedFollowUp]:
    """What the plugins want done because ``clock`` is near its due (or past it)."""
    hook = "insurdesk_deadline_breached" if breached else "insurdesk_deadline_approached"
    results = call_each(tp, hook, case=case, clock=clock, now=now)
    return _combine_follow_ups(tp, hook, results, now, calendar)


# -- notification channels ------------------------------------------------------------------------


def notification_channels(tp: TenantPlugins) -> dict[str, NotificationChannel]:
    """The channels the enabled plugins offer at this unit, by name."""
    hook = "insurdesk_notification_channels"
    channels: dict[str, NotificationChannel] = {}
    owners: dict[str, str] = {}
    for plugin, value in call_each(tp, hook):
        for channel in _items(tp, plugin, hook, value, object):
            if not isinstance(channel, NotificationChannel):
                raise _invalid(plugin, hook, tp, f"{channel!r} is not a NotificationChannel")
            if channel.name in channels:
                raise _invalid(
                    plugin,
                    hook,
                    tp,
                    f"channel {channel.name!r} is already offered by plugin "
                    f"{owners[channel.name]!r}",
                )
            channels[channel.name] = channel
            owners[channel.name] = plugin
    return channels


# -- the case service's single entry point -------------------------------------------------------


@dataclass(frozen=True)
class CaseOpeningPlan:
    """Everything the plugins decide when a case is registered, computed before any write."""

    calendar: TenantCalendar
    deadlines: DeadlinePlan
    follow_ups: list[PlannedFollowUp]
    plugins: tuple[str, ...]


def plan_case_opening(
    tp: TenantPlugins, case: CaseFacts, base_calendar: TenantCalendar
) -> CaseOpeningPlan:
    """Ask every enabled plugin about a new case, before anything is written.

    The case service calls this first and writes the case, its clocks, its timeline event and
    the follow-ups in one transaction afterwards; if a plugin fails, :class:`PluginFailed`
    propagates and nothing has been written.
    """
    calendar = unit_calendar(tp, case.unit, base_calendar)
    deadlines = compute_deadlines(tp, case, calendar)
    follow_ups = follow_ups_on_created(tp, case, calendar)
    return CaseOpeningPlan(calendar, deadlines, follow_ups, tp.enabled)
