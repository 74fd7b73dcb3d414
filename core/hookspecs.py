"""The hook specifications: the whole public API between the core and its plugins.

A plugin is a module (or any object) with functions decorated by :data:`hookimpl` and named
after the specifications below. Built-in plugins live in ``plugins/``; third-party packages
declare an ``insurdesk.plugins`` entry point. See ``docs/plugins.md``.

How the core calls a hook
    Plugins are installed once per process and *enabled per tenant and organization unit*.
    For a call about unit X of tenant T, the core calls every plugin enabled at X, **one plugin
    at a time**, passing each one its **own** effective settings at X as ``settings`` (a
    read-only mapping: the schema's defaults overlaid, key by key, with the settings of X's
    ancestors and of X, the most specific unit winning). Calling plugins one at a time is what
    lets the core give each its own settings, name the plugin that failed, and check each
    result. Plugins are called in a fixed order: always-on plugins first (``statutory_cn``),
    then plugins on by default, then the rest by name. A plugin may accept only the arguments
    it needs (pluggy passes a subset).

How results combine
    Each hook's docstring says how the core combines the results of several plugins. The rule
    behind all of them: statutory limits are the outer bound, so a deadline or a quota from a
    policy can make things stricter, never looser, and the core enforces it, not the plugin.

Failures
    A plugin that raises, or returns something of the wrong type, makes the operation fail with
    a ``plugin-failed`` problem naming the plugin and the hook (and a log entry); the core asks
    the plugins before it writes anything, so a failing plugin never leaves a half-written case.

Naming
    ``insurdesk_<noun>_<what>``: hooks that *contribute* something are named after what they
    return (``insurdesk_deadline_rules``), hooks that *react* to an event are named after the
    event in the past tense (``insurdesk_case_created``).

``firstresult`` is used only by the two hooks that describe a single plugin; ``historic`` by
none, because every plugin is registered before the first call and none may be added later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pluggy

from core.deadlines import ClockState, DeadlineRule
from core.plugins.types import (
    PERSONAL_LINES,
    CalendarAdjustment,
    CaseFacts,
    CaseType,
    ClockPause,
    CustomerFacts,
    FollowUp,
    FollowUpKind,
    InspectionSchedule,
    Notification,
    NotificationChannel,
    OutboundMessage,
    Period,
    PluginInfo,
    PolicyFacts,
    RubricItem,
    UnitFacts,
    VisitQuota,
)

PROJECT_NAME = "insurdesk"
ENTRY_POINT_GROUP = "insurdesk.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorate a plugin's hook implementations with this (``@hookimpl``)."""

TRIGGERS: tuple[str, ...] = (
    "received",
    "complaint.decided",
    "review.requested",
    "claim.agreed",
    "claim.refused",
    "policy_service.approved",
    "policy_service.premium_paid",
    "policy.issued",
    "policy.suspended",
)
"""Events that start deadline clocks (the ``trigger`` of :func:`insurdesk_deadline_rules`)."""


# -- the plugin itself: called once per plugin, at start-up -------------------------------------


@hookspec(firstresult=True)
def insurdesk_plugin_info() -> PluginInfo:  # type: ignore[empty-body]
    """Describe the plugin: version, title and description in Chinese and English.

    Called once per plugin when the plugin registry is built (start-up). Every plugin must
    implement it; a plugin without it is refused at start-up.

    :returns: a :class:`PluginInfo`. ``firstresult``: the call is made on one plugin at a time
        and its answer is the plugin's description; nothing is combined.
    """


@hookspec(firstresult=True)
def insurdesk_plugin_config_schema() -> dict[str, Any] | None:
    """Declare the JSON Schema (draft 2020-12) of the plugin's settings.

    Called once per plugin at start-up. The schema must describe a JSON object; its
    properties' ``default`` values are the settings a unit has when nobody set anything. Every
    settings change is validated against it (a bad value is refused with its JSON path, nothing
    is saved). A top-level property marked ``"writeOnly": true`` (a secret) is never shown by
    the API or in the history.

    :returns: the schema, or None when the plugin has no settings (it then accepts only ``{}``).
        ``firstresult``: one plugin at a time; nothing is combined.
    """


# -- deadlines ------------------------------------------------------------------------------------


