"""What becomes of every clock when a case is decided, paid, closed and re-opened.

保险法 第二十五条's advance payment is met by an advance or by fixing the amount, and cancelled by a
refusal; every case type reaches ``closed`` by every route with no clock left running, each
statutory clock completed by its own transition (``close`` has nothing left to complete); and
re-opening a claim, consultation, service request or whistle-blowing report keeps the first
clocks' outcome and restarts what the rules owe again
(docs/decisions/0006-restarts-reopening-and-state-pauses.md).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from core.api.problems import Problem
from core.cases import flows, lifecycle, services
from core.cases.models import CaseClock, CaseEvent, CaseType
from core.cases.schemas import TransitionIn
from core.db import Database, utcnow
from core.hookspecs import CaseFacts, DeadlineRule, PluginInfo, hookimpl
from core.outbox.models import OutboxEvent
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from tests.cases.conftest import Acting, complaint
from tests.cases.test_lifecycle import drive, path_to, register
from tests.factories import TenantWorld

CN = ZoneInfo("Asia/Shanghai")

WORKED_TYPES = [t for t in CaseType if lifecycle.transitions_of(t)]
"""The types moved through the case API."""


def at(day: str, hour: int = 10) -> dt.datetime:
    """A China time on ``day`` (YYYY-MM-DD)."""
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), tzinfo=CN)


class FirstResponsePolicy:
    """A service policy: first responses to consultations (2 working days) and service requests
    (3 working days), and a first contact on claim reports within 2 hours that no transition
    names (like agency_policy's ``claim.first_contact``)."""

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return PluginInfo(
            version="0.0.1",
            title_zh="首次响应政策",
            title_en="First-response policy",
            description_zh="测试用",
            description_en="for tests",
        )

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        if trigger != "received":
            return []
        clock, amount, unit = {
            "consultation": ("consultation.first_response", 2, "working_days"),
            "service_request": ("service.first_response", 3, "working_days"),
            "claim_report": ("claim.first_contact", 2, "hours"),
        }.get(case.case_type, ("", 0, ""))
        if not clock:
            return []
        return [
            DeadlineRule(
                clock=clock,
                amount=amount,
                unit=unit,  # type: ignore[arg-type]
                citation="policy:first-response/1",
                source="first_response_policy",
                statutory=False,
            )
        ]


@pytest.fixture(scope="module")
def policy_host(database: Database) -> Iterator[PluginHost]:
    host = PluginHost(
        build_registry(
            extra=[("first_response_policy", FirstResponsePolicy())],
            on_by_default=("service_rules_cn", "first_response_policy"),
        ),
        database,
        listen=False,
    )
    yield host
    host.close()


def new_case(
    acting: Acting,
    world: TenantWorld,
    case_type: str,
    plugins: PluginHost | None = None,
    **kwargs: Any,
) -> uuid.UUID:
    if case_type == "service_request":
        kwargs.setdefault("service_kind", "policy_change")
    with acting(world, "agent_bj", plugins=plugins) as ctx:
        return flows.register_case(ctx, complaint(world, case_type=case_type, **kwargs)).id


def act(
    acting: Acting,
    world: TenantWorld,
    case_id: uuid.UUID,
    action: str,
    day: dt.datetime,
    *,
    user: str = "agent_bj",
    plugins: PluginHost | None = None,
    **fields: Any,
) -> CaseEvent:
    """Take ``action`` at ``day``; the transition event."""
    with acting(world, user, plugins=plugins) as ctx:
        case = services.get_case(ctx.session, case_id)
        data = TransitionIn(action=action, occurred_at=day, **fields)
        flows.transition(ctx, case, data, if_match=flows.etag(case))
        events = services.timeline(ctx.session, case_id)
        return next(e for e in reversed(events) if e.kind == "transition")


def clocks(acting: Acting, world: TenantWorld, case_id: uuid.UUID, name: str) -> list[CaseClock]:
    """The clocks called ``name``, oldest first."""
    with acting(world, "agent_bj") as ctx:
        return [c for c in services.clocks_of(ctx.session, case_id) if c.clock == name]


def changes(event: CaseEvent) -> set[tuple[str, str]]:
    return {(c["clock"], c["change"]) for c in event.data["clocks"]}


# -- every type, every route to closed ---------------------------------------------------------

CLOSING_ROUTES = [
    pytest.param(t.case_type, source, id=f"{t.case_type.value}:{source}")
    for case_type in WORKED_TYPES
    for t in lifecycle.transitions_of(case_type)
    if t.target == "closed"
    for source in t.sources
]


@pytest.mark.parametrize(("case_type", "source"), CLOSING_ROUTES)
def test_a_closed_case_has_no_running_clock_and_close_had_nothing_left_over(
    acting: Acting, world: TenantWorld, case_type: CaseType, source: str
) -> None:
    """With the built-in plugins, each statutory clock was completed (or cancelled) by the
    transition that satisfies it; ``close`` finds none still owed."""
    case_id = register(acting, world, case_type)
    close = lifecycle.find(case_type, source, "close")
    assert close is not None
    drive(acting, world, case_id, [*path_to(case_type, source), close])
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        rows = services.clocks_of(ctx.session, case_id)
        closing = [e for e in services.timeline(ctx.session, case_id) if e.action == "close"]
    assert case.state == "closed"
    running = [(c.clock, c.status) for c in rows if c.status in ("running", "paused")]
    assert running == []
    assert not [c for c in rows if c.status == "window" and not c.clock.endswith("_window")]
    assert [c for c in closing[-1].data["clocks"] if c.get("left_open")] == []


def notice(
    acting: Acting,
    world: TenantWorld,
    case_id: uuid.UUID,
    day: dt.datetime,
    plugins: PluginHost | None = None,
) -> CaseEvent:
    """Record a telephone notice to the customer at ``day``; its timeline event."""
    with acting(world, "agent_bj", plugins=plugins) as ctx:
        case = services.get_case(ctx.session, case_id)
        return flows.record_notice(
            ctx,
            case,
            channel="phone",
            content="已致电客户，告知理赔所需材料",
            purpose="first_contact",
            occurred=day,
            if_match=flows.etag(case),
        )


def test_the_first_notice_to_the_customer_meets_a_first_contact_clock(
    acting: Acting, world: TenantWorld, policy_host: PluginHost
) -> None:
    """agency_policy's "contact the claimant within N hours": the first notice recorded is the
    contact, in time or late; later notices change nothing."""
    received = "2025-09-01T10:00:00+08:00"  # due 12:00
    in_time = new_case(acting, world, "claim_report", policy_host, received_at=received)
    first = notice(acting, world, in_time, at("2025-09-01", 11), policy_host)
    assert changes(first) == {("claim.first_contact", "completed")}
    (row,) = clocks(acting, world, in_time, "claim.first_contact")
    assert (row.status, row.completed_at) == ("met", at("2025-09-01", 11))
    again = notice(acting, world, in_time, at("2025-09-02", 11), policy_host)
    assert "clocks" not in again.data
    assert clocks(acting, world, in_time, "claim.first_contact")[0].status == "met"

    late = new_case(acting, world, "claim_report", policy_host, received_at=received)
    notice(acting, world, late, at("2025-09-01", 15), policy_host)
    assert clocks(acting, world, late, "claim.first_contact")[0].status == "breached"


def test_a_transition_that_notifies_the_customer_is_the_first_contact(
    acting: Acting, world: TenantWorld, policy_host: PluginHost
) -> None:
    case_id = new_case(
        acting, world, "claim_report", policy_host, received_at="2025-09-01T10:00:00+08:00"
    )
    asked = act(
        acting,
        world,
        case_id,
        "request_materials",
        at("2025-09-01", 11),
        plugins=policy_host,
        missing_materials=["病历"],
        notice_channel="sms",
    )
    assert ("claim.first_contact", "completed") in changes(asked)
    assert clocks(acting, world, case_id, "claim.first_contact")[0].status == "met"


def test_a_first_contact_never_made_is_completed_as_breached_when_the_case_closes(
    acting: Acting, world: TenantWorld, policy_host: PluginHost
) -> None:
    case_id = new_case(
        acting, world, "claim_report", policy_host, received_at="2025-09-01T10:00:00+08:00"
    )
    for action, day, fields in (
        ("begin_review", "2025-09-01", {}),
        ("agree", "2025-09-02", {"decision": "属于保险责任，赔付 5,000 元"}),
        ("pay", "2025-09-03", {}),
    ):
        act(acting, world, case_id, action, at(day, 15), plugins=policy_host, **fields)
    assert clocks(acting, world, case_id, "claim.first_contact")[0].status == "running"
    closed = act(acting, world, case_id, "close", at("2025-09-04"), plugins=policy_host)
    (left,) = [c for c in closed.data["clocks"] if c.get("left_open")]
    assert (left["clock"], left["change"], left["status"]) == (
        "claim.first_contact",
        "completed",
        "breached",  # due 2 hours after 09-01 10:00, no notice recorded a contact
    )
    assert clocks(acting, world, case_id, "claim.first_contact")[0].status == "breached"


# -- 保险法 第二十五条: the advance payment ------------------------------------------------------


def test_an_advance_paid_within_60_days_meets_the_advance_clock_and_the_agreement_keeps_it(
    acting: Acting, world: TenantWorld
) -> None:
    """Received Mon 2025-09-01: the 60 days end on Fri 10-31 (the first day is not counted)."""
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    (advance,) = clocks(acting, world, case_id, "claim.advance_payment")
    assert (advance.last_day, advance.citation) == (dt.date(2025, 10, 31), "insurance-law/25")
    act(acting, world, case_id, "begin_review", at("2025-09-02"))
    paid = act(
        acting,
        world,
        case_id,
        "pay_advance",
        at("2025-10-30"),
        reason="先予支付已确定的医疗费",
        amount=Decimal("3600.00"),
    )
    assert changes(paid) == {("claim.advance_payment", "completed")}
    agreed = act(acting, world, case_id, "agree", at("2025-11-10"), decision="核定赔付差额")
    assert ("claim.advance_payment", "completed") not in changes(agreed)
    assert [c.status for c in clocks(acting, world, case_id, "claim.advance_payment")] == ["met"]
    assert clocks(acting, world, case_id, "claim.decision")[0].status == "breached"


@pytest.mark.parametrize(("day", "status"), [("2025-10-31", "met"), ("2025-11-01", "breached")])
def test_fixing_the_amount_completes_the_advance_clock_by_when(
    acting: Acting, world: TenantWorld, day: str, status: str
) -> None:
    """``agree`` fixes the amount: no advance is owed from then on; met on the 60th day, breached
    the day after (nothing was advanced in the meantime)."""
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    act(acting, world, case_id, "begin_review", at("2025-09-02"))
    act(acting, world, case_id, "agree", at(day, 23), decision="同意赔付")
    (advance,) = clocks(acting, world, case_id, "claim.advance_payment")
    assert advance.status == status and advance.completed_at == at(day, 23)
    act(acting, world, case_id, "pay", at("2025-11-05"))
    assert clocks(acting, world, case_id, "claim.payment")[0].status == "met"


def test_a_refusal_cancels_the_advance_clock(acting: Acting, world: TenantWorld) -> None:
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    act(acting, world, case_id, "begin_review", at("2025-09-02"))
    refused = act(
        acting, world, case_id, "refuse", at("2025-09-03"), decision="拒赔", reason="免责"
    )
    assert ("claim.advance_payment", "cancelled") in changes(refused)
    assert clocks(acting, world, case_id, "claim.refusal_notice")[0].status == "running"


def test_an_advance_is_refused_once_the_amount_is_agreed(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    act(acting, world, case_id, "begin_review", at("2025-09-02"))
    act(acting, world, case_id, "agree", at("2025-09-03"), decision="同意赔付")
    with pytest.raises(Problem) as refused:
        act(
            acting,
            world,
            case_id,
            "pay_advance",
            at("2025-09-04"),
            reason="先予支付",
            amount=Decimal("100"),
        )
    assert refused.value.status == 409


def test_the_amounts_advanced_agreed_and_paid_are_kept_in_the_timeline_and_the_messages(
    acting: Acting, world: TenantWorld
) -> None:
    """保险法 第二十五条: what was advanced, and later agreed and paid, is on the file exactly
    (yuan and fen, as given) and in the ``case.transitioned`` messages integrators receive."""
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    act(acting, world, case_id, "begin_review", at("2025-09-02"))
    steps = [
        ("pay_advance", "2025-09-10", {"reason": "先予支付医疗费", "amount": Decimal("3600")}),
        ("agree", "2025-09-20", {"decision": "核定赔付", "amount": Decimal("12800.5")}),
        ("pay", "2025-09-25", {"amount": Decimal("9200.50")}),
    ]
    recorded = [act(acting, world, case_id, a, at(d), **f).data.get("amount") for a, d, f in steps]
    assert recorded == ["3600.00", "12800.50", "9200.50"]
    with acting(world, "agent_bj") as ctx:
        messages = ctx.session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.event_type == "case.transitioned")
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        ).all()
    mine = [m.payload for m in messages if m.payload["case_id"] == str(case_id)]
    assert [(p["action"], p.get("amount")) for p in mine] == [
        ("begin_review", None),
        ("pay_advance", "3600.00"),
        ("agree", "12800.50"),
        ("pay", "9200.50"),
    ]


