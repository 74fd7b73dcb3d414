"""The registry: what is installed, checked at start-up, and traced on request."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
from structlog.testing import capture_logs

from core.hookspecs import PluginInfo, hookimpl
from core.plugins.registry import PluginLoadError, PluginRegistry, build_registry
from tests.plugins.testing_plugins import Spy, info

BUILTINS = [
    "statutory_cn",
    "service_rules_cn",
    "agency_policy",
    "branch_policy",
    "email_smtp",
    "group_policy",
    "privacy_cn",
    "webhook",
]


def test_builtins_are_installed_in_calling_order_with_bilingual_metadata() -> None:
    registry = build_registry(entry_points=False)
    assert list(registry.order) == BUILTINS
    for plugin in registry.plugins.values():
        assert plugin.builtin and plugin.version
        assert plugin.info.title_zh and plugin.info.title_en
        assert plugin.info.description_zh and plugin.info.description_en
    assert registry.get("statutory_cn").always_on
    assert registry.get("service_rules_cn").on_by_default
    assert not registry.get("group_policy").on_by_default


def test_hook_plugin_info_is_required_and_must_be_a_plugin_info() -> None:
    class Anonymous:
        @hookimpl
        def insurdesk_deadline_rules(self) -> list[Any]:
            return []

    with pytest.raises(PluginLoadError, match="'anonymous' does not implement insurdesk_plugin"):
        build_registry(entry_points=False, extra=[("anonymous", Anonymous())])

    class Wrong:
        @hookimpl
        def insurdesk_plugin_info(self) -> dict[str, str]:
            return {"version": "1"}

    with pytest.raises(PluginLoadError, match="returned dict, not a PluginInfo"):
        build_registry(entry_points=False, extra=[("wrong", Wrong())])

    spy = build_registry(entry_points=False, extra=[("spy", Spy())]).get("spy")
    assert spy.info == info("spy") and spy.version == "0.0.1"


def test_hook_plugin_config_schema_gives_defaults_secrets_and_validation() -> None:
    registry = build_registry(entry_points=False)
    service = registry.get("service_rules_cn")
    assert service.defaults["missing_materials_notice_working_days"] == 5
    assert registry.get("email_smtp").secret_keys == frozenset({"password"})
    assert registry.get("webhook").secret_keys == frozenset({"secret"})
    assert registry.get("statutory_cn").schema["additionalProperties"] is False  # no settings
    errors = list(service.validator.iter_errors({"inspection_interval_months": 12}))
    assert [e.json_path for e in errors] == ["$.inspection_interval_months"]

    class BadSchema:
        @hookimpl
        def insurdesk_plugin_info(self) -> PluginInfo:
            return info("bad")

        @hookimpl
        def insurdesk_plugin_config_schema(self) -> dict[str, Any]:
            return {"type": "object", "properties": {"x": {"type": "integr"}}}

    with pytest.raises(PluginLoadError, match="'bad': invalid settings schema"):
        build_registry(entry_points=False, extra=[("bad", BadSchema())])


def test_a_misspelled_hook_implementation_fails_at_start_up() -> None:
    class Typo:
        @hookimpl
        def insurdesk_plugin_info(self) -> PluginInfo:
            return info("typo")

        @hookimpl
        def insurdesk_deadline_rule(self) -> list[Any]:  # missing the final "s"
            return []

    with pytest.raises(pluggy.PluginValidationError, match="insurdesk_deadline_rule"):
        build_registry(entry_points=False, extra=[("typo", Typo())])


def test_two_plugins_cannot_share_a_name() -> None:
    with pytest.raises(PluginLoadError, match="two plugins are named 'webhook'"):
        build_registry(entry_points=False, extra=[("webhook", Spy())])


def test_per_plugin_callers_reach_one_plugin_only() -> None:
    spy_a, spy_b = Spy(), Spy()
    registry: PluginRegistry = build_registry(
        entry_points=False, extra=[("spy_a", spy_a), ("spy_b", spy_b)]
    )
    assert registry.implementers("insurdesk_deadline_rules") >= {"spy_a", "spy_b"}
    registry.caller("insurdesk_deadline_rules", "spy_b")(case=None, trigger="x", settings={"n": 1})
    assert spy_a.calls == [] and len(spy_b.calls) == 1
    assert registry.caller("insurdesk_visit_quotas", "spy_a") is None


def test_trace_switch_logs_every_hook_call() -> None:
    quiet = build_registry(entry_points=False, environ={})
    with capture_logs() as logs:
        quiet.caller("insurdesk_plugin_info", "webhook")()
    assert not [e for e in logs if e["event"].startswith("plugin_hook")]
    quiet.close()

    traced = build_registry(entry_points=False, environ={"INSURDESK_TRACE_PLUGINS": "1"})
    with capture_logs() as logs:
        traced.caller("insurdesk_plugin_info", "webhook")()
    traced.close()
    call, result = (e for e in logs if e["event"].startswith("plugin_hook"))
    assert call["event"] == "plugin_hook_call" and call["hook"] == "insurdesk_plugin_info"
    assert call["plugins"] == ["webhook"]
    assert result["event"] == "plugin_hook_result" and result["error"] is None
    assert "Signed webhook notifications" in result["result"]
