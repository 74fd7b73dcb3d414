"""Statistics per period and unit (JSON, CSV, XLSX) and the counts-only published view."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from core.cases import flows, services
from core.cases.schemas import TransitionIn
from core.db import Database
from tests.cases.conftest import Acting, complaint
from tests.cases.http import Api, person_token, problem
from tests.conftest import LiveServer
from tests.factories import TenantWorld

CN = ZoneInfo("Asia/Shanghai")
PERIOD = {"start": "2025-03-01", "end": "2025-03-31"}


def _walk(acting: Acting, world: TenantWorld, case_id: uuid.UUID, steps: list[Any]) -> None:
    for day, action, fields in steps:
        with acting(world, "agent_bj") as ctx:
            case = services.get_case(ctx.session, case_id)
            data = TransitionIn(
                action=action, occurred_at=dt.datetime(2025, 3, day, 10, tzinfo=CN), **fields
            )
            flows.transition(ctx, case, data, if_match=flows.etag(case))


ANSWER = [
    ("begin_review", {}),
    ("accept", {}),
    ("start", {}),
    ("decide", {"decision": "维持"}),
    ("answer", {"answer": "告知", "notice_channel": "letter"}),
]


@pytest.fixture(scope="module")
def figures(acting: Acting, world: TenantWorld) -> dict[str, uuid.UUID]:
    """Five cases received in March 2025 at BJ and SH, in different states."""
    made: dict[str, uuid.UUID] = {}

    def register(name: str, unit: str = "bj", **kwargs: Any) -> None:
        with acting(world, "agent_bj" if unit == "bj" else "agent_sh") as ctx:
            made[name] = flows.register_case(ctx, complaint(world, unit, **kwargs)).id

    register("on_time", received_at="2025-03-03T09:00:00+08:00", category="claims")
    register("late", received_at="2025-03-03T09:00:00+08:00", category="claims", channel="letter")
    register("open", unit="sh", received_at="2025-03-20T09:00:00+08:00", category="sales")
    register(
        "consultation",
        received_at="2025-03-10T09:00:00+08:00",
        case_type="consultation",
        category="other",
    )
    register("april", received_at="2025-04-02T09:00:00+08:00")  # outside the period
    _walk(acting, world, made["on_time"], [(4 + i, a, f) for i, (a, f) in enumerate(ANSWER)])
    _walk(acting, world, made["on_time"], [(12, "close", {})])
    _walk(acting, world, made["late"], [(20 + i, a, f) for i, (a, f) in enumerate(ANSWER)])
    return made


@pytest.fixture(scope="module")
def auditor(database: Database, world: TenantWorld, live_server: LiveServer) -> Api:
    """The read-only auditor (stats:read at the group), signed in."""
    return Api(live_server.url, person_token(database, world, live_server.url, "auditor"))


def test_statistics_per_type_count_received_decided_breached_closed(
    figures: dict[str, uuid.UUID], auditor: Api
) -> None:
    got = auditor.get("/api/v1/case-statistics", params={**PERIOD, "group_by": "type"})
    assert got.status_code == 200, got.text
    body = got.json()
    rows = {r["key"]: r for r in body["rows"]}
    complaint_row = rows["complaint"]
    assert complaint_row["received"] == 3
    assert complaint_row["accepted"] == 2
    assert complaint_row["decided_on_time"] == 1 and complaint_row["decided_late"] == 1
    assert complaint_row["breached"] == 2  # the late one, and the open one (its days ran out)
    assert complaint_row["closed"] == 1
    assert complaint_row["median_handling_days"] == pytest.approx(9.04, abs=0.01)
    assert rows["consultation"]["received"] == 1
    assert body["total"]["received"] == 4


def test_statistics_per_unit_and_subtree(
    figures: dict[str, uuid.UUID], auditor: Api, world: TenantWorld
) -> None:
    by_unit = auditor.get("/api/v1/case-statistics", params=PERIOD).json()
    counts = {r["label"]: r["received"] for r in by_unit["rows"]}
    assert counts == {"北京分公司 (BJ)": 3, "上海分公司 (SH)": 1}
    sh_only = auditor.get(
        "/api/v1/case-statistics", params={**PERIOD, "unit_id": str(world.units["sh"].id)}
    ).json()
    assert sh_only["total"]["received"] == 1


def test_statistics_export_as_csv_and_xlsx(figures: dict[str, uuid.UUID], auditor: Api) -> None:
    params = {**PERIOD, "group_by": "channel"}
    exported = auditor.get("/api/v1/case-statistics", params={**params, "format": "csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert lines[1][:3] == ["group", "received", "accepted"]
    table = {line[0]: line[1] for line in lines[2:]}
    assert table["电话热线 / hotline"] == "3" and table["信函 / letter"] == "1"
    assert table["合计 / total"] == "4"
    sheet = auditor.get("/api/v1/case-statistics", params={**params, "format": "xlsx"})
    assert sheet.status_code == 200
    ws = load_workbook(io.BytesIO(sheet.content)).active
    assert ws is not None
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0][:2] == ["group", "received"]
    assert values[-1][:2] == ["合计 / total", 4]


def test_published_statistics_are_counts_only(figures: dict[str, uuid.UUID], auditor: Api) -> None:
    got = auditor.get("/api/v1/case-statistics/published", params=PERIOD)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["received"] == 3 and body["decided_on_time"] == 1 and body["closed"] == 1
    assert {c["category"]: c["received"] for c in body["by_category"]} == {
        "理赔 / Claims": 2,
        "销售 / Sales": 1,
    }
    text = got.text
    for case_id in figures.values():
        assert str(case_id) not in text
    assert "TS-" not in text and "客户" not in text


def test_statistics_need_stats_read_and_a_sane_period(
    database: Database, world: TenantWorld, live_server: LiveServer, auditor: Api
) -> None:
    agent = Api(live_server.url, person_token(database, world, live_server.url, "agent_bj"))
    try:
        problem(agent.get("/api/v1/case-statistics", params=PERIOD), 403)
    finally:
        agent.close()
    problem(
        auditor.get("/api/v1/case-statistics", params={"start": "2025-03-31", "end": "2025-03-01"}),
        422,
    )
    problem(auditor.get("/api/v1/case-statistics", params={**PERIOD, "group_by": "colour"}), 400)
