"""``insurdesk_clock_pauses``: which clocks stop in which states, as the plugins say it (the
flows that act on it are tested in tests/cases/test_clock_rules.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.hookspecs import CaseFacts, ClockPause, PluginInfo, PolicyFacts, hookimpl
from core.plugins import flows
from core.plugins.flows import PluginFailed
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from tests.factories import TenantWorld
from tests.plugins.conftest import complaint

LIFE = PolicyFacts(line_of_business="life", term_months=240)


class Pauser:
    """A policy answering with a pause, or with something that is not one."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return PluginInfo(
            version="0.0.1",
            title_zh="暂停",
            title_en="Pauser",
            description_zh="测试",
            description_en="test",
            kind="policy",
        )

    @hookimpl
    def insurdesk_clock_pauses(self, case: CaseFacts) -> Any:
        return self.answer


def _pauses(host: PluginHost, world: TenantWorld, case: CaseFacts) -> list[tuple[str, ...]]:
    tp = host.for_unit(world.id, world.units["bj"].path)
    return [
        (r.pause.clock, *r.pause.states, r.pause.citation, r.pause.source, str(r.always_on))
        for r in flows.clock_pauses(tp, case)
    ]


def test_hook_clock_pauses_the_statutory_baseline_stops_claims_and_acceptance_not_complaints(
    host: PluginHost, world: TenantWorld
) -> None:
    claim = complaint(world, case_type="claim_report", policy=LIFE)
    assert _pauses(host, world, claim) == [
        ("claim.decision", "awaiting_materials", "spc-insurance-2/15", "statutory_cn", "True")
    ]
    service = complaint(world, case_type="service_request", policy=LIFE)
    assert _pauses(host, world, service) == [
        (
            "policy_service.acceptance",
            "awaiting_materials",
            "2010-life-service/19",
            "statutory_cn",
            "True",
        )
    ]
    assert _pauses(host, world, complaint(world)) == []  # 2020-complaints/18 runs from receipt


def test_hook_clock_pauses_a_policy_is_stamped_with_its_name_and_not_always_on(
    make_host: Callable[..., PluginHost], world: TenantWorld
) -> None:
    answer = [
        ClockPause(clock="complaint.callback", states=("awaiting_materials",), citation="x/1")
    ]
    host = make_host(
        build_registry(
            entry_points=False, extra=[("pauser", Pauser(answer))], on_by_default=("pauser",)
        )
    )
    assert _pauses(host, world, complaint(world)) == [
        ("complaint.callback", "awaiting_materials", "x/1", "pauser", "False")
    ]


def test_a_pause_that_is_not_a_clock_pause_fails_naming_the_plugin(
    make_host: Callable[..., PluginHost], world: TenantWorld
) -> None:
    host = make_host(
        build_registry(
            entry_points=False,
            extra=[("pauser", Pauser([{"clock": "complaint.decision"}]))],
            on_by_default=("pauser",),
        )
    )
    with pytest.raises(PluginFailed) as failed:
        _pauses(host, world, complaint(world))
    assert failed.value.plugin == "pauser" and failed.value.hook == "insurdesk_clock_pauses"
    with pytest.raises(ValueError, match="citation"):
        ClockPause(clock="claim.decision", states=("awaiting_materials",), citation="")