@pytest.mark.parametrize(
    ("action", "fields", "slug"),
    [
        ("pay_advance", {"reason": "先予支付"}, "missing-fields"),  # an advance has an amount
        ("pay_advance", {"reason": "先予支付", "amount": Decimal("10.005")}, "invalid-amount"),
        ("pay_advance", {"reason": "先予支付", "amount": Decimal("0")}, "invalid-amount"),
        ("pay_advance", {"reason": "先予支付", "amount": Decimal("-5")}, "invalid-amount"),
        ("pay_advance", {"reason": "先予支付", "amount": Decimal("NaN")}, "invalid-amount"),
        ("pay_advance", {"reason": "先予支付", "amount": Decimal("1E+13")}, "invalid-amount"),
        (
            "request_materials",
            {"amount": Decimal("5"), "missing_materials": ["发票"], "notice_channel": "letter"},
            "unexpected-fields",
        ),
    ],
)
def test_an_amount_is_refused_where_it_is_missing_malformed_or_not_taken(
    acting: Acting, world: TenantWorld, action: str, fields: dict[str, Any], slug: str
) -> None:
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    with pytest.raises(Problem) as refused:
        act(acting, world, case_id, action, at("2025-09-02"), **fields)
    assert (refused.value.status, refused.value.slug) == (422, slug)
    assert [c.status for c in clocks(acting, world, case_id, "claim.advance_payment")] == [
        "running"
    ]


