"""Deadline clocks through the case flows: the integration of the engine, the plugins and the
timeline (the counting itself is tested in tests/deadlines)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.api.problems import Problem
from core.auth.guards import load_access
from core.auth.principal import Principal
from core.cases import flows, services
from core.cases.flows import make_context
from core.cases.models import Case, CaseClock
from core.cases.schemas import TransitionIn
from core.cli import build_cli
from core.db import Database
from core.hookspecs import PluginInfo, hookimpl
from core.migrate import upgrade
from core.people.permissions import ALL_PERMISSIONS
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from tests.cases.conftest import DATA, Acting, add_case_people, complaint
from tests.factories import TenantWorld, make_tenant

CN = ZoneInfo("Asia/Shanghai")


def clocks(acting: Acting, world: TenantWorld, case_id: uuid.UUID) -> dict[str, CaseClock]:
    with acting(world, "agent_bj") as ctx:
        return {c.clock: c for c in services.clocks_of(ctx.session, case_id)}


def act(
    acting: Acting, world: TenantWorld, case_id: uuid.UUID, user: str = "agent_bj", **fields: Any
) -> Case:
    with acting(world, user, **fields.pop("_ctx", {})) as ctx:
        case = services.get_case(ctx.session, case_id)
        return flows.transition(ctx, case, TransitionIn(**fields), if_match=flows.etag(case))


def new_complaint(acting: Acting, world: TenantWorld, **kwargs: Any) -> uuid.UUID:
    with acting(world, "agent_bj", **kwargs.pop("_ctx", {})) as ctx:
        return flows.register_case(ctx, complaint(world, **kwargs)).id


def test_the_earliest_due_of_statute_and_policy_wins_per_clock(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_complaint(acting, world, received_at="2025-09-30T10:00:00+08:00")
    found = clocks(acting, world, case_id)
    assert set(found) == {"complaint.decision", "complaint.missing_materials_notice"}
    decision = found["complaint.decision"]
    assert (decision.source, decision.statutory, decision.citation) == (
        "statutory_cn",
        True,
        "2020-complaints/18",
    )
    assert decision.last_day == dt.date(2025, 10, 15)
    notice = found["complaint.missing_materials_notice"]
    assert (notice.source, notice.statutory, notice.unit) == (
        "service_rules_cn",
        False,
        "working_days",
    )
    assert notice.last_day == dt.date(2025, 10, 14)
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        assert case.next_due_at == notice.due_at


def test_mediation_pauses_and_resumes_with_the_remaining_time(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_complaint(acting, world, received_at="2025-11-03T09:00:00+08:00")
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.pause_clock(
            ctx,
            case,
            "complaint.decision",
            kind="mediation",
            reason="投诉人同意调解",
            occurred=dt.datetime(2025, 11, 5, 14, tzinfo=CN),
            if_match=flows.etag(case),
        )
    assert clocks(acting, world, case_id)["complaint.decision"].status == "paused"
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.resume_clock(
            ctx,
            case,
            "complaint.decision",
            reason="调解结束",
            occurred=dt.datetime(2025, 11, 12, 11, tzinfo=CN),
            if_match=flows.etag(case),
        )
        events = services.timeline(ctx.session, case_id)
    decision = clocks(acting, world, case_id)["complaint.decision"]
    assert decision.last_day == dt.date(2025, 11, 25)  # docs/deadlines.md's worked example
    assert [e.kind for e in events[-2:]] == ["clock.paused", "clock.resumed"]
    assert events[-2].data["citation"] == "2020-complaints/23"
    assert events[-1].data["clocks"][0]["previous_due_at"].startswith("2025-11-18T16:00")


def test_extension_to_30_then_60_only_with_a_senior_approver_of_the_superior_unit(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = new_complaint(acting, world)

    def extend(user: str, **kwargs: Any) -> CaseClock:
        with acting(world, user) as ctx:
            case = services.get_case(ctx.session, case_id)
            values: dict[str, Any] = {
                "reason": "情况复杂",
                "to_amount": None,
                "approved_by_id": None,
                "notice_channel": None,
                "notice": None,
                "occurred": None,
            }
            values.update(kwargs)
            return flows.extend_clock(
                ctx, case, "complaint.decision", if_match=flows.etag(case), **values
            )

    first = extend("agent_bj")
    assert first.amount == 30 and first.extensions == 1
    with pytest.raises(Problem) as no_approver:
        extend("agent_bj", notice_channel="letter")
    assert no_approver.value.status == 422 and "approved_by_id" in no_approver.value.detail
    with pytest.raises(Problem) as no_notice:
        extend("agent_bj", approved_by_id=world.people["manager_co"].id)
    assert no_notice.value.status == 422 and "notice_channel" in no_notice.value.detail
    with pytest.raises(Problem) as not_senior:
        extend("agent_bj", approved_by_id=world.people["manager_bj"].id, notice_channel="letter")
    assert not_senior.value.status == 403 and not_senior.value.slug == "approver-not-senior"
    second = extend(
        "agent_bj", approved_by_id=world.people["manager_co"].id, notice_channel="letter"
    )
    assert second.amount == 60 and second.extensions == 2
    with acting(world, "agent_bj") as ctx:
        events = services.timeline(ctx.session, case_id)
    extended = [e for e in events if e.kind == "clock.extended"]
    assert extended[-1].approver == "person:manager_co"
    assert extended[-1].approver_id == world.people["manager_co"].id
    assert events[-1].kind == "notice" and events[-1].data["purpose"] == "extension"
    with pytest.raises(Problem) as further:
        extend("agent_bj")
    assert further.value.status == 422


def test_new_facts_restart_the_decision_period(acting: Acting, world: TenantWorld) -> None:
    case_id = new_complaint(acting, world, received_at="2025-11-03T09:00:00+08:00")
    for action, day in (("begin_review", 4), ("accept", 5)):
        act(
            acting,
            world,
            case_id,
            action=action,
            occurred_at=dt.datetime(2025, 11, day, 9, tzinfo=CN),
        )
    act(
        acting,
        world,
        case_id,
        action="new_facts",
        reason="投诉人提交了新的就诊记录",
        occurred_at=dt.datetime(2025, 11, 10, 15, tzinfo=CN),
    )
    decision = clocks(acting, world, case_id)["complaint.decision"]
    assert decision.started_at == dt.datetime(2025, 11, 10, 15, tzinfo=CN)
    assert decision.last_day == dt.date(2025, 11, 25)
    assert decision.history["restarts"][0]["citation"] == "2020-complaints/18"
    # the materials notice was not owed: materials were complete on receipt
    assert (
        clocks(acting, world, case_id)["complaint.missing_materials_notice"].status == "cancelled"
    )


def test_a_late_review_request_is_refused(acting: Acting, world: TenantWorld) -> None:
    case_id = new_complaint(acting, world, received_at="2025-09-01T09:00:00+08:00")
    steps = [
        ("begin_review", {}),
        ("accept", {}),
        ("start", {}),
        ("decide", {"decision": "维持"}),
        ("answer", {"answer": "告知", "notice_channel": "letter"}),
    ]
    for day, (action, extra) in enumerate(steps, start=2):
        act(
            acting,
            world,
            case_id,
            action=action,
            occurred_at=dt.datetime(2025, 9, day, 9, tzinfo=CN),
            **extra,
        )
    window = clocks(acting, world, case_id)["complaint.review_request_window"]
    assert window.status == "window" and window.last_day == dt.date(2025, 10, 9)  # 10-06 + holiday
    with pytest.raises(Problem) as late:
        act(
            acting,
            world,
            case_id,
            action="request_review",
            reason="异议",
            occurred_at=dt.datetime(2025, 10, 10, 9, tzinfo=CN),
        )
    assert late.value.status == 422 and late.value.slug == "review-window-closed"


def test_withdrawal_cancels_the_open_deadlines(acting: Acting, world: TenantWorld) -> None:
    case_id = new_complaint(acting, world)
    act(acting, world, case_id, action="withdraw", reason="投诉人来电撤回")
    found = clocks(acting, world, case_id)
    assert {c.status for c in found.values()} == {"cancelled"}
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        assert case.state == "withdrawn" and case.next_due_at is None


class BrokenPolicy:
    """A policy plugin whose deadline hook raises."""

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return PluginInfo(
            version="0.0.1",
            title_zh="坏插件",
            title_en="Broken policy",
            description_zh="测试用",
            description_en="for tests",
        )

    @hookimpl
    def insurdesk_deadline_rules(self, case: Any, trigger: str) -> list[Any]:
        raise RuntimeError("policy table unreadable")


def test_a_failing_plugin_yields_a_problem_and_writes_nothing(
    acting: Acting, world: TenantWorld, database: Database
) -> None:
    broken = PluginHost(
        build_registry(
            extra=[("broken_policy", BrokenPolicy())],
            on_by_default=("service_rules_cn", "broken_policy"),
        ),
        database,
        listen=False,
    )
    try:
        before = new_complaint(acting, world)
        with acting(world, "agent_bj") as ctx:
            count = ctx.session.scalar(select(func.count()).select_from(Case))
            number = services.get_case(ctx.session, before).number
        with pytest.raises(Problem) as err, acting(world, "agent_bj", plugins=broken) as ctx:
            flows.register_case(ctx, complaint(world))
        assert err.value.status == 502 and err.value.slug == "plugin-failed"
        assert err.value.extra["plugin"] == "broken_policy"
        after = new_complaint(acting, world)
        with acting(world, "agent_bj") as ctx:
            assert ctx.session.scalar(select(func.count()).select_from(Case)) == count + 1
            assert int(services.get_case(ctx.session, after).number[-6:]) == int(number[-6:]) + 1
    finally:
        broken.close()


# -- provisional years: recomputed after `insurdesk calendar load` -----------------------------


@pytest.fixture(scope="module")
def fresh(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Database, dict[str, str]]]:
    """A database of its own (loading a calendar year must not touch the shared one)."""
    tmp: Path = tmp_path_factory.mktemp("calendar-load")
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'cases.db'}"
        upgrade(url)
        db, env = Database(url), {"INSURDESK_DATABASE_URL": url}
    else:
        admin, app = request.getfixturevalue("pg_databases").create()
        upgrade(admin, app)
        db = Database(app, admin)
        env = {"INSURDESK_DATABASE_URL": app, "INSURDESK_ADMIN_DATABASE_URL": admin}
    env["INSURDESK_VAR_DIR"] = str(tmp)
    yield db, env
    db.dispose()


def test_provisional_clocks_are_recomputed_when_the_year_is_loaded(
    fresh: tuple[Database, dict[str, str]],
) -> None:
    db, env = fresh
    world = make_tenant(db, "calendar")
    add_case_people(db, world)
    host = PluginHost(build_registry(), db, listen=False)
    now = dt.datetime(2026, 12, 20, 12, tzinfo=CN)

    def register(**kwargs: Any) -> uuid.UUID:
        person = world.people["agent_bj"]
        with db.tenant_transaction(world.id) as s:
            principal = Principal(
                tenant_id=world.id,
                subject=str(person.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=person.id,
            )
            ctx = make_context(s, load_access(s, principal), plugins=host, now=lambda: now)
            return flows.register_case(ctx, complaint(world, **kwargs)).id

    try:
        # A life claim received 2026-12-11: the advance payment is due 60 days later, in 2027,
        # which has no official schedule yet: provisional (2027-02-09, a provisional working day).
        claim = register(case_type="claim_report", received_at="2026-12-11T12:00:00+08:00")
        moved_not = register(received_at="2026-12-20T12:00:00+08:00")  # due 2027-01-04 either way
        with db.tenant_transaction(world.id) as s:
            advance = {c.clock: c for c in services.clocks_of(s, claim)}["claim.advance_payment"]
            assert advance.provisional and advance.last_day == dt.date(2027, 2, 9)
            assert not {c.clock: c for c in services.clocks_of(s, claim)}[
                "claim.decision"
            ].provisional

        result = CliRunner().invoke(
            build_cli(), ["calendar", "load", str(DATA / "2027-test-fixture.yaml")], env=env
        )
        assert result.exit_code == 0, result.output
        assert "1 moved" in result.output

        with db.tenant_transaction(world.id) as s:
            advance = {c.clock: c for c in services.clocks_of(s, claim)}["claim.advance_payment"]
            assert not advance.provisional
            assert advance.last_day == dt.date(2027, 2, 15)  # 02-05..02-13 off, 02-14 a Sunday
            event = services.timeline(s, claim)[-1]
            assert event.kind == "clock.recomputed" and event.actor == "system:calendar"
            assert event.data["clocks"][0]["previous_last_day"] == "2027-02-09"
            other = services.clocks_of(s, moved_not)
            assert not any(c.provisional for c in other)
            assert services.timeline(s, moved_not)[-1].kind == "registered"  # did not move
    finally:
        host.close()


def test_a_policy_reminder_fraction_sets_the_reminder_and_the_earliest_wins(
    database: Database, acting: Acting
) -> None:
    from core.orgs.services import get_unit
    from core.plugins import services as plugin_services
    from core.scheduler.models import ClockReminder

    world = make_tenant(database, "remind")
    add_case_people(database, world)
    registry = build_registry()

    def configure(plugin: str, key: str, settings: dict[str, Any]) -> None:
        with database.tenant_transaction(world.id) as s:
            plugin_services.apply_config(
                s,
                registry,
                plugin=plugin,
                unit=get_unit(s, world.units[key].id),
                enabled=True,
                settings=settings,
                actor=plugin_services.Actor("person:admin"),
            )

    def register(user: str, unit: str) -> uuid.UUID:
        with acting(world, user) as ctx:
            return flows.register_case(ctx, complaint(world, unit=unit)).id

    def share(case_id: uuid.UUID) -> tuple[float, float]:
        """(stored fraction, where remind_at lies in the running time) of the decision clock."""
        with database.tenant_session(world.id) as s:
            clock = s.scalars(
                select(CaseClock).where(
                    CaseClock.case_id == case_id, CaseClock.clock == "complaint.decision"
                )
            ).one()
            reminder = s.scalars(
                select(ClockReminder).where(ClockReminder.clock_id == clock.id)
            ).one()
            running = (clock.due_at - clock.started_at).total_seconds()
            used = (reminder.remind_at - clock.started_at).total_seconds()
            return reminder.fraction, round(used / running, 6)

    assert share(register("agent_bj", "bj")) == (0.8, 0.8)  # nobody says: the default

    configure("group_policy", "group", {"reminder_fraction": 0.6})
    configure("branch_policy", "bj", {"reminder_fraction": 0.5})
    bj, sh = register("agent_bj", "bj"), register("agent_sh", "sh")
    assert share(sh) == (0.6, 0.6)  # the group's policy
    assert share(bj) == (0.5, 0.5)  # the branch's is earlier: the tightest wins

    # An extension keeps the share: the reminder moves to half of the longer period.
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, bj)
        extended = flows.extend_clock(
            ctx,
            case,
            "complaint.decision",
            if_match=flows.etag(case),
            reason="情况复杂",
            to_amount=None,
            approved_by_id=None,
            notice_channel=None,
            notice=None,
            occurred=None,
        )
    assert extended.amount == 30
    assert share(bj) == (0.5, 0.5)

    # A setting outside (0, 1) is refused by the plugin's schema; nothing changes.
    with pytest.raises(Problem) as refused:
        configure("branch_policy", "bj", {"reminder_fraction": 1})
    assert refused.value.status == 422
    assert share(register("agent_bj", "bj")) == (0.5, 0.5)
