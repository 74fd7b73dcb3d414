"""The case API over real HTTP: work queues, masking, provisional flags, categories, assignment,
attachments, saved views and problem responses."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.db import Database
from tests.cases.http import Api, person_token, problem
from tests.conftest import LiveServer
from tests.factories import TenantWorld


@pytest.fixture(scope="module")
def as_(
    database: Database, world: TenantWorld, live_server: LiveServer
) -> Iterator[Callable[[str], Api]]:
    """``as_("agent_bj")``: that person's signed-in client (one sign-in per person)."""
    clients: dict[str, Api] = {}

    def get(username: str) -> Api:
        if username not in clients:
            token = person_token(database, world, live_server.url, username)
            clients[username] = Api(live_server.url, token)
        return clients[username]

    yield get
    for client in clients.values():
        client.close()


def register(api: Api, world: TenantWorld, unit: str = "bj", **fields: Any) -> dict[str, Any]:
    body = {
        "type": "complaint",
        "channel": "hotline",
        "subject": "服务态度差",
        "unit_id": str(world.units[unit].id),
        "customer_id": str(world.customers[unit].id),
        "category": "sales",
    }
    body.update(fields)
    response = api.post("/api/v1/cases", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _ago(now: dt.datetime, days: int) -> str:
    return (now - dt.timedelta(days=days)).isoformat()


def all_pages(api: Api, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get("/api/v1/cases", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def test_the_queue_sorts_by_nearest_deadline_and_pages_with_a_cursor(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    agent = as_("agent_bj")
    now = dt.datetime.now(dt.UTC)
    made = [
        register(
            agent, world, category="premium", received_at=(now - dt.timedelta(days=d)).isoformat()
        )
        for d in (3, 9, 1, 6, 0)
    ]
    ids = {m["case"]["id"] for m in made}
    category = made[0]["case"]["category_id"]
    items = all_pages(agent, category_id=category, limit=2)
    assert [i["id"] for i in items if i["id"] in ids] == [i["id"] for i in items]
    assert {i["id"] for i in items} == ids
    dues = [i["next_due_at"] for i in items]
    assert dues == sorted(dues)
    newest_first = all_pages(agent, category_id=category, sort="-received", limit=3)
    received = [i["received_at"] for i in newest_first]
    assert received == sorted(received, reverse=True)
    problem(agent.get("/api/v1/cases", params={"cursor": "bm9wZQ"}), 400)


def test_queue_filters_units_handlers_breaches_and_visibility(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    agent_bj, agent_sh, auditor = as_("agent_bj"), as_("agent_sh"), as_("auditor")
    late = register(agent_bj, world, received_at="2025-03-03T09:00:00+08:00", category="other")
    fresh = register(agent_sh, world, unit="sh", category="other")
    other = fresh["case"]["category_id"]
    both = {late["case"]["id"], fresh["case"]["id"]}

    company = str(world.units["company"].id)
    seen = {i["id"] for i in all_pages(auditor, category_id=other, unit_id=company)}
    assert seen == both
    only_company = all_pages(auditor, category_id=other, unit_id=company, descendants="false")
    assert only_company == []
    assert {i["id"] for i in all_pages(agent_bj, category_id=other)} == {late["case"]["id"]}
    breached = all_pages(auditor, category_id=other, breached="true")
    assert [i["id"] for i in breached] == [late["case"]["id"]] and breached[0]["breached"]
    not_breached = all_pages(auditor, category_id=other, breached="false")
    assert [i["id"] for i in not_breached] == [fresh["case"]["id"]]
    due_soon = all_pages(
        auditor,
        category_id=other,
        due_before=(dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
        due_after=dt.datetime.now(dt.UTC).isoformat(),
    )
    assert [i["id"] for i in due_soon] == [fresh["case"]["id"]]
    mine = all_pages(auditor, category_id=other, unassigned="true", state="registered")
    assert {i["id"] for i in mine} == both


def test_a_registration_answers_with_the_case_as_it_was_stored(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    """The answer to a registration is built from what the registration wrote (nothing is read
    back), so it must be what a read of the new case gives: the same clocks (times in UTC),
    flags, actions, no attachments, and the same case."""
    api = as_("agent_bj")
    made = register(api, world, description="客户来电 13800138000", complexity=["disputed"])
    read = api.get(f"/api/v1/cases/{made['case']['id']}")
    assert read.status_code == 200, read.text
    stored = read.json()
    assert made["clocks"] and made["clocks"] == stored["clocks"]
    assert all(c["due_at"].endswith("Z") for c in made["clocks"])
    assert made["actions"] == stored["actions"]
    assert made["attachments"] == stored["attachments"] == []
    due = {
        dt.datetime.fromisoformat(c["case"].pop("next_due_at").replace("Z", "+00:00"))
        for c in (made, stored)
    }
    assert len(due) == 1 and made["case"] == stored["case"]
    assert "13800138000" not in str(made)  # masked in the answer as in the read


def test_whistle_blowers_are_masked_without_the_permission(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    made = register(
        as_("agent_bj"),
        world,
        type="whistleblowing",
        channel="online",
        subject="业务员虚构保险责任 / an agent misrepresented cover",
        customer_id=None,
        reporter_name="王某某",
        reporter_contact="13900139000",
    )
    case_id = made["case"]["id"]
    assert made["case"]["reporter"] == {
        "anonymous": False,
        "name": "***",
        "contact": "***",
        "id_number": "***",
        "masked": True,
    }
    # The permission alone shows it masked; with a declared purpose, in clear and audited.
    director = as_("director")
    hidden = director.get(f"/api/v1/cases/{case_id}").json()["case"]["reporter"]
    assert hidden["name"] == "***" and hidden["masked"]
    purpose = {"X-Purpose": "complaint_handling"}
    seen = director.get(f"/api/v1/cases/{case_id}", headers=purpose).json()["case"]["reporter"]
    assert seen["name"] == "王某某" and seen["contact"] == "13900139000" and not seen["masked"]
    listed = all_pages(as_("agent_bj"), type="whistleblowing")
    assert all(i["reporter"]["name"] in ("***", None) for i in listed)
    problem(as_("agent_bj").get(f"/api/v1/cases/{case_id}", headers=purpose), 403)
    timeline = director.get(f"/api/v1/cases/{case_id}/timeline").text
    assert "王某某" not in timeline and "13900139000" not in timeline


def test_a_provisional_due_is_flagged_in_the_api(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    # A life claim's advance payment is due 60 days after receipt: in 2027, whose holiday
    # schedule is not published yet (the calendar library knows up to 2026).
    made = register(
        as_("agent_bj"),
        world,
        type="claim_report",
        policy_id=str(world.policies["bj"].id),
        category="claims",
        received_at="2026-11-20T10:00:00+08:00",
    )
    clocks = {c["clock"]: c for c in made["clocks"]}
    assert clocks["claim.advance_payment"]["provisional"] is True
    assert clocks["claim.decision"]["provisional"] is False
    assert made["case"]["provisional"] is True
    flagged = {i["id"] for i in all_pages(as_("agent_bj"), provisional="true")}
    assert made["case"]["id"] in flagged


def test_categories_are_listed_and_only_a_top_level_admin_changes_them(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    listed = as_("agent_bj").get("/api/v1/case-categories").json()
    codes = [c["code"] for c in listed]
    assert codes == ["sales", "underwriting", "claims", "policy_service", "premium", "other"]
    assert listed[2]["name_zh"] == "理赔" and listed[2]["name_en"] == "Claims"
    body = {"code": "mis_selling", "name_zh": "销售误导", "name_en": "Mis-selling"}
    problem(as_("agent_bj").post("/api/v1/case-categories", body), 403)
    created = as_("admin").post("/api/v1/case-categories", body)
    assert created.status_code == 201, created.text
    problem(as_("admin").post("/api/v1/case-categories", body), 409)
    assert "mis_selling" in [
        c["code"] for c in as_("agent_bj").get("/api/v1/case-categories").json()
    ]

    category_id = created.json()["id"]
    problem(as_("agent_bj").http.patch(f"/api/v1/case-categories/{category_id}", json={}), 403)
    retired = as_("admin").http.patch(
        f"/api/v1/case-categories/{category_id}",
        json={"name_en": "Mis-selling (sales)", "active": False},
    )
    assert retired.status_code == 200, retired.text
    assert retired.json()["name_en"] == "Mis-selling (sales)" and not retired.json()["active"]
    listed = as_("agent_bj").get("/api/v1/case-categories").json()
    assert "mis_selling" not in [c["code"] for c in listed]
    everything = as_("agent_bj").get("/api/v1/case-categories", params={"include_inactive": True})
    assert "mis_selling" in [c["code"] for c in everything.json()]
    body = {
        "type": "complaint",
        "channel": "hotline",
        "subject": "x",
        "unit_id": str(world.units["bj"].id),
        "category": "mis_selling",
    }
    refused = problem(as_("agent_bj").post("/api/v1/cases", body), 422)
    assert refused["detail"].endswith("retired")


def test_manual_and_round_robin_assignment(
    as_: Callable[[str], Api], world: TenantWorld, database: Database
) -> None:
    cs = as_("cs_co")
    made = [register(as_("agent_bj"), world, category="underwriting") for _ in range(4)]
    first = made[0]
    case_id = first["case"]["id"]
    assign_to = {"assignee_id": str(world.people["agent_bj2"].id)}
    problem(
        as_("agent_bj").post(
            f"/api/v1/cases/{case_id}/assign", assign_to, headers={"If-Match": '"1"'}
        ),
        403,
    )
    wrong_unit = cs.post(
        f"/api/v1/cases/{case_id}/assign",
        {"assignee_id": str(world.people["agent_sh"].id)},
        headers={"If-Match": f'"{first["case"]["version"]}"'},
    )
    assert problem(wrong_unit, 422)["type"] == "/problems/invalid-assignee"
    done = cs.post(
        f"/api/v1/cases/{case_id}/assign",
        assign_to,
        headers={"If-Match": f'"{first["case"]["version"]}"'},
    )
    assert done.status_code == 200, done.text
    assert done.json()["case"]["assignee_id"] == assign_to["assignee_id"]

    rr = cs.post("/api/v1/cases/auto-assign", {"unit_id": str(world.units["bj"].id)})
    assert rr.status_code == 200, rr.text
    result = rr.json()
    handlers = result["handlers"]
    assert set(handlers) == {
        str(world.people[n].id) for n in ("agent_bj", "agent_bj2", "manager_bj")
    }
    picked = [a["assignee_id"] for a in result["assigned"]]
    assert {m["case"]["id"] for m in made[1:]} <= {a["case_id"] for a in result["assigned"]}
    # in turn: consecutive assignments go to different handlers, each one's share within one
    assert all(a != b for a, b in itertools.pairwise(picked))
    counts = [picked.count(h) for h in handlers]
    assert max(counts) - min(counts) <= 1
    timeline = cs.get(f"/api/v1/cases/{made[1]['case']['id']}/timeline").json()["events"]
    assert timeline[-1]["kind"] == "assigned" and timeline[-1]["data"]["mode"] == "round_robin"


def test_attachments_are_checked_for_type_size_and_checksum(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    agent = as_("agent_bj")
    case_id = register(agent, world)["case"]["id"]
    url = f"/api/v1/cases/{case_id}/attachments"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    ok = agent.post(url, files={"file": ("现场照片.png", png, "image/png")})
    assert ok.status_code == 201, ok.text
    assert ok.json()["sha256"] == hashlib.sha256(png).hexdigest()
    got = agent.get(ok.headers["location"])
    assert got.content == png
    assert "filename*=UTF-8''%E7%8E%B0" in got.headers["content-disposition"]
    problem(agent.post(url, files={"file": ("a.exe", b"MZ\x90", "application/x-msdownload")}), 415)
    bad_sum = agent.post(
        url, files={"file": ("a.png", png, "image/png")}, data={"sha256": "0" * 64}
    )
    assert problem(bad_sum, 422)["type"] == "/problems/checksum-mismatch"
    too_big = b"%PDF-" + b"0" * (20 * 1024 * 1024)
    problem(agent.post(url, files={"file": ("big.pdf", too_big, "application/pdf")}), 413)
    listed = agent.get(f"/api/v1/cases/{case_id}").json()["attachments"]
    assert [a["filename"] for a in listed] == ["现场照片.png"]
    problem(as_("agent_sh").get(ok.headers["location"]), 404)  # outside the caller's units


def test_clock_pause_and_resume_over_http(as_: Callable[[str], Api], world: TenantWorld) -> None:
    agent = as_("agent_bj")
    made = register(agent, world)
    case_id, etag = made["case"]["id"], f'"{made["case"]["version"]}"'
    paused = agent.post(
        f"/api/v1/cases/{case_id}/clocks/complaint.decision/pause",
        {"kind": "mediation", "reason": "同意调解"},
        headers={"If-Match": etag},
    )
    assert paused.status_code == 200, paused.text
    clock = next(c for c in paused.json()["clocks"] if c["clock"] == "complaint.decision")
    assert clock["status"] == "paused"
    again = agent.post(
        f"/api/v1/cases/{case_id}/clocks/complaint.decision/pause",
        {"kind": "mediation", "reason": "x"},
        headers={"If-Match": paused.headers["etag"]},
    )
    problem(again, 409)
    resumed = agent.post(
        f"/api/v1/cases/{case_id}/clocks/complaint.decision/resume",
        {"reason": "调解结束"},
        headers={"If-Match": paused.headers["etag"]},
    )
    assert resumed.status_code == 200, resumed.text
    problem(
        agent.post(
            f"/api/v1/cases/{case_id}/clocks/no.such.clock/resume",
            {},
            headers={"If-Match": resumed.headers["etag"]},
        ),
        404,
    )


def test_saved_views_apply_their_filters(as_: Callable[[str], Api], world: TenantWorld) -> None:
    agent = as_("agent_bj")
    made = register(agent, world, type="consultation", category="policy_service")
    view = agent.post(
        "/api/v1/case-views",
        {"name": "我的咨询", "filters": {"type": "consultation", "open": True}},
    )
    assert view.status_code == 201, view.text
    view_id = view.json()["id"]
    got = all_pages(agent, view_id=view_id)
    assert made["case"]["id"] in {i["id"] for i in got}
    assert {i["type"] for i in got} == {"consultation"}
    assert "我的咨询" in [v["name"] for v in agent.get("/api/v1/case-views").json()]
    problem(as_("agent_bj2").get("/api/v1/cases", params={"view_id": view_id}), 404)
    bad = agent.post("/api/v1/case-views", {"name": "x", "filters": {"colour": "red"}})
    problem(bad, 422)
    assert agent.http.delete(f"/api/v1/case-views/{view_id}").status_code == 204


def test_client_errors_are_problem_details(as_: Callable[[str], Api], world: TenantWorld) -> None:
    agent = as_("agent_bj")
    problem(agent.get("/api/v1/cases/01900000-0000-7000-8000-000000000000"), 404)
    unknown_field = agent.post(
        "/api/v1/cases",
        {
            "type": "complaint",
            "channel": "hotline",
            "subject": "x",
            "unit_id": str(world.units["bj"].id),
            "colour": "red",
        },
    )
    problem(unknown_field, 400)
    naive = agent.post(
        "/api/v1/cases",
        {
            "type": "complaint",
            "channel": "hotline",
            "subject": "x",
            "unit_id": str(world.units["bj"].id),
            "received_at": "2025-10-01T10:00:00",
        },
    )
    problem(naive, 422)
    future = agent.post(
        "/api/v1/cases",
        {
            "type": "complaint",
            "channel": "hotline",
            "subject": "x",
            "unit_id": str(world.units["bj"].id),
            "received_at": "2099-01-01T00:00:00+08:00",
        },
    )
    problem(future, 422)
    sh_unit = agent.post(
        "/api/v1/cases",
        {
            "type": "complaint",
            "channel": "hotline",
            "subject": "x",
            "unit_id": str(world.units["sh"].id),
        },
    )
    problem(sh_unit, 403)
    case_id = register(agent, world)["case"]["id"]
    problem(agent.act(case_id, {"action": "teleport"}), 422)
    problem(agent.act(case_id, {"action": "close"}), 409)


def test_a_claim_advance_over_http_keeps_its_amount_and_bad_amounts_are_problems(
    as_: Callable[[str], Api], world: TenantWorld
) -> None:
    agent = as_("agent_bj")
    claim = register(agent, world, type="claim_report", channel="online", category=None)
    case_id = claim["case"]["id"]
    advance = {"action": "pay_advance", "reason": "先予支付医疗费"}
    assert problem(agent.act(case_id, {**advance, "amount": "12,5"}), 400)["status"] == 400
    assert problem(agent.act(case_id, {**advance, "amount": "0.001"}), 422)["type"] == (
        "/problems/invalid-amount"
    )
    missing = problem(agent.act(case_id, advance), 422)
    assert missing["type"] == "/problems/missing-fields" and missing["missing"] == ["amount"]
    paid = agent.act(case_id, {**advance, "amount": "3600.5"})
    assert paid.status_code == 200, paid.text
    timeline = agent.get(f"/api/v1/cases/{case_id}/timeline").json()
    (event,) = [e for e in timeline["events"] if e["action"] == "pay_advance"]
    assert event["data"]["amount"] == "3600.50"