# -- re-opening ---------------------------------------------------------------------------------


def test_a_reopened_claim_is_decided_again_with_new_decision_and_advance_periods(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_case(acting, world, "claim_report", received_at="2025-09-01T10:00:00+08:00")
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("begin_review", "2025-09-02", {}),
        ("agree", "2025-09-03", {"decision": "同意赔付"}),
        ("pay", "2025-09-04", {}),
        ("close", "2025-09-05", {}),
    ]
    for action, day, fields in steps:
        act(acting, world, case_id, action, at(day), **fields)
    reopened = act(
        acting,
        world,
        case_id,
        "reopen",
        at("2025-11-20", 15),
        user="manager_bj",
        reason="被保险人提交了新的费用单据",
    )
    assert changes(reopened) == {
        ("claim.decision", "restarted"),
        ("claim.advance_payment", "restarted"),
    }
    decisions = clocks(acting, world, case_id, "claim.decision")
    advances = clocks(acting, world, case_id, "claim.advance_payment")
    assert [c.status for c in decisions] == ["met", "running"]  # the first keeps its record
    assert [c.status for c in advances] == ["met", "running"]
    # Thu 11-20: five working days end Thu 11-27; sixty days end Mon 2026-01-19.
    assert decisions[1].last_day == dt.date(2025, 11, 27)
    assert advances[1].last_day == dt.date(2026, 1, 19)
    record = advances[1].history["restarts"][0]
    assert record["citation"] == "insurance-law/23"
    assert record["previous_started_at"].startswith("2025-09-01T02:00")
    assert clocks(acting, world, case_id, "claim.payment")[0].status == "met"

    act(acting, world, case_id, "agree", at("2025-11-25"), decision="同意补充赔付")
    assert [c.status for c in clocks(acting, world, case_id, "claim.advance_payment")] == [
        "met",
        "met",
    ]
    payments = clocks(acting, world, case_id, "claim.payment")
    assert [c.status for c in payments] == ["met", "running"]