@hookspec
def insurdesk_deadline_rules(  # type: ignore[empty-body]
    case: CaseFacts, trigger: str, settings: Mapping[str, Any]
) -> list[DeadlineRule]:
    """Propose deadline rules (SLA clocks) for a case when ``trigger`` happens.

    Called when a case is registered (``trigger="received"``) and at each later event that
    starts clocks (``complaint.decided``, ``claim.agreed``, ``policy.issued`` ...: see
    :data:`TRIGGERS`), before anything is written.

    :param case: the facts of the case (type, channel, unit, customer, policy, complexity).
    :param trigger: the event that starts the clocks; return ``[]`` for events you ignore.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: rules, each naming its ``clock`` (e.g. ``complaint.decision``), its length and
        unit (natural days, working days or hours) and the ``citation`` it implements. The core
        sets ``source`` to the plugin's name. Only the always-on statutory plugin may return
        ``statutory=True`` rules; anything else is a plugin failure.

    Combined: all plugins' rules go to the deadline engine, which keeps, per clock, the earliest
    due. A policy rule whose due is later than the statutory due is ignored with a warning
    (never loosens the law); the warnings are returned with the clocks.
    """


@hookspec
def insurdesk_reminder_fraction(
    case: CaseFacts, clock: str, settings: Mapping[str, Any]
) -> float | None:
    """Say when the handler is reminded of a deadline clock: after this share of its time.

    Called once per clock when clocks start (a case registered, a later trigger such as
    ``complaint.decided``), after :func:`insurdesk_deadline_rules`, before anything is written.

    :param case: the facts of the case.
    :param clock: the clock's name, e.g. ``complaint.decision``.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: a number greater than 0 and less than 1 (``0.5``: when half of the clock's running
        time is used; paused time counts neither as used nor as available), or None to leave
        it to the other plugins.

    Combined: the smallest answer wins (the earliest reminder: the tightest policy); when no
    plugin answers, the platform default 0.8. Anything else (0, 1, a string) is a plugin
    failure. The share is fixed when the clock starts and kept with it: an extension or a
    restart re-arms the reminder at the same share of the new period; a settings change
    applies to clocks started afterwards.
    """


@hookspec
def insurdesk_clock_pauses(  # type: ignore[empty-body]
    case: CaseFacts, settings: Mapping[str, Any]
) -> list[ClockPause]:
    """Say which deadline clocks stop while the case is in which lifecycle states.

    Called at every transition of a case, before anything is written. When a transition enters
    a state in which a clock pauses, the running clock is paused; when a later transition leaves
    it for a state in which it does not pause, the clock resumes and its due moves by the days
    the pause excluded (counted as the deadline engine counts pauses, on the unit's working-day
    calendar for working-day clocks). Pauses for appraisal and mediation are acts of the handler
    (``POST .../clocks/{clock}/pause``), not states, and are not asked here.

    :param case: the facts of the case (``case.state`` is the state it leaves).
    :param settings: this plugin's effective settings at the case's unit.
    :returns: :class:`ClockPause` values, each naming a clock, the states in which it does not
        run and the ``citation`` that allows it; ``[]`` for none.

    Combined: the union of all plugins' pauses. A pause moves a due later, and only the law may
    do that to a statutory period: a pause is honoured for a clock that has a statutory rule
    in the case only when it comes from an always-on plugin (the statutory baseline); another
    plugin's pause of such a clock is ignored and named in the transition's timeline event
    (``pause_warnings``). Policy plugins may pause their own policy-only clocks.
    """


# -- callback visits and inspections --------------------------------------------------------------


@hookspec
def insurdesk_visit_quotas(  # type: ignore[empty-body]
    unit: UnitFacts, period: Period, settings: Mapping[str, Any]
) -> list[VisitQuota]:
    """Say how many callback visits (回访) of which kinds a unit owes in a period.

    Called by the visit planner once per unit and period (e.g. every month), and by the API
    that shows a unit's plan.

    :param unit: the unit planning its visits.
    :param period: the planning period.
    :param settings: this plugin's effective settings at ``unit``.
    :returns: quotas: which population is sampled, the share and minimum count, how sampled.

    Combined per ``(kind, population)``: the most demanding wins, the largest ``share`` and the
    largest ``minimum`` (from whichever plugins proposed them); ``sampling`` is ``all`` when
    the share is 1, else the sampling of the plugin with the largest share.
    """


@hookspec
def insurdesk_inspection_rubric(  # type: ignore[empty-body]
    unit: UnitFacts, settings: Mapping[str, Any]
) -> list[RubricItem]:
    """Contribute scoring items to the quality-inspection (质检) rubric of a unit.

    Called when an inspection of the unit is prepared.

    :param unit: the unit inspected.
    :param settings: this plugin's effective settings at ``unit``.
    :returns: rubric items, each with a stable ``key`` and a maximum score.

    Combined: the union of all items, by ``key``; when two plugins propose the same key, the one
    called first keeps it (see the calling order above).
    """


