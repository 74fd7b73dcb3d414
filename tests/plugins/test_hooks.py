"""What the hooks do: the built-in policies through the flows, with the statute as the outer
bound, and failure isolation. Every hook has a ``test_hook_<name>...`` test here or in
``test_registry.py`` (``test_docs.py`` fails otherwise)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from core.api.problems import Problem
from core.db import Database
from core.deadlines import ClockState, DeadlineRule, start_clock
from core.hookspecs import CaseFacts, Notification, Period, PolicyFacts
from core.orgs.services import get_unit
from core.plugins import flows, services
from core.plugins.flows import PluginFailed
from core.plugins.host import PluginHost
from core.plugins.registry import PluginRegistry, build_registry
from core.plugins.services import Actor
from plugins import webhook
from plugins.statutory_cn import RULESETS, RuleSet, StatutoryBaseline, rules_2020
from tests.factories import TenantWorld, make_tenant
from tests.plugins.conftest import CALENDAR, SHANGHAI, complaint, unit_facts
from tests.plugins.testing_plugins import Liar, Looser, Raiser, Reminder, registry_with

ADMIN = Actor("person:admin")
MARCH_2 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI)  # a Monday


def at(day: str) -> dt.datetime:
    """Midnight (the exclusive due) at the start of ``day``, Shanghai time."""
    return dt.datetime.fromisoformat(day).replace(tzinfo=SHANGHAI)


def configure(
    db: Database,
    world: TenantWorld,
    registry: PluginRegistry,
    plugin: str,
    key: str,
    settings: dict[str, object] | None = None,
    enabled: bool | None = True,
) -> None:
    """Enable ``plugin`` at a unit (and set its settings there) through the services."""
    with db.tenant_transaction(world.id) as s:
        services.apply_config(
            s,
            registry,
            plugin=plugin,
            unit=get_unit(s, world.units[key].id),
            enabled=enabled,
            settings=settings or {},
            actor=ADMIN,
        )


def clocks(
    host: PluginHost, world: TenantWorld, case: object, trigger: str = "received", key: str = "bj"
) -> dict[str, tuple[dt.datetime, str, str]]:
    """``clock -> (due, source, citation)`` for a case at a unit of ``world``."""
    tp = host.for_unit(world.id, world.units[key].path)
    cal = flows.unit_calendar(tp, unit_facts(world, key), CALENDAR)
    plan = flows.compute_deadlines(tp, case, cal, trigger=trigger)  # type: ignore[arg-type]
    return {c.clock: (c.due, c.source, c.citation) for c in plan.clocks}


# -- deadline rules -------------------------------------------------------------------------------


def test_hook_deadline_rules_two_tenants_with_different_plugins_get_different_deadlines_and_quotas(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    plain, agency = make_tenant(database, "plain"), make_tenant(database, "agency")
    configure(database, agency, registry, "agency_policy", "group")
    configure(
        database,
        agency,
        registry,
        "branch_policy",
        "bj",
        {
            "visit_quotas": [
                {
                    "kind": "periodic",
                    "population": "customers",
                    "share": 0.1,
                    "minimum_per_month": 20,
                }
            ],
        },
    )
    case_a, case_b = complaint(plain), complaint(agency)

    a, b = clocks(host, plain, case_a), clocks(host, agency, case_b)
    assert a["complaint.decision"] == (at("2026-03-18"), "statutory_cn", "2020-complaints/18")
    assert b["complaint.decision"][:2] == (at("2026-03-13"), "agency_policy")  # 10 days
    # the company rule is on by default for both: 5 working days for missing materials
    assert a["complaint.missing_materials_notice"][:2] == (at("2026-03-10"), "service_rules_cn")
    assert b["complaint.missing_materials_notice"] == a["complaint.missing_materials_notice"]

    march = Period(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 31))
    qa = flows.visit_quotas(
        host.for_unit(plain.id, plain.units["bj"].path), unit_facts(plain, "bj"), march
    )
    qb = flows.visit_quotas(
        host.for_unit(agency.id, agency.units["bj"].path), unit_facts(agency, "bj"), march
    )
    assert [(q.kind, q.share) for q in qa] == [("after_complaint", 1.0)]
    assert {(q.kind, q.population, q.share, q.minimum) for q in qb} == {
        ("after_claim", "paid_claims", 1.0, 0),
        ("after_complaint", "closed_complaints", 1.0, 0),
        ("after_sale", "new_policies", 1.0, 0),
        ("periodic", "customers", 0.1, 20),
        ("satisfaction_survey", "closed_cases", 1.0, 0),
    }


def test_hook_deadline_rules_a_looser_policy_never_loosens_the_statute(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    registry = registry_with(looser=Looser())
    host = make_host(registry)
    world = make_tenant(database, "loose")
    configure(database, world, registry, "looser", "group")
    configure(database, world, registry, "group_policy", "group", {"complaint_decision_days": 25})
    tp = host.for_unit(world.id, world.units["bj"].path)
    with capture_logs() as logs:
        plan = flows.compute_deadlines(tp, complaint(world), CALENDAR)
    decision = {c.clock: c for c in plan.clocks}["complaint.decision"]
    assert (decision.due, decision.source) == (at("2026-03-18"), "statutory_cn")
    assert sorted(w.source for w in plan.warnings) == ["group_policy", "looser"]
    assert any("later than the statutory 15 natural_days" in m for m in plan.messages)
    assert {e["plugin"] for e in logs if e["event"] == "plugin_rule_ignored"} == {
        "group_policy",
        "looser",
    }


def test_hook_deadline_rules_a_tighter_group_rule_wins_and_a_branch_tightens_further(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "tight")
    configure(database, world, registry, "group_policy", "group", {"complaint_decision_days": 12})
    configure(
        database,
        world,
        registry,
        "group_policy",
        "bj",
        {"complaint_decision_days": 7},
        enabled=None,
    )
    assert clocks(host, world, complaint(world, "sh"), key="sh")["complaint.decision"][:2] == (
        at("2026-03-17"),
        "group_policy",
    )  # 12 days end on Saturday the 14th: moved to Monday
    assert clocks(host, world, complaint(world, "bj"))["complaint.decision"][:2] == (
        at("2026-03-10"),
        "group_policy",
    )


def test_hook_reminder_fraction_policies_set_it_and_the_earliest_reminder_wins(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    registry = registry_with(reminder=Reminder(0.7, clock="complaint.decision"))
    host = make_host(registry)
    world = make_tenant(database, "remind")

    def fractions(key: str = "bj") -> dict[str, float | None]:
        tp = host.for_unit(world.id, world.units[key].path)
        plan = flows.compute_deadlines(tp, complaint(world, key), CALENDAR)
        return {c.clock: c.reminder_fraction for c in plan.clocks}

    # Nobody answers: None, the platform default (0.8) applies.
    assert set(fractions().values()) == {None}
    configure(database, world, registry, "reminder", "group")
    assert fractions() == {"complaint.decision": 0.7, "complaint.missing_materials_notice": None}
    configure(database, world, registry, "group_policy", "group", {"reminder_fraction": 0.75})
    configure(database, world, registry, "branch_policy", "bj", {"reminder_fraction": 0.5})
    # Several answers: the smallest share, the earliest reminder, wins per clock.
    assert fractions("bj") == {
        "complaint.decision": 0.5,
        "complaint.missing_materials_notice": 0.5,
    }
    assert fractions("sh") == {
        "complaint.decision": 0.7,
        "complaint.missing_materials_notice": 0.75,
    }
    with pytest.raises(Problem) as refused:  # the schema keeps settings within (0, 1)
        configure(database, world, registry, "group_policy", "group", {"reminder_fraction": 0})
    assert refused.value.status == 422


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, "0.5", True])
def test_a_reminder_fraction_outside_0_and_1_fails_naming_the_plugin(
    database: Database, make_host: Callable[..., PluginHost], value: object
) -> None:
    registry = registry_with(reminder=Reminder(value))
    host = make_host(registry)
    world = make_tenant(database, "remind-bad")
    configure(database, world, registry, "reminder", "group")
    with pytest.raises(PluginFailed) as exc:
        flows.compute_deadlines(
            host.for_unit(world.id, world.units["bj"].path), complaint(world), CALENDAR
        )
    assert (exc.value.plugin, exc.value.hook) == ("reminder", "insurdesk_reminder_fraction")


LIFE = PolicyFacts(
    line_of_business="life",
    term_months=240,
    start_date=dt.date(2026, 1, 5),
    cooling_off_end=dt.date(2026, 1, 20),
)


def test_hook_deadline_rules_statutory_claims_policy_service_and_callbacks(
    world: TenantWorld, host: PluginHost
) -> None:
    life_claim = complaint(world, case_type="claim_report", policy=LIFE)
    got = clocks(host, world, life_claim)
    assert got["claim.decision"] == (at("2026-03-10"), "statutory_cn", "2010-life-service/23")
    assert got["claim.advance_payment"][2] == "insurance-law/25"
    motor = PolicyFacts(line_of_business="motor", term_months=12)
    got = clocks(host, world, complaint(world, case_type="claim_report", policy=motor))
    assert got["claim.decision"] == (at("2026-04-02"), "statutory_cn", "insurance-law/23")
    assert clocks(host, world, life_claim, "claim.agreed")["claim.payment"][2] == (
        "insurance-law/23"
    )
    assert clocks(host, world, life_claim, "claim.refused")["claim.refusal_notice"][0] == at(
        "2026-03-06"
    )

    change = complaint(
        world, case_type="service_request", service_kind="policy_change", policy=LIFE
    )
    got = clocks(host, world, change)
    assert got["policy_service.acceptance"][:1] == (at("2026-03-05"),)  # 2 working days
    assert got["policy_service.missing_materials"][2] == "2010-life-service/19"
    group = PolicyFacts(line_of_business="life", term_months=12, group=True)
    assert "policy_service.acceptance" not in clocks(
        host,
        world,
        complaint(world, case_type="service_request", service_kind="policy_change", policy=group),
    )

    issued = complaint(
        world,
        case_type="service_request",
        policy=LIFE,
        received=dt.datetime(2026, 1, 5, 9, 0, tzinfo=SHANGHAI),
    )
    assert clocks(host, world, issued, "policy.issued")["callback.new_policy"] == (
        at("2026-01-21"),
        "statutory_cn",
        "2010-life-service/15",
    )
    decided = clocks(host, world, complaint(world), "complaint.decided")
    assert decided["complaint.review_request_window"][2] == "2020-complaints/20"
    assert clocks(host, world, complaint(world), "review.requested")["complaint.review"][0] == (
        at("2026-04-02")
    )


def test_hook_deadline_rules_statutory_rules_are_chosen_by_the_date_a_case_was_received(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    def amended(case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        return [
            dataclasses.replace(r, amount=10, citation="2027-complaints/18")
            if r.clock == "complaint.decision"
            else r
            for r in rules_2020(case, trigger)
        ]

    baseline = StatutoryBaseline([*RULESETS, RuleSet(dt.date(2027, 1, 1), "amended", amended)])
    registry = build_registry(
        builtin_package=None, entry_points=False, extra=[("statutory_cn", baseline)]
    )
    host = make_host(registry)
    world = make_tenant(database, "amend")
    old = complaint(world, received=dt.datetime(2026, 12, 31, 23, 30, tzinfo=SHANGHAI))
    new = complaint(world, received=dt.datetime(2027, 1, 1, 0, 30, tzinfo=SHANGHAI))
    assert clocks(host, world, old)["complaint.decision"][2] == "2020-complaints/18"
    assert clocks(host, world, new)["complaint.decision"][2] == "2027-complaints/18"
    # 23:30 UTC on Dec 31 is already Jan 1 in China: the amended rules apply
    utc = complaint(world, received=dt.datetime(2026, 12, 31, 17, 30, tzinfo=dt.UTC))
    assert clocks(host, world, utc)["complaint.decision"][2] == "2027-complaints/18"


# -- calendar -------------------------------------------------------------------------------------


def test_hook_calendar_adjustments_a_branch_closure_moves_the_deadline(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "closed")
    configure(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {
            "extra_closed_days": ["2026-03-17"],
            "working_hours": {"open": "08:30", "close": "17:30"},
        },
    )
    assert clocks(host, world, complaint(world))["complaint.decision"][0] == at("2026-03-19")
    assert clocks(host, world, complaint(world, "sh"), key="sh")["complaint.decision"][0] == at(
        "2026-03-18"
    )
    tp = host.for_unit(world.id, world.units["bj"].path)
    calendar = flows.unit_calendar(tp, unit_facts(world, "bj"), CALENDAR)
    assert calendar.business_hours == (dt.time(8, 30), dt.time(17, 30))
    assert not calendar.is_working_day(dt.date(2026, 3, 17))
    assert flows.unit_calendar(tp, unit_facts(world, "bj"), CALENDAR) is calendar  # memoized


# -- visits and inspections -----------------------------------------------------------------------


def test_hook_visit_quotas_monthly_minimum_scales_and_the_most_demanding_share_wins(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "quota")
    configure(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {
            "visit_quotas": [
                {
                    "kind": "after_complaint",
                    "population": "closed_complaints",
                    "share": 0.5,
                    "minimum_per_month": 4,
                    "sampling": "risk_weighted",
                },
                {
                    "kind": "new_policy",
                    "population": "new_policies",
                    "share": 0.3,
                    "minimum_per_month": 10,
                },
            ]
        },
    )
    quarter = Period(start=dt.date(2026, 1, 1), end=dt.date(2026, 3, 31), label="2026Q1")
    quotas = {
        q.kind: q
        for q in flows.visit_quotas(
            host.for_unit(world.id, world.units["bj"].path), unit_facts(world, "bj"), quarter
        )
    }
    merged = quotas["after_complaint"]
    assert (merged.share, merged.minimum, merged.sampling) == (1.0, 12, "all")
    # the test factory enables group_policy at the group: its mandatory callback counts too
    assert merged.source == "service_rules_cn+branch_policy+group_policy"
    assert (quotas["new_policy"].minimum, quotas["new_policy"].sampling) == (30, "random")


def test_hook_inspection_rubric_comes_from_the_seed_rules(
    world: TenantWorld, host: PluginHost
) -> None:
    plan = flows.inspection_plan(
        host.for_unit(world.id, world.units["bj"].path), unit_facts(world, "bj")
    )
    assert [i.key for i in plan.rubric] == [
        "courtesy",
        "knowledge",
        "timeliness",
        "follow_up",
        "information_security",
        "technical_support",
    ]
    assert sum(i.max_score for i in plan.rubric) == 100
    assert {i.source for i in plan.rubric} == {"service_rules_cn"}


def test_hook_inspection_schedule_is_never_less_often_than_every_half_year(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    registry = registry_with(looser=Looser())
    host = make_host(registry)
    world = make_tenant(database, "inspect")
    configure(database, world, registry, "looser", "group")
    configure(
        database,
        world,
        registry,
        "service_rules_cn",
        "bj",
        {"inspection_interval_months": 3},
        enabled=None,
    )
    sh = flows.inspection_plan(
        host.for_unit(world.id, world.units["sh"].path), unit_facts(world, "sh")
    )
    assert (sh.interval_months, sh.interval_source) == (6, "service_rules_cn")
    assert sh.warnings and "every 12 months" in sh.warnings[0]
    bj = flows.inspection_plan(
        host.for_unit(world.id, world.units["bj"].path), unit_facts(world, "bj")
    )
    assert (bj.interval_months, bj.interval_source) == (3, "service_rules_cn")
    configure(database, world, registry, "service_rules_cn", "group", enabled=False)
    alone = flows.inspection_plan(
        host.for_unit(world.id, world.units["sh"].path), unit_facts(world, "sh")
    )
    assert alone.interval_months == 6 and alone.rubric == []


# -- lifecycle ------------------------------------------------------------------------------------


def test_hook_case_created_asks_for_an_adhoc_inspection_and_a_regulator_report(
    world: TenantWorld, host: PluginHost
) -> None:
    tp = host.for_unit(world.id, world.units["bj"].path)
    follow = flows.follow_ups_on_created(tp, complaint(world, channel="regulator"), CALENDAR)
    assert [(f.kind, f.sources) for f in follow] == [
        ("adhoc_inspection", ("service_rules_cn",)),
        ("regulator_report", ("service_rules_cn",)),
    ]
    consultation = complaint(world, case_type="consultation")
    assert flows.follow_ups_on_created(tp, consultation, CALENDAR) == []


def test_hook_case_transitioned_callbacks_combine_to_the_earliest_due(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "callback")
    configure(database, world, registry, "group_policy", "group", {"complaint_callback_days": 2})
    configure(database, world, registry, "agency_policy", "bj")
    tp = host.for_unit(world.id, world.units["bj"].path)
    closed_at = dt.datetime(2026, 3, 6, 15, 0, tzinfo=SHANGHAI)  # a Friday
    follow = {
        f.kind: f
        for f in flows.follow_ups_on_transition(
            tp, complaint(world, state="decided"), "decided", "closed", closed_at, CALENDAR
        )
    }
    callback = follow["callback_visit"]
    assert callback.sources == ("service_rules_cn", "group_policy")
    # group: 2 natural days, the last a Sunday, moved to Monday the 9th (before 5 working days)
    assert callback.due == at("2026-03-10")
    assert callback.rule is not None and callback.rule.source == "group_policy"
    assert follow["satisfaction_survey"].due == at("2026-03-14")
    assert (
        flows.follow_ups_on_transition(
            tp, complaint(world), "registered", "accepted", closed_at, CALENDAR
        )
        == []
    )


def _clock() -> ClockState:
    """A running complaint-decision clock started on March 2."""
    return start_clock(
        DeadlineRule(
            clock="complaint.decision",
            amount=15,
            unit="natural_days",
            citation="2020-complaints/18",
            source="statutory_cn",
            statutory=True,
        ),
        MARCH_2,
        CALENDAR,
    )


def test_hook_deadline_approached_tells_the_branch_contacts(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "near")
    configure(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {"escalation_contacts": ["bj-lead@example.com"]},
    )
    configure(
        database,
        world,
        registry,
        "group_policy",
        "group",
        {"escalation": {"division": "集团客服处", "email": "cs@group.example.com"}},
    )
    tp = host.for_unit(world.id, world.units["bj"].path)
    now = at("2026-03-16")
    near = flows.follow_ups_on_deadline(
        tp, complaint(world), _clock(), now, CALENDAR, breached=False
    )
    assert [(f.kind, f.recipients, f.sources) for f in near] == [
        ("escalation", ("bj-lead@example.com",), ("branch_policy",))
    ]


def test_hook_deadline_breached_escalates_to_the_group_division_and_the_branch(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "breach")
    configure(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {"escalation_contacts": ["bj-lead@example.com"]},
    )
    configure(
        database,
        world,
        registry,
        "group_policy",
        "group",
        {"escalation": {"division": "集团客服处", "email": "cs@group.example.com"}},
    )
    tp = host.for_unit(world.id, world.units["bj"].path)
    breached = flows.follow_ups_on_deadline(
        tp, complaint(world), _clock(), at("2026-03-19"), CALENDAR, breached=True
    )
    assert len(breached) == 1
    assert breached[0].recipients == ("bj-lead@example.com", "cs@group.example.com")
    assert breached[0].sources == ("branch_policy", "group_policy")
    assert any("集团客服处" in n for n in breached[0].notes)


# -- notification channels ------------------------------------------------------------------------


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_hook_notification_channels_email_and_signed_webhook(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "channels")
    configure(
        database,
        world,
        registry,
        "email_smtp",
        "group",
        {
            "host": "smtp.example.com",
            "from_address": "service@insurer.example.com",
            "password": "s3cret",
        },
    )
    configure(
        database,
        world,
        registry,
        "webhook",
        "group",
        {"url": "https://hooks.example.com/insurdesk", "secret": SECRET, "events": ["deadline.*"]},
    )
    channels = flows.notification_channels(host.for_unit(world.id, world.units["bj"].path))
    assert sorted(channels) == ["email", "webhook"]
    message = Notification(
        id="msg_01",
        tenant_id=world.id,
        event="deadline.breached",
        subject="投诉处理已超时",
        body="案件 C-2026-000001 已超过法定时限。",
        recipients=("lead@example.com", "13800138000"),
        created_at=dt.datetime(2026, 3, 18, 1, 0, tzinfo=dt.UTC),
    )
    mails = channels["email"].build(message)
    assert [m.destination for m in mails] == ["mailto:lead@example.com"]
    assert b"Subject: =?utf-8?" in mails[0].body and b"s3cret" not in mails[0].body

    (hook_msg,) = channels["webhook"].build(message)
    assert hook_msg.headers["webhook-id"] == "msg_01"
    now = message.created_at.timestamp()
    assert webhook.verify(SECRET, hook_msg.headers, hook_msg.body, now=now)
    assert not webhook.verify(SECRET, hook_msg.headers, hook_msg.body + b" ", now=now)
    assert not webhook.verify(SECRET, hook_msg.headers, hook_msg.body, now=now + 3600)
    other_event = Notification(
        id="m2", tenant_id=world.id, event="case.created", subject="s", body="b"
    )
    assert channels["webhook"].build(other_event) == []


def test_hook_notification_channels_a_duplicate_channel_name_fails_naming_the_plugin(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    import plugins.email_smtp as email_module

    class Copycat:
        insurdesk_plugin_info = staticmethod(Raiser().insurdesk_plugin_info)

        @staticmethod
        @email_module.hookimpl
        def insurdesk_notification_channels(settings: object) -> list[object]:
            return [email_module.EmailChannel({"from_name": "x", "from_address": "a@b.c"})]

    registry = registry_with(other_mail=Copycat())
    host = make_host(registry)
    world = make_tenant(database, "dupe")
    configure(
        database,
        world,
        registry,
        "email_smtp",
        "group",
        {"host": "smtp.example.com", "from_address": "service@insurer.example.com"},
    )
    configure(database, world, registry, "other_mail", "group")
    with pytest.raises(PluginFailed) as exc:
        flows.notification_channels(host.for_unit(world.id, world.units["bj"].path))
    assert exc.value.plugin == "other_mail"  # the later of the two in calling order
    assert "already offered by plugin 'email_smtp'" in exc.value.detail


# -- failure isolation ----------------------------------------------------------------------------


def test_a_raising_plugin_is_a_clear_problem_and_nothing_is_written(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    from core.cases.models import Case

    registry = registry_with(raiser=Raiser())
    host = make_host(registry)
    world = make_tenant(database, "raise")
    configure(database, world, registry, "raiser", "company")
    tp = host.for_unit(world.id, world.units["bj"].path)
    with (
        capture_logs() as logs,
        pytest.raises(PluginFailed) as exc,
        database.tenant_transaction(world.id) as s,
    ):
        plan = flows.plan_case_opening(tp, complaint(world), CALENDAR)
        s.add(
            Case(
                number="C-1",
                type="complaint",
                channel="hotline",
                subject="never written",
                unit_id=world.units["bj"].id,
                received_at=MARCH_2,
            )
        )
        s.flush()
        assert plan  # not reached
    problem = exc.value
    assert (problem.status, problem.slug, problem.plugin, problem.hook) == (
        502,
        "plugin-failed",
        "raiser",
        "insurdesk_deadline_rules",
    )
    assert "the policy database is down" in problem.detail
    assert any(e["event"] == "plugin_failed" and e["plugin"] == "raiser" for e in logs)
    with database.tenant_session(world.id) as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.number == "C-1")) == 0
    # a unit where it is not enabled is unaffected
    ok = flows.plan_case_opening(
        host.for_unit(world.id, world.units["group"].path), complaint(world, "group"), CALENDAR
    )
    assert "raiser" not in ok.plugins


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("string", "it returned str, not a list"),
        ("dicts", "it returned a dict where DeadlineRule belongs"),
        ("statutory", "claims to be statutory"),
    ],
)
def test_a_plugin_returning_something_invalid_fails_naming_it(
    database: Database, make_host: Callable[..., PluginHost], mode: str, reason: str
) -> None:
    registry = registry_with(liar=Liar(mode))
    host = make_host(registry)
    world = make_tenant(database, f"liar-{mode}")
    configure(database, world, registry, "liar", "group")
    with pytest.raises(PluginFailed) as exc:
        flows.compute_deadlines(
            host.for_unit(world.id, world.units["bj"].path), complaint(world), CALENDAR
        )
    assert exc.value.plugin == "liar" and reason in exc.value.detail
