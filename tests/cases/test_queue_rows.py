"""A work-queue page is rendered from plain rows (``CaseOut.of_rows``) exactly as the case
detail renders each case (``CaseOut.of``): the same fields, masking, reporter rules and flags."""

from __future__ import annotations

import uuid
from collections import namedtuple
from typing import Any

import pytest
from sqlalchemy import select

from core.cases import controllers, flows, services
from core.cases.disclosure import MASKED, Disclosure
from core.cases.models import Case, CaseType, Channel
from core.cases.schemas import CaseCreate, CaseOut, TransitionIn
from core.db import tenant_rows, utcnow
from core.privacy.fields import sealed_objects, sealed_records
from tests.cases.conftest import Acting, complaint
from tests.factories import TenantWorld

SHOWN = [
    MASKED,
    Disclosure(clear=True, reporter=False),
    Disclosure(clear=True, reporter=True),
    Disclosure(clear=False, reporter=True),
]


def _cases(acting: Acting, world: TenantWorld) -> list[uuid.UUID]:
    """Cases whose rendering differs: masked identifiers in free text, complexity and missing
    materials (one awaiting materials), a named and an anonymous whistle-blower."""

    def whistleblowing(subject: str, **reporter: Any) -> CaseCreate:
        return complaint(
            world,
            case_type="whistleblowing",
            channel="online",
            customer_id=None,
            policy_id=None,
            subject=subject,
            **reporter,
        )

    with acting(world, "agent_bj") as ctx:
        made = [
            flows.register_case(ctx, case)
            for case in (
                complaint(
                    world,
                    subject="客户 13800138000 投诉理赔慢",
                    description="邮箱 li.si@example.com，身份证 11010519491231002X",
                    complexity=["multiple_parties"],
                ),
                whistleblowing(
                    "业务员虚构保险责任", reporter_name="王某某", reporter_contact="13900139000"
                ),
                whistleblowing("匿名举报", reporter_anonymous=True),
            )
        ]
        first = made[0]
        asked = TransitionIn(
            action="request_materials", missing_materials=["发票"], notice_channel="letter"
        )
        flows.transition(ctx, first, asked, if_match=flows.etag(first))
        return [c.id for c in made]


def test_a_page_renders_each_case_as_its_detail_does(acting: Acting, world: TenantWorld) -> None:
    ids = _cases(acting, world)
    with acting(world, "agent_bj") as ctx:
        session = ctx.session
        statement = select(*controllers._QUEUE_COLUMNS).where(Case.id.in_(ids))
        rows = tenant_rows(session, statement, controllers._CASES.c.tenant_id, flags_now=utcnow())
        assert len(rows) == 3
        records = sealed_records(session, Case, world.id, rows)
        objects = sealed_objects(Case, rows, records)
        for shown in SHOWN:
            page = CaseOut.of_rows(rows, records, [shown] * len(rows))
            for row, item, obj in zip(rows, page, objects, strict=True):
                case = services.get_case(session, row.id)
                flags = {"provisional": bool(row.flag_provisional), "breached": False}
                assert item == CaseOut.of(case, disclosure=shown, **flags)
                assert item == CaseOut.of(obj, disclosure=shown, **flags)
        masked = CaseOut.of_rows(rows, records, [MASKED] * len(rows))
        by_id = {i.id: i for i in masked}
        assert "13800138000" not in by_id[ids[0]].subject
        assert by_id[ids[0]].missing_materials == ["发票"]
        assert by_id[ids[1]].reporter is not None and by_id[ids[1]].reporter.name == "***"
        assert by_id[ids[2]].reporter is not None and by_id[ids[2]].reporter.anonymous


def test_an_empty_page_renders_as_an_empty_list() -> None:
    assert CaseOut.of_rows([], [], []) == []


def _row(**values: object) -> Any:
    """A queue row (the queue statement's columns, in order) with ``values``."""
    names = [getattr(c, "key", None) or c.name for c in controllers._QUEUE_COLUMNS]
    row_type = namedtuple("Row", names)  # type: ignore[misc]
    base: dict[str, object] = dict.fromkeys(names)
    base.update(
        id=uuid.uuid4(),
        number="TS-2026-000001",
        type=CaseType.COMPLAINT,
        channel=Channel.HOTLINE,
        state="registered",
        received_at=utcnow(),
        unit_id=uuid.uuid4(),
        version=1,
        created_at=utcnow(),
        updated_at=utcnow(),
        reporter_anonymous=False,
        flag_provisional=False,
        flag_breached=False,
    )
    base.update(values)
    return row_type(**base)


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        # sealed by today's rules: the masked form kept beside the text
        (
            {"subject": "致电 13800138000", "#subject": "致电 138****8000", "#": "2"},
            "致电 138****8000",
        ),
        # today's rules, nothing to mask: no masked form kept, the text shows as it is
        ({"subject": "服务态度差", "#": "2"}, "服务态度差"),
        # sealed before (version 1 kept no masked forms for cases): masked on the fly
        ({"subject": "致电 13800138000", "#": "1"}, "致电 138****8000"),
        ({"subject": "致电 13800138000"}, "致电 138****8000"),
    ],
)
def test_a_page_shows_the_kept_masked_form_or_masks_an_older_record_on_the_fly(
    record: dict[str, str], shown: str
) -> None:
    (item,) = CaseOut.of_rows([_row()], [record], [MASKED])
    assert item.subject == shown and item.masked
    (clear,) = CaseOut.of_rows([_row()], [record], [Disclosure(clear=True, reporter=False)])
    assert clear.subject == record["subject"] and not clear.masked
