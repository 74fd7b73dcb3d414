"""What transitions do to clocks beyond completing them: clocks stopped by a state
(``insurdesk_clock_pauses``: the statutory baseline stops a claim's decision period while the
proof is awaited), and what new facts (2020-complaints/18) and a re-opening do to each clock
of a complaint (docs/decisions/0006-restarts-and-reopening.md)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.cases import flows, services
from core.cases.models import CaseClock
from core.cases.schemas import TransitionIn
from core.db import Database
from core.hookspecs import CaseFacts, ClockPause, DeadlineRule, PluginInfo, hookimpl
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from tests.cases.conftest import Acting, complaint
from tests.cases.http import Api, person_token
from tests.conftest import LiveServer
from tests.factories import TenantWorld

CN = ZoneInfo("Asia/Shanghai")


def at(day: str, hour: int = 10) -> dt.datetime:
    """A China time on ``day`` (YYYY-MM-DD)."""
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), tzinfo=CN)


def all_clocks(acting: Acting, world: TenantWorld, case_id: uuid.UUID) -> list[CaseClock]:
    with acting(world, "agent_bj") as ctx:
        return list(services.clocks_of(ctx.session, case_id))


def clock(acting: Acting, world: TenantWorld, case_id: uuid.UUID, name: str) -> CaseClock:
    """The newest clock called ``name``."""
    return [c for c in all_clocks(acting, world, case_id) if c.clock == name][-1]


def act(
    acting: Acting,
    world: TenantWorld,
    case_id: uuid.UUID,
    user: str = "agent_bj",
    plugins: PluginHost | None = None,
    **fields: Any,
) -> Any:
    with acting(world, user, plugins=plugins) as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(ctx, case, TransitionIn(**fields), if_match=flows.etag(case))
        events = services.timeline(ctx.session, case_id)
        return events[-2] if fields.get("notice_channel") else events[-1]


def new_case(
    acting: Acting, world: TenantWorld, plugins: PluginHost | None = None, **kwargs: Any
) -> uuid.UUID:
    with acting(world, "agent_bj", plugins=plugins) as ctx:
        return flows.register_case(ctx, complaint(world, **kwargs)).id


# -- a test policy: its own clock, a tighter decision period, and pauses -----------------------


class WaitingPolicy:
    """A company policy: a 3-working-day callback promise that stops while materials are
    awaited (honoured: a policy-only clock), and an attempt to stop the statutory decision
    period too (ignored); a 10-working-day decision period (2010-life-service/29 style)."""

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return PluginInfo(
            version="0.0.1",
            title_zh="等待材料政策",
            title_en="Waiting policy",
            description_zh="测试用",
            description_en="for tests",
        )

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        if trigger != "received" or not case.is_complaint:
            return []
        return [
            DeadlineRule(
                clock="complaint.callback_promise",
                amount=3,
                unit="working_days",
                citation="policy:callback/1",
                source="waiting_policy",
                statutory=False,
            ),
            DeadlineRule(
                clock="complaint.decision",
                amount=10,
                unit="working_days",
                citation="2010-life-service/29",
                source="waiting_policy",
                statutory=False,
            ),
        ]

    @hookimpl
    def insurdesk_clock_pauses(self, case: CaseFacts) -> list[ClockPause]:
        return [
            ClockPause(
                clock="complaint.callback_promise",
                states=("awaiting_materials",),
                citation="policy:callback/2",
            ),
            ClockPause(
                clock="complaint.decision",
                states=("awaiting_materials",),
                citation="policy:callback/3",
            ),
        ]


@pytest.fixture(scope="module")
def policy_host(database: Database) -> Iterator[PluginHost]:
    host = PluginHost(
        build_registry(
            extra=[("waiting_policy", WaitingPolicy())],
            on_by_default=("service_rules_cn", "waiting_policy"),
        ),
        database,
        listen=False,
    )
    yield host
    host.close()


# -- clocks stopped by a state --------------------------------------------------------------------


def test_hook_clock_pauses_a_policy_stops_its_own_clock_never_the_statutory_one(
    acting: Acting, world: TenantWorld, policy_host: PluginHost
) -> None:
    case_id = new_case(acting, world, policy_host, received_at="2025-11-03T10:00:00+08:00")
    decision = clock(acting, world, case_id, "complaint.decision")
    assert (decision.source, decision.last_day) == ("waiting_policy", dt.date(2025, 11, 17))
    moved = act(
        acting,
        world,
        case_id,
        plugins=policy_host,
        action="request_materials",
        missing_materials=["授权委托书"],
        notice_channel="sms",
        occurred_at=at("2025-11-04", 14),
    )
    paused = [c for c in moved.data["clocks"] if c["change"] == "paused"]
    assert [(c["clock"], c["citation"], c["plugin"]) for c in paused] == [
        ("complaint.callback_promise", "policy:callback/2", "waiting_policy")
    ]
    assert [w["clock"] for w in moved.data["pause_warnings"]] == ["complaint.decision"]
    assert "only the statutory baseline" in moved.data["pause_warnings"][0]["message"]
    assert clock(acting, world, case_id, "complaint.decision").status == "running"
    assert clock(acting, world, case_id, "complaint.callback_promise").status == "paused"

    act(
        acting,
        world,
        case_id,
        plugins=policy_host,
        action="materials_received",
        occurred_at=at("2025-11-10", 9),
    )
    promise = clock(acting, world, case_id, "complaint.callback_promise")
    # 3 working days from Mon 11-03: 11-04 counted (the pause began that day), 11-05..11-10 not;
    # the remaining 2 run 11-11, 11-12.
    assert promise.status == "running" and promise.last_day == dt.date(2025, 11, 12)
    still = clock(acting, world, case_id, "complaint.decision")
    assert still.last_day == dt.date(2025, 11, 17) and still.paused_seconds == 0


def test_the_statutory_complaint_period_runs_while_materials_are_awaited(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_case(acting, world, received_at="2025-11-03T10:00:00+08:00")
    act(
        acting,
        world,
        case_id,
        action="request_materials",
        missing_materials=["身份证明"],
        notice_channel="phone",
        occurred_at=at("2025-11-05", 14),
    )
    assert clock(acting, world, case_id, "complaint.decision").status == "running"
    act(acting, world, case_id, action="materials_received", occurred_at=at("2025-11-12", 11))
    decision = clock(acting, world, case_id, "complaint.decision")
    assert decision.last_day == dt.date(2025, 11, 18) and decision.paused_seconds == 0


@pytest.fixture(scope="module")
def as_(
    database: Database, world: TenantWorld, live_server: LiveServer
) -> Iterator[dict[str, Api]]:
    people = {
        name: Api(live_server.url, person_token(database, world, live_server.url, name))
        for name in ("agent_bj", "manager_bj")
    }
    yield people
    for client in people.values():
        client.close()


def test_a_claim_decision_stops_while_the_proof_is_awaited_end_to_end(
    as_: dict[str, Api], world: TenantWorld
) -> None:
    """Over HTTP: a life claim received on Fri 2025-09-26 (5 working days, 2010-life-service/23;
    Sun 09-28 and Sat 10-11 are 调休 working days, 10-01..10-08 the National Day holiday)."""
    agent = as_["agent_bj"]
    made = agent.post(
        "/api/v1/cases",
        {
            "type": "claim_report",
            "channel": "hotline",
            "subject": "住院医疗理赔 / hospital claim",
            "received_at": "2025-09-26T10:00:00+08:00",
            "unit_id": str(world.units["bj"].id),
            "customer_id": str(world.customers["bj"].id),
            "policy_id": str(world.policies["bj"].id),
        },
    )
    assert made.status_code == 201, made.text
    case_id = made.json()["case"]["id"]

    def decision(body: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in body["clocks"] if c["clock"] == "claim.decision")

    start = decision(made.json())
    assert (start["unit"], start["amount"]) == ("working_days", 5)
    assert start["last_day"] == "2025-10-10"  # 09-28, 09-29, 09-30, 10-09, 10-10

    asked = agent.act(
        case_id,
        {
            "action": "request_materials",
            "missing_materials": ["出院小结", "费用清单"],
            "notice_channel": "sms",
            "occurred_at": "2025-09-29T14:00:00+08:00",
        },
    )
    assert asked.status_code == 200, asked.text
    assert decision(asked.json())["status"] == "paused"
    timeline = agent.get(f"/api/v1/cases/{case_id}/timeline").json()["events"]
    change = next(
        c
        for e in timeline
        if e["action"] == "request_materials"
        for c in e["data"].get("clocks", [])
        if c["clock"] == "claim.decision"
    )
    assert change["change"] == "paused" and change["citation"] == "spc-insurance-2/15"
    assert change["plugin"] == "statutory_cn"

    arrived = agent.act(
        case_id,
        {"action": "materials_received", "occurred_at": "2025-10-11T10:00:00+08:00"},
    )
    assert arrived.status_code == 200, arrived.text
    resumed = decision(arrived.json())
    # Counted before the wait: 09-28 and 09-29 (the notice's day counts). The wait removes
    # 09-30..10-11, the remaining 3 working days run Mon 10-13 .. Wed 10-15.
    assert resumed["paused_at"] is None and resumed["last_day"] == "2025-10-15"
    assert resumed["paused_seconds"] == (12 * 24 - 4) * 3600  # 09-29 14:00 .. 10-11 10:00
    assert resumed["due_at"].startswith("2025-10-15T16:00:00")  # 10-16 00:00 China time
    agreed = agent.act(
        case_id,
        {"action": "agree", "decision": "同意赔付", "occurred_at": "2025-10-14T10:00:00+08:00"},
    )
    assert agreed.status_code == 200, agreed.text
    assert decision(agreed.json())["status"] == "met"  # on time only because of the pause


# -- new facts and re-opening --------------------------------------------------------------------


def test_new_facts_count_the_period_afresh_on_the_rules_in_force_at_the_new_start(
    acting: Acting, world: TenantWorld, policy_host: PluginHost
) -> None:
    """At registration (Mon 09-01) the policy's 10 working days end before the statute's 15
    days; counted from new facts on Mon 09-22 they would end on 10-11, after the statute's
    10-09 (15 days end on 10-07, a holiday), so the statute governs the new period."""
    case_id = new_case(acting, world, policy_host, received_at="2025-09-01T10:00:00+08:00")
    first = clock(acting, world, case_id, "complaint.decision")
    assert (first.source, first.last_day) == ("waiting_policy", dt.date(2025, 9, 15))
    for action, day in (("begin_review", "2025-09-02"), ("accept", "2025-09-03")):
        act(acting, world, case_id, plugins=policy_host, action=action, occurred_at=at(day))
    act(
        acting,
        world,
        case_id,
        plugins=policy_host,
        action="new_facts",
        reason="投诉人补充了新的事实",
        occurred_at=at("2025-09-22"),
    )
    renewed = clock(acting, world, case_id, "complaint.decision")
    assert (renewed.source, renewed.statutory) == ("statutory_cn", True)
    assert renewed.last_day == dt.date(2025, 10, 9)
    assert renewed.history["restarts"][0]["previous_due_at"].startswith("2025-09-15T16:00")


def test_new_facts_during_a_mediation_restart_the_period_and_the_mediation_goes_on(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_case(acting, world, received_at="2025-11-03T09:00:00+08:00")
    for action, day in (("begin_review", "2025-11-03"), ("accept", "2025-11-04")):
        act(acting, world, case_id, action=action, occurred_at=at(day, 11))
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.pause_clock(
            ctx,
            case,
            "complaint.decision",
            kind="mediation",
            reason="投诉人同意调解",
            occurred=at("2025-11-05", 14),
            if_match=flows.etag(case),
        )
    act(
        acting,
        world,
        case_id,
        action="new_facts",
        reason="调解中提交了新的证据",
        occurred_at=at("2025-11-07", 10),
    )
    during = clock(acting, world, case_id, "complaint.decision")
    assert during.status == "paused" and during.started_at == at("2025-11-07", 10)
    assert during.history["pause_reason"].startswith("mediation")
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.resume_clock(
            ctx,
            case,
            "complaint.decision",
            reason="调解结束",
            occurred=at("2025-11-12", 11),
            if_match=flows.etag(case),
        )
    after = clock(acting, world, case_id, "complaint.decision")
    # 15 days from 11-07, the mediation days 11-08..11-12 not counted: 11-22 + 5 = 11-27.
    assert after.status == "running" and after.last_day == dt.date(2025, 11, 27)


def test_reopening_gives_a_new_decision_period_and_closes_the_old_review_window(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_case(acting, world, received_at="2025-11-03T09:00:00+08:00")
    steps: list[tuple[str, dict[str, Any]]] = [
        ("begin_review", {}),
        ("accept", {}),
        ("start", {}),
        ("decide", {"decision": "维持原处理"}),
        ("answer", {"answer": "答复投诉人", "notice_channel": "letter"}),
        ("close", {}),
    ]
    for day, (action, extra) in enumerate(steps, start=4):
        act(acting, world, case_id, action=action, occurred_at=at(f"2025-11-{day:02d}"), **extra)
    before = all_clocks(acting, world, case_id)
    first = next(c for c in before if c.clock == "complaint.decision")
    assert first.status == "met"
    window = next(c for c in before if c.clock == "complaint.review_request_window")
    assert window.status == "window"

    reopened = act(
        acting,
        world,
        case_id,
        user="manager_bj",
        action="reopen",
        reason="投诉人提出新的事实和理由",
        occurred_at=at("2025-11-20", 15),
    )
    changes = {(c["clock"], c["change"]) for c in reopened.data["clocks"]}
    assert changes == {
        ("complaint.decision", "restarted"),
        ("complaint.review_request_window", "cancelled"),
    }
    after = all_clocks(acting, world, case_id)
    decisions = [c for c in after if c.clock == "complaint.decision"]
    assert [c.status for c in decisions] == ["met", "running"]  # the first keeps its record
    new = decisions[1]
    assert new.started_at == at("2025-11-20", 15) and new.last_day == dt.date(2025, 12, 5)
    assert new.history["restarts"][0]["previous_started_at"].startswith("2025-11-03T01:00")
    assert new.history["restarts"][0]["citation"] == "2020-complaints/18"
    # the materials notice belongs to the registration (一次性告知): not owed again
    notices = [c for c in after if c.clock == "complaint.missing_materials_notice"]
    assert [c.status for c in notices] == ["cancelled"]

    # the new decision is answered: a new review window, and a review request is checked on it
    for day, (action, extra) in enumerate(steps[3:5], start=24):
        act(acting, world, case_id, action=action, occurred_at=at(f"2025-11-{day:02d}"), **extra)
    windows = [c for c in all_clocks(acting, world, case_id) if c.clock.endswith("_window")]
    assert [c.status for c in windows] == ["cancelled", "window"]
    assert windows[1].last_day == dt.date(2025, 12, 25)
    act(
        acting,
        world,
        case_id,
        action="request_review",
        reason="对新的处理决定有异议",
        occurred_at=at("2025-12-20"),  # after the old window closed (12-08), within the new one
    )
    assert clock(acting, world, case_id, "complaint.review").status == "running"
