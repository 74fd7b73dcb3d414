"""example_vip — faster complaint handling for VIP and elderly customers (a third-party plugin).

Discovered through the ``insurdesk.plugins`` entry point declared in ``pyproject.toml``; the
entry point's name, ``example_vip``, is the plugin's name in insurdesk. It imports only the
public plugin API, :mod:`core.hookspecs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.hookspecs import CaseFacts, DeadlineRule, FollowUp, PluginInfo, hookimpl

CITATION = "example:VIP客户服务规范/3"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "complaint_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "default": 7,
            "description": "Natural days to decide a VIP or elderly customer's complaint.",
        },
        "first_contact_hours": {"type": "integer", "minimum": 1, "maximum": 72, "default": 24},
        "elderly_age": {"type": "integer", "minimum": 50, "maximum": 100, "default": 60},
        "vip_desk": {"type": "string", "default": "vip-desk@example.com"},
    },
}


def _covered(case: CaseFacts, settings: Mapping[str, Any]) -> bool:
    age = case.customer.age
    return case.customer.vip or (age is not None and age >= settings["elderly_age"])


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the plugin (the version shown is the installed distribution's)."""
    return PluginInfo(
        version="0.3.0",
        title_zh="VIP与老年客户投诉快速处理",
        title_en="Fast complaint handling for VIP and elderly customers",
        description_zh="VIP客户和老年客户的投诉7日内作出处理决定，24小时内首次联系客户。",
        description_en="Complaints of VIP and elderly customers are decided within 7 days and "
        "the customer is first contacted within 24 hours.",
        kind="extension",
        citations=(CITATION,),
    )


@hookimpl
def insurdesk_plugin_config_schema() -> dict[str, Any]:
    """The settings schema."""
    return SCHEMA


@hookimpl
def insurdesk_deadline_rules(
    case: CaseFacts, trigger: str, settings: Mapping[str, Any]
) -> list[DeadlineRule]:
    """A shorter decision clock and a first-contact clock for covered complaints."""
    if trigger != "received" or not case.is_complaint or not _covered(case, settings):
        return []
    return [
        DeadlineRule(
            clock="complaint.decision",
            amount=settings["complaint_days"],
            unit="natural_days",
            citation=CITATION,
            source="example_vip",
            statutory=False,
            description="VIP与老年客户投诉快速处理",
        ),
        DeadlineRule(
            clock="complaint.first_contact",
            amount=settings["first_contact_hours"],
            unit="hours",
            citation=CITATION,
            source="example_vip",
            statutory=False,
            description="24小时内首次联系客户",
        ),
    ]


@hookimpl
def insurdesk_case_created(case: CaseFacts, settings: Mapping[str, Any]) -> list[FollowUp]:
    """Tell the VIP desk about a VIP customer's complaint."""
    if not (case.is_complaint and case.customer.vip):
        return []
    return [
        FollowUp(
            kind="notification",
            recipients=(settings["vip_desk"],),
            channel="email",
            note="VIP客户投诉",
            citation=CITATION,
        )
    ]