@hookspec
def insurdesk_inspection_schedule(
    unit: UnitFacts, settings: Mapping[str, Any]
) -> InspectionSchedule | None:
    """Say how often the unit's periodic quality inspections run.

    Called by the inspection scheduler for each unit.

    :param unit: the unit inspected.
    :param settings: this plugin's effective settings at ``unit``.
    :returns: an :class:`InspectionSchedule`, or None for no opinion.

    Combined: the shortest interval wins. The core caps it at 6 months whatever plugins say
    ("一般不少于半年一次", 客服中心服务质量检查管理办法 第九条), with a warning when it had to.
    """


# -- case lifecycle -------------------------------------------------------------------------------


@hookspec
def insurdesk_case_created(  # type: ignore[empty-body]
    case: CaseFacts, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """React to a new case (e.g. schedule an ad-hoc inspection after a complaint).

    Called when a case is registered, before the registration is written; what plugins return
    is written in the same transaction as the case.

    :param case: the new case.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: follow-ups for the core to record (never write anything yourself).

    Combined per follow-up ``kind``: one follow-up of each kind, with the earliest due among the
    plugins that asked for it and the union of their recipients.
    """


@hookspec
def insurdesk_case_transitioned(  # type: ignore[empty-body]
    case: CaseFacts, from_state: str, to_state: str, at: dt.datetime, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """React to a case changing state (e.g. a callback visit after a closed complaint).

    Called for every transition, before it is written.

    :param case: the case, with ``case.state`` still ``from_state``.
    :param from_state: the state it leaves.
    :param to_state: the state it enters (``closed``, ``escalated`` ...).
    :param at: when the transition happens (timezone-aware); follow-up dues count from it.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: follow-ups, combined as for :func:`insurdesk_case_created`.
    """


@hookspec
def insurdesk_deadline_approached(  # type: ignore[empty-body]
    case: CaseFacts, clock: ClockState, now: dt.datetime, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """React to a clock nearing its due (the SLA sweep found it past its warning threshold).

    Called at most once per clock by the SLA sweep.

    :param case: the case the clock belongs to.
    :param clock: the running clock (its rule, due, pauses and extensions).
    :param now: the sweep's time.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: follow-ups (typically ``notification`` or ``escalation``), combined as for
        :func:`insurdesk_case_created`.
    """


@hookspec
def insurdesk_deadline_breached(  # type: ignore[empty-body]
    case: CaseFacts, clock: ClockState, now: dt.datetime, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """React to a clock past its due without the act done.

    Called once per breached clock by the SLA sweep.

    :param case: the case the clock belongs to.
    :param clock: the breached clock.
    :param now: the sweep's time.
    :param settings: this plugin's effective settings at the case's unit.
    :returns: follow-ups (typically ``escalation``), combined as for
        :func:`insurdesk_case_created`.
    """


# -- notifications and the calendar ---------------------------------------------------------------


@hookspec
def insurdesk_notification_channels(  # type: ignore[empty-body]
    settings: Mapping[str, Any],
) -> list[NotificationChannel]:
    """Offer notification channels (e-mail, SMS, WeCom/DingTalk-style webhooks ...).

    Called when the core needs the channels available at a unit (to send, or to list them).

    :param settings: this plugin's effective settings at the unit (addresses, secrets ...).
    :returns: channel objects, each with a unique ``name`` and a ``build(notification)`` method
        that returns the wire messages (built and signed; the outbox delivers them).

    Combined: all channels, by name; two plugins offering the same name is a failure of the
    second one.
    """


@hookspec
def insurdesk_calendar_adjustments(
    unit: UnitFacts, settings: Mapping[str, Any]
) -> CalendarAdjustment | None:
    """Adjust the unit's working-day calendar: extra closed days, extra working days, hours.

    Called when the core builds the calendar that deadlines at ``unit`` are counted on.

    :param unit: the unit.
    :param settings: this plugin's effective settings at ``unit``.
    :returns: a :class:`CalendarAdjustment`, or None.

    Combined: the union of closed days and of working days (a day both closed and working is
    closed, as on the tenant calendar); for business hours the latest opening and the earliest
    closing (the strictest).
    """


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name in sorted(globals()) if name.startswith("insurdesk_")
)
"""Every hook specified here."""

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "PERSONAL_LINES",
    "TRIGGERS",
    "CalendarAdjustment",
    "CaseFacts",
    "CaseType",
    "ClockPause",
    "ClockState",
    "CustomerFacts",
    "DeadlineRule",
    "FollowUp",
    "FollowUpKind",
    "InspectionSchedule",
    "Notification",
    "NotificationChannel",
    "OutboundMessage",
    "Period",
    "PluginInfo",
    "PolicyFacts",
    "RubricItem",
    "UnitFacts",
    "VisitQuota",
    "hookimpl",
    "hookspec",
]
