"""The lifecycle table, exercised through the flows for every case type.

For every transition of the table: an allowed role takes it and a timeline event records who,
when, from and to; a role without the permission is refused (403) and nothing changes. Actions
that the state does not allow are refused (409), and another tenant sees none of it.
"""

from __future__ import annotations

import uuid
from collections import deque
from decimal import Decimal
from typing import Any

import pytest

from core.api.problems import Problem
from core.cases import flows, lifecycle, services
from core.cases.lifecycle import Transition
from core.cases.models import Case, CaseType
from core.cases.schemas import TransitionIn
from core.db import Database
from tests.cases.conftest import Acting, complaint
from tests.factories import TenantWorld

CASE_UNIT = "bj"
OTHER_UNIT = "sh"


def payload(world: TenantWorld, t: Transition) -> TransitionIn:
    """The fields ``t`` requires, filled in."""
    values: dict[str, Any] = {
        "reason": "投诉人补充了新的事实 / stated reasons",
        "refer_to": "中国银行保险监督管理委员会 12378 热线",
        "to_unit_id": world.units[OTHER_UNIT].id,
        "decision": "经核实，同意按合同约定赔付 / pay as the contract says",
        "answer": "已书面告知处理决定、依据及救济途径 / told the decision, grounds, remedies",
        "notice_channel": "letter",
        "missing_materials": ["身份证明复印件", "事故证明"],
        "report": "按转办要求的书面报告 / the written report",
        "plan": "三个工作日内完成保单变更 / change the policy in 3 working days",
        "review_decision": "维持原处理决定 / the decision stands",
        "amount": Decimal("1280.50"),
    }
    return TransitionIn(action=t.action, **{k: values[k] for k in t.requires})


def path_to(case_type: CaseType, state: str) -> list[Transition]:
    """The shortest run of state-changing transitions from ``registered`` to ``state``."""
    start = lifecycle.INITIAL_STATE
    seen = {start: []}  # type: dict[str, list[Transition]]
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == state:
            return seen[here]
        for t in lifecycle.transitions_of(case_type):
            if here == "closed" and t.action == "request_review":
                continue  # its window exists only if the case was answered before it closed
            if here in t.sources and t.target and t.target not in seen:
                seen[t.target] = [*seen[here], t]
                queue.append(t.target)
    raise AssertionError(f"{state} unreachable for {case_type}")


def steps_for(t: Transition, source: str) -> list[Transition]:
    """How to bring a case to ``source`` so that ``t``'s guards can hold."""
    if t.action == "request_review" and source == "closed":  # the window opens on the answer
        close = lifecycle.find(t.case_type, "answered", "close")
        assert close is not None
        return [*path_to(t.case_type, "answered"), close]
    return path_to(t.case_type, source)


def unit_key(world: TenantWorld, case: Case) -> str:
    return next(k for k in (CASE_UNIT, OTHER_UNIT) if world.units[k].id == case.unit_id)


def allowed_user(t: Transition, unit: str) -> str:
    """Someone holding ``t.permission`` where ``t`` needs it."""
    if t.permission == "cases:write":
        return f"agent_{unit}"
    if t.permission == "cases:assign":
        return "cs_co"
    return "manager_co"  # cases:approve at the company: BJ's and SH's superior unit


def forbidden_user(t: Transition, unit: str) -> str:
    """Someone who can read the case but lacks ``t.permission`` where ``t`` needs it."""
    if t.permission == "cases:write":
        return "auditor"
    if t.permission == "cases:approve" and t.at == "superior":
        return "manager_bj"  # approves at the branch itself, not at its superior unit
    return f"agent_{unit}"


def register(acting: Acting, world: TenantWorld, case_type: CaseType, **extra: Any) -> uuid.UUID:
    kwargs: dict[str, Any] = dict(extra)
    if case_type == CaseType.WHISTLEBLOWING:
        kwargs.setdefault("reporter_anonymous", True)
        kwargs.update(customer_id=None, policy_id=None)
    if case_type == CaseType.SERVICE_REQUEST:
        kwargs.setdefault("service_kind", "policy_change")
    if case_type == CaseType.APPEAL:
        kwargs.setdefault("parent_case_id", decided_complaint(acting, world))
    with acting(world, "agent_bj") as ctx:
        case = flows.register_case(
            ctx, complaint(world, CASE_UNIT, case_type=case_type.value, **kwargs)
        )
        return case.id


_DECIDED: dict[uuid.UUID, uuid.UUID] = {}


def decided_complaint(acting: Acting, world: TenantWorld) -> uuid.UUID:
    """A complaint that has been decided and answered (appeals contest one), made once."""
    if world.id not in _DECIDED:
        case_id = register(acting, world, CaseType.COMPLAINT)
        drive(acting, world, case_id, path_to(CaseType.COMPLAINT, "answered"))
        _DECIDED[world.id] = case_id
    return _DECIDED[world.id]


