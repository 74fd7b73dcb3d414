"""branch_policy — a branch's (分支机构) own settings: visit quotas, hours, contacts, closures.

The head office guides and assesses its branches (客户服务管理规定 第五条(六)); each branch
plans callback visits (回访, 第五章) and keeps local hours and contacts:

* ``visit_quotas``: per month, which population to sample, the share and a minimum count;
  a period of several months multiplies the minimum;
* ``working_hours``: local business hours, which end periods that end at close of business
  (民法典 第二百零三条);
* ``extra_closed_days`` / ``extra_working_days``: local closures (a typhoon closure, a local
  holiday) and extra working days, applied to the calendar deadlines are counted on;
* ``escalation_contacts``: who hears about near and breached deadlines at this branch;
* ``reminder_fraction``: when handlers here are reminded of a deadline (share of its time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from core.hookspecs import (
    CalendarAdjustment,
    ClockState,
    FollowUp,
    Period,
    PluginInfo,
    UnitFacts,
    VisitQuota,
    hookimpl,
)

NAME = "branch_policy"
CITATION = "seed:客户服务管理规定/5"
_TIME = "^([01][0-9]|2[0-3]):[0-5][0-9]$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "visit_quotas": {
            "type": "array",
            "default": [],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind", "population", "share"],
                "properties": {
                    "kind": {"type": "string", "minLength": 1, "maxLength": 64},
                    "population": {
                        "enum": [
                            "new_policies",
                            "closed_complaints",
                            "paid_claims",
                            "closed_cases",
                            "customers",
                        ],
                    },
                    "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "minimum_per_month": {"type": "integer", "minimum": 0, "default": 0},
                    "sampling": {"enum": ["all", "random", "risk_weighted"], "default": "random"},
                },
            },
        },
        "working_hours": {
            "type": "object",
            "additionalProperties": False,
            "required": ["open", "close"],
            "properties": {
                "open": {"type": "string", "pattern": _TIME},
                "close": {"type": "string", "pattern": _TIME},
            },
        },
        "extra_closed_days": {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "default": [],
            "uniqueItems": True,
        },
        "extra_working_days": {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "default": [],
            "uniqueItems": True,
        },
        "reminder_fraction": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "description": "时限提醒点 / remind the handler when this share of each deadline "
            "clock's time is used (0.5: at half time; platform default 0.8; with several "
            "policies the earliest reminder wins)",
        },
        "escalation_contacts": {
            "type": "array",
            "items": {"type": "string", "minLength": 3, "maxLength": 254},
            "default": [],
        },
        "escalate_on": {
            "type": "array",
            "items": {"enum": ["near", "breach"]},
            "uniqueItems": True,
            "default": ["near", "breach"],
        },
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="分支机构政策",
    title_en="Branch policy",
    description_zh="分支机构的本地设置：各期回访配额与抽样方式、本地营业时间、本地休息日与调整工作日、"
    "时限上报联系人。",
    description_en="A branch's local settings: callback-visit quotas per period and how they "
    "are sampled, local business hours, local closures and working days, escalation contacts.",
    kind="policy",
    citations=(CITATION, "civil-code/203"),
)


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return INFO


@hookimpl
def insurdesk_plugin_config_schema() -> dict[str, Any]:
    """The settings schema."""
    return SCHEMA


@hookimpl
def insurdesk_visit_quotas(
    unit: UnitFacts, period: Period, settings: Mapping[str, Any]
) -> list[VisitQuota]:
    """The branch's quotas; the monthly minimum is multiplied by the period's months."""
    return [
        VisitQuota(
            kind=q["kind"],
            population=q["population"],
            share=float(q["share"]),
            minimum=int(q.get("minimum_per_month", 0)) * period.months,
            sampling=q.get("sampling", "random"),
            citation=CITATION,
        )
        for q in settings["visit_quotas"]
    ]


def _time(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


@hookimpl
def insurdesk_calendar_adjustments(
    unit: UnitFacts, settings: Mapping[str, Any]
) -> CalendarAdjustment | None:
    """Local closures, working days and business hours."""
    closed = frozenset(dt.date.fromisoformat(d) for d in settings["extra_closed_days"])
    working = frozenset(dt.date.fromisoformat(d) for d in settings["extra_working_days"])
    hours = settings.get("working_hours")
    business_hours = (_time(hours["open"]), _time(hours["close"])) if hours else None
    if not (closed or working or business_hours):
        return None
    return CalendarAdjustment(
        extra_closed=closed, extra_working=working, business_hours=business_hours
    )


def _escalate(settings: Mapping[str, Any], when: str, clock: ClockState) -> list[FollowUp]:
    contacts = tuple(settings["escalation_contacts"])
    if not contacts or when not in settings["escalate_on"]:
        return []
    return [
        FollowUp(
            kind="escalation",
            recipients=contacts,
            note=f"{clock.clock} {'即将到期' if when == 'near' else '已超时'}（分支机构联系人）",
            citation=CITATION,
        )
    ]


@hookimpl
def insurdesk_deadline_approached(clock: ClockState, settings: Mapping[str, Any]) -> list[FollowUp]:
    """Tell the branch's contacts that a clock is near its due."""
    return _escalate(settings, "near", clock)


@hookimpl
def insurdesk_deadline_breached(clock: ClockState, settings: Mapping[str, Any]) -> list[FollowUp]:
    """Tell the branch's contacts that a clock is past its due."""
    return _escalate(settings, "breach", clock)


@hookimpl
def insurdesk_reminder_fraction(settings: Mapping[str, Any]) -> float | None:
    """``reminder_fraction`` when set (for every clock), else no opinion."""
    value = settings.get("reminder_fraction")
    return float(value) if value is not None else None
