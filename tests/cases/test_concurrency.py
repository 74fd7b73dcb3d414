"""Optimistic concurrency on cases and the append-only timeline."""

from __future__ import annotations

import pytest

from core.api.problems import Problem
from core.cases import flows, services
from core.cases.models import AppendOnlyError, CaseEvent
from core.cases.schemas import TransitionIn
from core.db import Database
from tests.cases.conftest import Acting, complaint
from tests.factories import TenantWorld


def test_two_handlers_acting_on_the_same_version_one_wins_the_other_gets_412(
    acting: Acting, world: TenantWorld
) -> None:
    with acting(world, "agent_bj") as ctx:
        case_id = flows.register_case(ctx, complaint(world)).id
    with acting(world, "agent_bj") as first, acting(world, "agent_bj2") as second:
        mine = services.get_case(first.session, case_id)
        theirs = services.get_case(second.session, case_id)
        etag = flows.etag(theirs)
        flows.transition(first, mine, TransitionIn(action="begin_review"), if_match=etag)
        first.session.commit()
        with pytest.raises(Problem) as stale:
            flows.transition(
                second,
                theirs,
                TransitionIn(action="withdraw", reason="来电撤回"),
                if_match=etag,
            )
        assert stale.value.status == 412
        second.session.rollback()
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        assert case.state == "under_review"
        assert [e.action for e in services.timeline(ctx.session, case_id)] == [
            None,
            "begin_review",
        ]


def test_the_timeline_is_append_only(
    acting: Acting, world: TenantWorld, database: Database
) -> None:
    with acting(world, "agent_bj") as ctx:
        case_id = flows.register_case(ctx, complaint(world)).id
    with pytest.raises(AppendOnlyError), database.tenant_transaction(world.id) as s:
        event = services.timeline(s, case_id)[0]
        event.reason = "rewritten history"
        s.flush()
    with pytest.raises(AppendOnlyError), database.tenant_transaction(world.id) as s:
        s.delete(services.timeline(s, case_id)[0])
        s.flush()
    with database.tenant_transaction(world.id) as s:
        assert services.timeline(s, case_id)[0].reason is None
        assert isinstance(services.timeline(s, case_id)[0], CaseEvent)