def take(acting: Acting, world: TenantWorld, case_id: uuid.UUID, t: Transition, user: str) -> Case:
    with acting(world, user) as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(ctx, case, payload(world, t), if_match=flows.etag(case))
        return case


def drive(acting: Acting, world: TenantWorld, case_id: uuid.UUID, steps: list[Transition]) -> None:
    for t in steps:
        with acting(world, "admin") as ctx:
            unit = unit_key(world, services.get_case(ctx.session, case_id))
        take(acting, world, case_id, t, allowed_user(t, unit))


def _cases_for(t: Transition) -> dict[str, Any]:
    if "regulator_case" in t.guards:
        return {
            "channel": "regulator",
            "regulator_reference": "京银保监投诉转〔2026〕88号",
            "regulator_due_date": "2026-12-31",
        }
    return {}


TRANSITION_CASES = [
    pytest.param(t, source, id=f"{t.case_type.value}:{source}-{t.action}")
    for t in lifecycle.TRANSITIONS
    for source in t.sources
]


@pytest.mark.parametrize(("t", "source"), TRANSITION_CASES)
def test_each_allowed_transition_works_for_an_allowed_role_and_is_on_the_timeline(
    acting: Acting, world: TenantWorld, other: TenantWorld, t: Transition, source: str
) -> None:
    case_id = register(acting, world, t.case_type, **_cases_for(t))
    drive(acting, world, case_id, steps_for(t, source))
    with acting(world, "admin") as ctx:
        before = services.get_case(ctx.session, case_id)
        unit, version = unit_key(world, before), before.version
        assert before.state == source

    # Someone without the permission is refused, and nothing changes.
    with pytest.raises(Problem) as refused, acting(world, forbidden_user(t, unit)) as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(ctx, case, payload(world, t), if_match=flows.etag(case))
    assert refused.value.status == 403, refused.value.detail

    user = allowed_user(t, unit)
    after = take(acting, world, case_id, t, user)
    assert after.state == (t.target or source)
    assert after.version > version
    with acting(world, "admin") as ctx:
        events = services.timeline(ctx.session, case_id)
        event = next(e for e in reversed(events) if e.kind == "transition")
        assert (event.action, event.from_state, event.to_state) == (
            t.action,
            source,
            t.target or source,
        )
        assert event.actor == f"person:{user}"
        assert event.actor_id == world.people[user].id
        if t.permission == "cases:approve":
            assert event.approver == f"person:{user}"
        if "notice_channel" in t.requires:
            assert events[-1].kind == "notice" and events[-1].data["channel"] == "letter"

    # Another tenant sees none of it.
    with pytest.raises(Problem) as hidden, acting(other, "admin") as ctx:
        services.get_case(ctx.session, case_id)
    assert hidden.value.status == 404


WORKED_TYPES = [t for t in CaseType if lifecycle.transitions_of(t)]
"""Types worked through the case API (a data-subject request's case follows its request)."""


@pytest.mark.parametrize("case_type", WORKED_TYPES)
def test_actions_the_state_does_not_allow_are_refused(
    acting: Acting, world: TenantWorld, case_type: CaseType
) -> None:
    case_id = register(acting, world, case_type)
    allowed = set(lifecycle.actions_from(case_type, "registered"))
    refused = sorted({t.action for t in lifecycle.transitions_of(case_type)} - allowed)
    assert refused
    for action in refused:
        t = next(x for x in lifecycle.transitions_of(case_type) if x.action == action)
        with pytest.raises(Problem) as err, acting(world, "manager_co") as ctx:
            case = services.get_case(ctx.session, case_id)
            flows.transition(ctx, case, payload(world, t), if_match=flows.etag(case))
        assert err.value.status == 409, action
        assert err.value.extra["allowed"] == sorted(allowed)
    with pytest.raises(Problem) as unknown, acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(ctx, case, TransitionIn(action="teleport"), if_match=flows.etag(case))
    assert unknown.value.status == 422


STATE_CASES = [
    pytest.param(case_type, state, id=f"{case_type.value}:{state}")
    for case_type in WORKED_TYPES
    for state in lifecycle.states_of(case_type)
    if state != lifecycle.INITIAL_STATE
]


