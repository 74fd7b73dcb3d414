"""The issue's end-to-end story, through the live HTTP API with real sign-ins.

A complaint arrives by letter on the eve of the National Day holiday (2025-09-30) with
incomplete materials. The 5-working-day notice clock skips the holiday week and counts the
调休 Saturday 10-11; the complainant is told by SMS on 10-09 what to add; the materials arrive,
the complaint is accepted, handling starts, the decision period is extended to 30 days, the
decision is made and answered by letter; the complainant asks the superior unit for a review
(核查) within 30 days; the company (the branch's superior unit) decides it; the case is closed.
The timeline tells the whole story.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest

from core.db import Database
from tests.cases.http import Api, person_token, problem
from tests.conftest import LiveServer
from tests.factories import TenantWorld

RECEIVED = "2025-09-30T10:00:00+08:00"


@pytest.fixture(scope="module")
def api(
    database: Database, world: TenantWorld, live_server: LiveServer
) -> Iterator[dict[str, Api]]:
    """Signed-in clients of the people in the story, and another tenant's admin."""
    people = {
        name: Api(live_server.url, person_token(database, world, live_server.url, name))
        for name in ("agent_bj", "manager_bj", "manager_co", "auditor")
    }
    yield people
    for client in people.values():
        client.close()


def _clock(body: dict, name: str) -> dict:
    return next(c for c in body["clocks"] if c["clock"] == name)