@pytest.mark.parametrize(
    ("case_type", "route", "clock", "last_day"),
    [
        (
            "consultation",
            [("answer", {"answer": "已解答", "notice_channel": "sms"})],
            "consultation.first_response",
            dt.date(2025, 11, 24),  # Fri 11-21, Mon 11-24: 2 working days
        ),
        (
            "service_request",
            [
                ("accept", {"plan": "三个工作日内办理"}),
                ("start", {}),
                ("resolve", {"answer": "已办理", "notice_channel": "sms"}),
            ],
            "service.first_response",
            dt.date(2025, 11, 25),  # 3 working days
        ),
    ],
)
def test_a_reopened_request_gets_a_new_first_response_period_only(
    acting: Acting,
    world: TenantWorld,
    policy_host: PluginHost,
    case_type: str,
    route: list[tuple[str, dict[str, Any]]],
    clock: str,
    last_day: dt.date,
) -> None:
    """The customer asks again: the policy's first-response period counts afresh from the
    re-opening; the 保全 periods (from the application and the approval) are not owed again."""
    case_id = new_case(
        acting, world, case_type, policy_host, received_at="2025-09-01T10:00:00+08:00"
    )
    for day, (action, fields) in enumerate([*route, ("close", {})], start=2):
        act(acting, world, case_id, action, at(f"2025-09-{day:02d}"), plugins=policy_host, **fields)
    reopened = act(
        acting,
        world,
        case_id,
        "reopen",
        at("2025-11-20", 15),
        user="manager_bj",
        plugins=policy_host,
        reason="客户再次来电",
    )
    assert changes(reopened) == {(clock, "restarted")}
    rows = clocks(acting, world, case_id, clock)
    assert [c.status for c in rows] == ["met", "running"]
    assert rows[1].started_at == at("2025-11-20", 15)
    assert rows[1].last_day == last_day
    previous = rows[1].history["restarts"][0]["previous_due_at"]
    assert dt.datetime.fromisoformat(previous) == rows[0].due_at
    # answering again completes it
    answer = route[-1]
    act(acting, world, case_id, answer[0], at("2025-11-21"), plugins=policy_host, **answer[1])
    assert clocks(acting, world, case_id, clock)[1].status == "met"


def test_a_reopened_whistleblowing_report_and_appeal(acting: Acting, world: TenantWorld) -> None:
    """A report has no period to restart; an appeal is complaint-like: a new decision period."""
    report = register(acting, world, CaseType.WHISTLEBLOWING)
    drive(acting, world, report, path_to(CaseType.WHISTLEBLOWING, "closed"))
    reopened = act(acting, world, report, "reopen", utcnow(), user="manager_bj", reason="新的线索")
    assert reopened.data["clocks"] == []

    appeal = register(acting, world, CaseType.APPEAL)
    drive(acting, world, appeal, path_to(CaseType.APPEAL, "closed"))
    reopened = act(acting, world, appeal, "reopen", utcnow(), user="manager_bj", reason="新的理由")
    assert ("complaint.decision", "restarted") in changes(reopened)
    first, new = clocks(acting, world, appeal, "complaint.decision")
    assert first.status in ("met", "cancelled") and new.status == "running"
    assert new.history["restarts"][0]["citation"] == "2020-complaints/18"