@pytest.mark.parametrize(("case_type", "state"), STATE_CASES)
def test_every_action_a_state_does_not_allow_is_refused_and_changes_nothing(
    acting: Acting, world: TenantWorld, case_type: CaseType, state: str
) -> None:
    """Every state of every type, not only the first: each action of the type that the table
    does not allow from it is a 409 naming the allowed ones, even for a senior manager."""
    case_id = register(acting, world, case_type)
    drive(acting, world, case_id, path_to(case_type, state))
    allowed = sorted(lifecycle.actions_from(case_type, state))
    actions = {t.action: t for t in lifecycle.transitions_of(case_type)}
    with acting(world, "admin") as ctx:
        version = services.get_case(ctx.session, case_id).version
    refused = sorted(set(actions) - set(allowed))
    assert refused or state == "closed"
    for action in refused:
        with pytest.raises(Problem) as err, acting(world, "manager_co") as ctx:
            case = services.get_case(ctx.session, case_id)
            flows.transition(ctx, case, payload(world, actions[action]), if_match=flows.etag(case))
        assert (err.value.status, err.value.slug) == (409, "transition-not-allowed"), action
        assert err.value.extra["allowed"] == allowed
    with acting(world, "admin") as ctx:
        after = services.get_case(ctx.session, case_id)
        assert (after.state, after.version) == (state, version)


def test_a_handler_cannot_close_an_unanswered_complaint(acting: Acting, world: TenantWorld) -> None:
    case_id = register(acting, world, CaseType.COMPLAINT)
    drive(acting, world, case_id, path_to(CaseType.COMPLAINT, "decided"))
    for user in ("agent_bj", "manager_co"):
        with pytest.raises(Problem) as err, acting(world, user) as ctx:
            case = services.get_case(ctx.session, case_id)
            flows.transition(ctx, case, TransitionIn(action="close"), if_match=flows.etag(case))
        assert err.value.status == 409
        assert err.value.slug == "transition-not-allowed"
        assert "answer" in err.value.extra["allowed"]


def test_required_fields_and_stray_fields_are_422(acting: Acting, world: TenantWorld) -> None:
    case_id = register(acting, world, CaseType.COMPLAINT)
    drive(acting, world, case_id, path_to(CaseType.COMPLAINT, "under_review"))
    with pytest.raises(Problem) as err, acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(
            ctx,
            case,
            TransitionIn(action="not_accept", reason="不属于本公司"),
            if_match=flows.etag(case),
        )
    assert err.value.status == 422 and err.value.extra["missing"] == ["refer_to", "notice_channel"]
    with pytest.raises(Problem) as err, acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(
            ctx, case, TransitionIn(action="accept", decision="早了"), if_match=flows.etag(case)
        )
    assert err.value.status == 422 and err.value.extra["unexpected"] == ["decision"]


