"""Plugins that exist only for the tests: a spy, a raiser, a liar, a loose policy, a
reminder setter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.hookspecs import (
    CaseFacts,
    DeadlineRule,
    InspectionSchedule,
    PluginInfo,
    UnitFacts,
    hookimpl,
)
from core.plugins.registry import PluginRegistry, build_registry


def info(title: str) -> PluginInfo:
    """A minimal description."""
    return PluginInfo(
        version="0.0.1",
        title_zh=title,
        title_en=title,
        description_zh=title,
        description_en=title,
        kind="extension",
    )


class Spy:
    """Records every call it gets (and the settings it was given)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, Any]]] = []

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return info("spy")

    @hookimpl
    def insurdesk_plugin_config_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"label": {"type": "string", "default": "x"}},
            "additionalProperties": False,
        }

    @hookimpl
    def insurdesk_deadline_rules(
        self, case: CaseFacts, trigger: str, settings: Mapping[str, Any]
    ) -> list[DeadlineRule]:
        self.calls.append(("insurdesk_deadline_rules", settings))
        return []


class Raiser:
    """Raises in the deadline hook."""

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return info("raiser")

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        raise RuntimeError("the policy database is down")


class Liar:
    """Returns the wrong types, or claims statutory power it does not have."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return info("liar")

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> Any:
        if self.mode == "string":
            return "fifteen days"
        if self.mode == "statutory":
            return [
                DeadlineRule(
                    clock="complaint.decision",
                    amount=90,
                    unit="natural_days",
                    citation="made-up/1",
                    source="liar",
                    statutory=True,
                )
            ]
        return [{"clock": "complaint.decision", "amount": 3}]

    @hookimpl
    def insurdesk_inspection_schedule(self, unit: UnitFacts) -> Any:
        return InspectionSchedule(interval_months=12)


class Looser:
    """A policy looser than the law: 20 days for a complaint, inspections once a year."""

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return info("looser")

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        if trigger != "received" or not case.is_complaint:
            return []
        return [
            DeadlineRule(
                clock="complaint.decision",
                amount=20,
                unit="natural_days",
                citation="loose-policy/1",
                source="looser",
                statutory=False,
            )
        ]

    @hookimpl
    def insurdesk_inspection_schedule(self, unit: UnitFacts) -> InspectionSchedule:
        return InspectionSchedule(interval_months=12, citation="loose-policy/2")


class Reminder:
    """Answers ``insurdesk_reminder_fraction`` with a fixed value, for one clock or all."""

    def __init__(self, value: Any, clock: str | None = None) -> None:
        self.value = value
        self.clock = clock

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return info("reminder")

    @hookimpl
    def insurdesk_reminder_fraction(self, clock: str) -> Any:
        return self.value if self.clock in (None, clock) else None


def registry_with(**plugins: object) -> PluginRegistry:
    """The built-ins plus ``plugins`` (name=object), without entry points."""
    return build_registry(entry_points=False, extra=list(plugins.items()))
