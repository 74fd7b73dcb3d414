"""group_policy — rules a group company (保险集团) applies to all its subsidiaries.

Enable it at the group's unit; it then applies to every company, branch and agency below,
and any of them may override single keys (a subsidiary tightening the complaint deadline
further, say). Drawn from 保险集团公司管理办法 第十三条 (group-wide complaint handling) and the
company rules' division of work (客户服务管理规定 第五条: the customer-service division 客服处
handles complaints and callbacks and guides the branches):

* a tighter complaint decision deadline than the law's 15 days (``complaint_decision_days``);
* a mandatory callback after every closed complaint, within ``complaint_callback_days``;
* escalation of near and breached deadlines to the group's customer-service division;
* an earlier reminder to handlers (``reminder_fraction`` of each deadline clock's time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.hookspecs import (
    CaseFacts,
    ClockState,
    DeadlineRule,
    FollowUp,
    Period,
    PluginInfo,
    UnitFacts,
    VisitQuota,
    hookimpl,
)

NAME = "group_policy"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "policy_reference": {
            "type": "string",
            "maxLength": 200,
            "default": "集团客户服务管理办法",
            "description": "The group document these rules come from (cited on every rule).",
        },
        "complaint_decision_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "description": "投诉处理决定期限 / days to decide a complaint (law: 15 natural days; "
            "a longer value is ignored with a warning)",
        },
        "complaint_decision_unit": {
            "enum": ["natural_days", "working_days"],
            "default": "natural_days",
        },
        "reminder_fraction": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "description": "时限提醒点 / remind the handler when this share of each deadline "
            "clock's time is used (0.5: at half time; platform default 0.8; with several "
            "policies the earliest reminder wins)",
        },
        "mandatory_complaint_callback": {"type": "boolean", "default": True},
        "complaint_callback_days": {"type": "integer", "minimum": 1, "maximum": 30, "default": 3},
        "escalation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["division"],
            "properties": {
                "division": {"type": "string", "minLength": 1, "maxLength": 200},
                "email": {"type": "string", "format": "email"},
                "phone": {"type": "string", "pattern": "^[0-9+\\- ]{5,20}$"},
            },
            "description": "集团客服处 / the group's customer-service division",
        },
        "escalate_on": {
            "type": "array",
            "items": {"enum": ["near", "breach"]},
            "uniqueItems": True,
            "default": ["breach"],
        },
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="集团客户服务政策",
    title_en="Group customer-service policy",
    description_zh="集团对所有子公司适用的规则：更严格的投诉处理时限、投诉必回访、"
    "时限临近或超时上报集团客服处。",
    description_en="Group-wide rules for every subsidiary: a tighter complaint deadline, a "
    "mandatory callback after every complaint, escalation of near and breached deadlines to "
    "the group's customer-service division.",
    kind="policy",
    citations=("seed:保险集团公司管理办法/13", "seed:客户服务管理规定/5"),
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
def insurdesk_deadline_rules(
    case: CaseFacts, trigger: str, settings: Mapping[str, Any]
) -> list[DeadlineRule]:
    """The group's complaint decision deadline, when set."""
    days = settings.get("complaint_decision_days")
    if trigger != "received" or not case.is_complaint or days is None:
        return []
    return [
        DeadlineRule(
            clock="complaint.decision",
            amount=days,
            unit=settings["complaint_decision_unit"],
            citation=settings["policy_reference"],
            source=NAME,
            statutory=False,
            description="集团投诉处理时限",
        )
    ]


@hookimpl
def insurdesk_case_transitioned(
    case: CaseFacts, to_state: str, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """The mandatory callback after a closed complaint."""
    if to_state != "closed" or not case.is_complaint:
        return []
    if not settings["mandatory_complaint_callback"]:
        return []
    return [
        FollowUp(
            kind="callback_visit",
            due=DeadlineRule(
                clock="callback.after_complaint",
                amount=settings["complaint_callback_days"],
                unit="natural_days",
                citation=settings["policy_reference"],
                source=NAME,
                statutory=False,
                description="集团要求：投诉必回访",
            ),
            note="集团要求投诉办结后必须回访",
            citation=settings["policy_reference"],
        )
    ]


@hookimpl
def insurdesk_visit_quotas(
    unit: UnitFacts, period: Period, settings: Mapping[str, Any]
) -> list[VisitQuota]:
    """Every closed complaint is visited."""
    if not settings["mandatory_complaint_callback"]:
        return []
    return [
        VisitQuota(
            kind="after_complaint",
            population="closed_complaints",
            share=1.0,
            sampling="all",
            citation=settings["policy_reference"],
        )
    ]


def _escalate(settings: Mapping[str, Any], when: str, clock: ClockState) -> list[FollowUp]:
    escalation = settings.get("escalation")
    if not escalation or when not in settings["escalate_on"]:
        return []
    recipients = tuple(v for v in (escalation.get("email"), escalation.get("phone")) if v)
    return [
        FollowUp(
            kind="escalation",
            recipients=recipients,
            channel="email" if escalation.get("email") else None,
            note=f"{clock.clock} {'即将到期' if when == 'near' else '已超时'}，"
            f"上报{escalation['division']}",
            citation=settings["policy_reference"],
        )
    ]


@hookimpl
def insurdesk_deadline_approached(clock: ClockState, settings: Mapping[str, Any]) -> list[FollowUp]:
    """Escalate to the group's division when ``escalate_on`` includes ``near``."""
    return _escalate(settings, "near", clock)


@hookimpl
def insurdesk_deadline_breached(clock: ClockState, settings: Mapping[str, Any]) -> list[FollowUp]:
    """Escalate to the group's division when ``escalate_on`` includes ``breach``."""
    return _escalate(settings, "breach", clock)


@hookimpl
def insurdesk_reminder_fraction(settings: Mapping[str, Any]) -> float | None:
    """``reminder_fraction`` when set (for every clock), else no opinion."""
    value = settings.get("reminder_fraction")
    return float(value) if value is not None else None