def test_not_accepted_records_the_reason_and_whom_to_turn_to(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = register(acting, world, CaseType.COMPLAINT)
    drive(acting, world, case_id, path_to(CaseType.COMPLAINT, "under_review"))
    t = lifecycle.find(CaseType.COMPLAINT, "under_review", "not_accept")
    assert t is not None
    case = take(acting, world, case_id, t, "agent_bj")
    assert case.not_accepted_reason and case.refer_to == "中国银行保险监督管理委员会 12378 热线"
    with acting(world, "agent_bj") as ctx:
        event = [e for e in services.timeline(ctx.session, case_id) if e.kind == "transition"][-1]
        assert event.after["refer_to"] == case.refer_to
        assert event.before["state"] == "under_review" and event.after["state"] == "not_accepted"


def test_regulator_cases_need_the_written_report_before_closing(
    acting: Acting, world: TenantWorld
) -> None:
    case_id = register(
        acting,
        world,
        CaseType.COMPLAINT,
        channel="regulator",
        regulator_reference="京银保监投诉转〔2026〕12号",
        regulator_due_date="2026-12-20",
    )
    with acting(world, "agent_bj") as ctx:
        clocks = {c.clock: c for c in services.clocks_of(ctx.session, case_id)}
        assert clocks["regulator.report"].last_day.isoformat() == "2026-12-20"
        assert clocks["regulator.report"].source == "regulator"
    drive(acting, world, case_id, path_to(CaseType.COMPLAINT, "answered"))
    with pytest.raises(Problem) as err, acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        flows.transition(ctx, case, TransitionIn(action="close"), if_match=flows.etag(case))
    assert err.value.status == 409 and err.value.extra["guard"] == "regulator_report_filed"
    report = lifecycle.find(CaseType.COMPLAINT, "answered", "submit_regulator_report")
    assert report is not None
    take(acting, world, case_id, report, "agent_bj")
    close = lifecycle.find(CaseType.COMPLAINT, "answered", "close")
    assert close is not None
    closed = take(acting, world, case_id, close, "agent_bj")
    assert closed.state == "closed" and closed.regulator_reported_at is not None
    with acting(world, "agent_bj") as ctx:
        clock = {c.clock: c for c in services.clocks_of(ctx.session, case_id)}["regulator.report"]
        assert clock.status == "met"


def test_regulator_fields_are_required_for_regulator_transfers(
    acting: Acting, world: TenantWorld
) -> None:
    with pytest.raises(Problem) as err, acting(world, "agent_bj") as ctx:
        flows.register_case(ctx, complaint(world, channel="regulator"))
    assert err.value.status == 422 and err.value.slug == "regulator-fields-required"


def test_an_appeal_needs_a_decided_complaint(acting: Acting, world: TenantWorld) -> None:
    fresh = register(acting, world, CaseType.COMPLAINT)
    with pytest.raises(Problem) as err, acting(world, "agent_bj") as ctx:
        flows.register_case(ctx, complaint(world, case_type="appeal", parent_case_id=fresh))
    assert err.value.status == 422 and err.value.slug == "appeal-needs-complaint"
    parent = decided_complaint(acting, world)
    appeal_id = register(acting, world, CaseType.APPEAL, parent_case_id=parent)
    with acting(world, "agent_bj") as ctx:
        appeal = services.get_case(ctx.session, appeal_id)
        assert appeal.parent_case_id == parent and appeal.number.startswith("SS-")
        events = services.timeline(ctx.session, parent)
        assert events[-1].kind == "appealed" and events[-1].data["appeal_number"] == appeal.number


def test_numbers_are_per_type_and_year_and_unique(acting: Acting, world: TenantWorld) -> None:
    numbers = []
    for case_type in (CaseType.COMPLAINT, CaseType.COMPLAINT, CaseType.CONSULTATION):
        case_id = register(acting, world, case_type)
        with acting(world, "agent_bj") as ctx:
            numbers.append(services.get_case(ctx.session, case_id).number)
    a, b, c = numbers
    assert a.startswith("TS-2026-") and b.startswith("TS-2026-") and c.startswith("ZX-2026-")
    assert int(b[-6:]) == int(a[-6:]) + 1


def test_number_sequences_do_not_collide_under_concurrency(database: Database) -> None:
    import threading

    from tests.factories import make_tenant

    w = make_tenant(database, "numbers")
    got: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                with database.tenant_transaction(w.id) as s:
                    from zoneinfo import ZoneInfo

                    from core.cases.services import next_case_number
                    from core.db import utcnow

                    taken = next_case_number(
                        s,
                        fmt="{prefix}-{year}-{seq:06d}",
                        case_type=CaseType.COMPLAINT,
                        received_at=utcnow(),
                        tz=ZoneInfo("Asia/Shanghai"),
                        unit_code="BJ",
                        lock_audit_head=len(got) % 2 == 0,  # a registration's way, and not
                    )
                    got.append(taken.number)
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(got) == 20 and len(set(got)) == 20
    assert sorted(int(n[-6:]) for n in got) == list(range(1, 21))


def test_another_tenant_cannot_list_or_touch_the_cases(
    acting: Acting, world: TenantWorld, other: TenantWorld
) -> None:
    case_id = register(acting, world, CaseType.COMPLAINT)
    with acting(other, "admin") as ctx:
        from sqlalchemy import select

        assert case_id not in set(ctx.session.scalars(select(Case.id)))
        assert services.clocks_of(ctx.session, case_id) == []
        assert list(services.timeline(ctx.session, case_id)) == []
    with pytest.raises(Problem) as err, acting(other, "admin") as ctx:
        flows.register_case(ctx, complaint(world))  # the first tenant's unit, customer, policy
    assert err.value.status == 404


@pytest.mark.parametrize("given", ["customer_id", "policy_id", "policy_only", "category_id"])
def test_a_registration_never_uses_another_tenants_customer_policy_or_category(
    acting: Acting, world: TenantWorld, other: TenantWorld, given: str
) -> None:
    """Registration reads its unit, customer, policy and category in one Core statement
    (decision 0009): each of another tenant's, beside the tenant's own unit, is a 404 and
    nothing is written."""
    from sqlalchemy import func, select

    with acting(other, "admin") as ctx:
        other_category = services.get_category_by_code(ctx.session, "claims")
        assert other_category is not None
        other_category_id = other_category.id
    foreign: dict[str, Any] = {
        "customer_id": {"customer_id": other.customers["bj"].id},
        "policy_id": {"policy_id": other.policies["bj"].id},
        "policy_only": {"customer_id": None, "policy_id": other.policies["bj"].id},
        "category_id": {"category": None, "category_id": other_category_id},
    }[given]
    with acting(world, "admin") as ctx:
        before = ctx.session.scalar(select(func.count()).select_from(Case))
    with pytest.raises(Problem) as err, acting(world, "admin") as ctx:
        flows.register_case(ctx, complaint(world, **foreign))
    assert err.value.status == 404
    assert str(other.id) not in str(err.value.detail)
    with acting(world, "admin") as ctx:
        assert ctx.session.scalar(select(func.count()).select_from(Case)) == before