def test_a_complaint_from_intake_to_review_and_closure(
    api: dict[str, Api],
    database: Database,
    world: TenantWorld,
    other: TenantWorld,
    live_server: LiveServer,
) -> None:
    agent, manager_bj, manager_co = api["agent_bj"], api["manager_bj"], api["manager_co"]

    # -- intake: registered by letter on the eve of National Day ----------------------------
    created = agent.post(
        "/api/v1/cases",
        {
            "type": "complaint",
            "channel": "letter",
            "subject": "理赔款迟迟未到账 / the claim payment has not arrived",
            "description": "客户来信称8月报案的医疗险理赔至今未赔付。",
            "received_at": RECEIVED,
            "unit_id": str(world.units["bj"].id),
            "customer_id": str(world.customers["bj"].id),
            "policy_id": str(world.policies["bj"].id),
            "category": "claims",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    case_id = body["case"]["id"]
    assert created.headers["location"] == f"/api/v1/cases/{case_id}"
    assert body["case"]["number"].startswith("TS-2025-")
    assert body["case"]["state"] == "registered"
    notice_clock = _clock(body, "complaint.missing_materials_notice")
    # 10-01..10-08 are off; 10-09, 10-10, 10-11 (调休 Saturday), 10-13, 10-14 are working days.
    assert notice_clock["last_day"] == "2025-10-14"
    assert notice_clock["due_at"] == "2025-10-14T16:00:00Z"  # 24:00 Beijing time
    assert notice_clock["source"] == "service_rules_cn"
    assert notice_clock["citation"] == "seed:客户服务管理规定/12"
    decision = _clock(body, "complaint.decision")
    assert (decision["last_day"], decision["source"], decision["citation"]) == (
        "2025-10-15",
        "statutory_cn",
        "2020-complaints/18",
    )
    assert not decision["provisional"]
    etag = created.headers["etag"]

    # -- the complainant is told what to add (If-Match required, and must be current) -------
    request_materials = {
        "action": "request_materials",
        "occurred_at": "2025-10-09T11:00:00+08:00",
        "missing_materials": ["医疗费用发票原件", "出院小结"],
        "notice_channel": "sms",
    }
    problem(agent.post(f"/api/v1/cases/{case_id}/transitions", request_materials), 428)
    stale = agent.act(case_id, request_materials, etag='"999"')
    assert problem(stale, 412)["current_version"] == body["case"]["version"]
    moved = agent.act(case_id, request_materials, etag=etag)
    assert moved.status_code == 200, moved.text
    assert moved.json()["case"]["state"] == "awaiting_materials"
    assert _clock(moved.json(), "complaint.missing_materials_notice")["status"] == "met"
    assert moved.headers["etag"] != etag
    problem(agent.act(case_id, request_materials, etag=etag), 412)  # the old ETag is stale now

    # -- the materials arrive (a file, with its checksum) ------------------------------------
    pdf = b"%PDF-1.4\n% invoice scan\n" + bytes(range(256)) * 8
    upload = agent.post(
        f"/api/v1/cases/{case_id}/attachments",
        files={"file": ("发票.pdf", pdf, "application/pdf")},
        data={"purpose": "material", "sha256": hashlib.sha256(pdf).hexdigest()},
    )
    assert upload.status_code == 201, upload.text
    attachment = upload.json()
    assert attachment["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert attachment["size"] == len(pdf)
    download = agent.get(upload.headers["location"])
    assert download.status_code == 200 and download.content == pdf
    assert download.headers["content-type"] == "application/pdf"
    digest = base64.b64encode(hashlib.sha256(pdf).digest()).decode()
    assert download.headers["repr-digest"] == f"sha-256=:{digest}:"
    exe = agent.post(
        f"/api/v1/cases/{case_id}/attachments",
        files={"file": ("x.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")},
    )
    assert problem(exe, 415)["type"] == "/problems/media-type-mismatch"

    for action, at in [
        ("materials_received", "2025-10-10T15:00:00+08:00"),
        ("accept", "2025-10-10T16:00:00+08:00"),
        ("start", "2025-10-11T09:00:00+08:00"),
    ]:
        step = agent.act(case_id, {"action": action, "occurred_at": at})
        assert step.status_code == 200, (action, step.text)
    assert step.json()["case"]["state"] == "in_progress"

    # -- a complex case: extended to 30 days; 60 needs a senior approver ---------------------
    extend = agent.post(
        f"/api/v1/cases/{case_id}/clocks/complaint.decision/extend",
        {
            "reason": "需调取医院病历核实 / hospital records needed",
            "occurred_at": "2025-10-13T10:00:00+08:00",
        },
        headers={"If-Match": step.headers["etag"]},
    )
    assert extend.status_code == 200, extend.text
    extended = _clock(extend.json(), "complaint.decision")
    assert (extended["amount"], extended["last_day"]) == (30, "2025-10-30")
    assert extended["extensions"][0]["reason"].startswith("需调取医院病历")
    to_60 = agent.post(
        f"/api/v1/cases/{case_id}/clocks/complaint.decision/extend",
        {"reason": "情况特别复杂", "occurred_at": "2025-10-14T10:00:00+08:00"},
        headers={"If-Match": extend.headers["etag"]},
    )
    assert "approved_by_id" in problem(to_60, 422)["detail"]

    # -- decision and answer ---------------------------------------------------------------
    decided = agent.act(
        case_id,
        {
            "action": "decide",
            "occurred_at": "2025-10-28T10:00:00+08:00",
            "decision": "核实后确认应予赔付，三个工作日内支付 / pay within 3 working days",
        },
    )
    assert decided.status_code == 200, decided.text
    answered = agent.act(
        case_id,
        {
            "action": "answer",
            "occurred_at": "2025-10-29T16:00:00+08:00",
            "answer": "处理决定、依据和理由，以及申请核查、调解、仲裁、诉讼等救济途径",
            "notice_channel": "letter",
        },
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert _clock(body, "complaint.decision")["status"] == "met"
    window = _clock(body, "complaint.review_request_window")
    assert (window["kind"], window["last_day"]) == ("window", "2025-11-28")

    # -- review (核查) by the superior unit --------------------------------------------------
    review = agent.act(
        case_id,
        {
            "action": "request_review",
            "occurred_at": "2025-11-05T09:00:00+08:00",
            "reason": "对赔付金额有异议，书面申请上级机构核查",
        },
    )
    assert review.status_code == 200, review.text
    assert _clock(review.json(), "complaint.review")["last_day"] == "2025-12-05"
    decide_review = {
        "action": "decide_review",
        "occurred_at": "2025-11-20T10:00:00+08:00",
        "review_decision": "经核查，原处理决定依据充分，维持 / the decision stands",
        "notice_channel": "letter",
    }
    problem(agent.act(case_id, decide_review), 403)  # a handler of the branch
    problem(manager_bj.act(case_id, decide_review), 403)  # the branch itself is not superior
    reviewed = manager_co.act(case_id, decide_review)
    assert reviewed.status_code == 200, reviewed.text
    assert _clock(reviewed.json(), "complaint.review")["status"] == "met"

    closed = agent.act(case_id, {"action": "close", "occurred_at": "2025-11-21T09:00:00+08:00"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["case"]["state"] == "closed"
    assert closed.json()["actions"] == ["reopen", "request_review"]

    # -- the timeline tells the whole story --------------------------------------------------
    timeline = agent.get(f"/api/v1/cases/{case_id}/timeline").json()
    story = [
        (e["kind"], e["action"], e["from_state"], e["to_state"], e["actor"])
        for e in timeline["events"]
    ]
    assert story == [
        ("registered", None, None, "registered", "person:agent_bj"),
        ("transition", "request_materials", "registered", "awaiting_materials", "person:agent_bj"),
        ("notice", "request_materials", None, None, "person:agent_bj"),
        ("attachment", None, None, None, "person:agent_bj"),
        (
            "transition",
            "materials_received",
            "awaiting_materials",
            "under_review",
            "person:agent_bj",
        ),
        ("transition", "accept", "under_review", "accepted", "person:agent_bj"),
        ("transition", "start", "accepted", "in_progress", "person:agent_bj"),
        ("clock.extended", None, None, None, "person:agent_bj"),
        ("transition", "decide", "in_progress", "decided", "person:agent_bj"),
        ("transition", "answer", "decided", "answered", "person:agent_bj"),
        ("notice", "answer", None, None, "person:agent_bj"),
        ("transition", "request_review", "answered", "review_requested", "person:agent_bj"),
        ("transition", "decide_review", "review_requested", "review_decided", "person:manager_co"),
        ("notice", "decide_review", None, None, "person:manager_co"),
        ("transition", "close", "review_decided", "closed", "person:agent_bj"),
    ]
    events = timeline["events"]
    assert events[2]["data"]["channel"] == "sms" and "出院小结" in events[2]["data"]["content"]
    assert events[2]["at"] == "2025-10-09T03:00:00Z"
    assert events[7]["data"]["clocks"][0]["previous_due_at"] == "2025-10-15T16:00:00+00:00"
    assert events[12]["approver"] == "person:manager_co"
    assert events[9]["after"]["answer_channel"] == "letter"
    assert events[0]["data"]["clocks"] and events[0]["after"]["number"] == body["case"]["number"]

    # -- another tenant sees none of it ----------------------------------------------------
    stranger = Api(live_server.url, person_token(database, other, live_server.url, "admin"))
    try:
        problem(stranger.get(f"/api/v1/cases/{case_id}"), 404)
        problem(stranger.get(f"/api/v1/cases/{case_id}/timeline"), 404)
        problem(stranger.act(case_id, {"action": "reopen", "reason": "x"}, etag='"1"'), 404)
        listed = stranger.get("/api/v1/cases", params={"limit": 200}).json()
        assert case_id not in {c["id"] for c in listed["items"]}
    finally:
        stranger.close()
