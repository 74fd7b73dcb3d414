"""A data-subject request is in the handlers' work queue as a case of its own type: its
deadline clock (15 working days), the reminder and the escalation of the deadline sweep, the
daily digest; the case follows the request and the case API cannot move it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from core.cases.models import Case, CaseClock, CaseEvent
from core.db import Database, utcnow
from core.outbox.models import OutboxEvent
from core.scheduler.jobs import JobContext
from core.scheduler.models import ClockReminder
from core.scheduler.sweeps import daily_digest, escalate_breaches, send_reminders
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld, make_tenant


def _register(
    api: httpx.Client, headers: dict[str, str], world: TenantWorld, kind: str, **extra: Any
) -> dict[str, Any]:
    answer = api.post(
        "/api/v1/privacy/requests",
        headers=headers,
        json={
            "customer_id": str(world.customers["bj"].id),
            "kind": kind,
            "channel": "hotline",
            **extra,
        },
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _outbox(database: Database, world: TenantWorld, event_type: str) -> list[dict[str, Any]]:
    with database.tenant_session(world.id) as s:
        rows = s.scalars(select(OutboxEvent).where(OutboxEvent.event_type == event_type))
        return [dict(r.payload) for r in rows]


def test_a_request_is_a_case_in_the_queue_with_its_deadline_and_follows_the_request(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "dsr-case")
    agent, admin = auth(person_token(world, "agent_bj")), auth(person_token(world, "admin"))
    body = _register(api, agent, world, "access")  # front-line staff register it
    assert body["case_id"]
    queue = api.get("/api/v1/cases", headers=agent, params={"type": "data_subject_request"})
    assert queue.status_code == 200, queue.text
    (item,) = queue.json()["items"]
    assert item["id"] == body["case_id"] and item["number"].startswith("GR-")
    assert item["customer_id"] == str(world.customers["bj"].id)
    # the queue sorts on the request's deadline
    assert _at(item["next_due_at"]) == _at(body["due_at"])
    assert body["number"] in item["subject"] and "查阅" in item["subject"]
    detail = api.get(f"/api/v1/cases/{body['case_id']}", headers=admin).json()
    (clock,) = detail["clocks"]
    assert (clock["clock"], clock["amount"], clock["unit"]) == ("dsr.response", 15, "working_days")
    assert _at(clock["due_at"]) == _at(body["due_at"]) and detail["actions"] == []
    with database.tenant_session(world.id) as s:
        reminder = s.scalars(
            select(ClockReminder).where(ClockReminder.case_id == uuid.UUID(body["case_id"]))
        ).one()
        assert (
            reminder.status == "pending"
            and reminder.due_at.isoformat()[:16]
            == (dt.datetime.fromisoformat(body["due_at"]).astimezone(dt.UTC).isoformat()[:16])
        )
    assert any(p["case_id"] == body["case_id"] for p in _outbox(database, world, "case.created"))

    # The case API cannot move it, nor open one of its own.
    etag = api.get(f"/api/v1/cases/{body['case_id']}", headers=admin).headers["etag"]
    moved = api.post(
        f"/api/v1/cases/{body['case_id']}/transitions",
        headers={**admin, "If-Match": etag},
        json={"action": "withdraw", "reason": "x"},
    )
    assert moved.status_code in (409, 422), moved.text
    direct = api.post(
        "/api/v1/cases",
        headers=agent,
        json={
            "type": "data_subject_request",
            "channel": "hotline",
            "subject": "x",
            "unit_id": str(world.units["bj"].id),
        },
    )
    assert direct.status_code == 422 and direct.json()["type"].endswith("use-privacy-requests")

    # Taking the request assigns the case; fulfilling it closes the case, its clock met.
    request_id = body["id"]
    assert api.post(f"/api/v1/privacy/requests/{request_id}/start", headers=admin).is_success
    taken = api.get(f"/api/v1/cases/{body['case_id']}", headers=admin).json()["case"]
    assert taken["state"] == "in_progress"
    assert taken["assignee_id"] == str(world.people["admin"].id)
    done = api.post(f"/api/v1/privacy/requests/{request_id}/fulfil", headers=admin, json={})
    assert done.status_code == 200, done.text
    closed = api.get(f"/api/v1/cases/{body['case_id']}", headers=admin).json()
    assert closed["case"]["state"] == "closed" and closed["case"]["next_due_at"] is None
    assert closed["clocks"][0]["status"] == "met"
    with database.tenant_session(world.id) as s:
        actions = [
            e.action
            for e in s.scalars(
                select(CaseEvent)
                .where(CaseEvent.case_id == uuid.UUID(body["case_id"]))
                .order_by(CaseEvent.seq)
            )
        ]
    assert actions == [None, "start", "fulfil"]


def test_an_overdue_request_is_reminded_escalated_and_in_the_digest(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "dsr-late")
    admin = auth(person_token(world, "admin"))
    received = utcnow() - dt.timedelta(days=40)  # 15 working days have passed
    late = _register(api, admin, world, "deletion", received_at=received.isoformat())
    assert late["overdue"] is True
    withdrawn = _register(api, admin, world, "copy", received_at=received.isoformat())
    assert api.post(
        f"/api/v1/privacy/requests/{withdrawn['id']}/withdraw", headers=admin
    ).is_success
    now = utcnow()
    send_reminders(database, now)
    escalate_breaches(database, now)
    reminded = {p["case_id"] for p in _outbox(database, world, "deadline.reminder")}
    breached = {p["case_id"] for p in _outbox(database, world, "deadline.breached")}
    # The reminder time had passed with the deadline: the sweep cancels it, the breach goes out.
    assert late["case_id"] in breached and withdrawn["case_id"] not in breached
    assert withdrawn["case_id"] not in reminded
    with database.tenant_session(world.id) as s:
        clocks = {
            str(c.case_id): c.status
            for c in s.scalars(
                select(CaseClock).where(
                    CaseClock.case_id.in_(
                        [uuid.UUID(late["case_id"]), uuid.UUID(withdrawn["case_id"])]
                    )
                )
            )
        }
        case = s.get_one(Case, (world.id, uuid.UUID(withdrawn["case_id"])))
    assert clocks == {late["case_id"]: "running", withdrawn["case_id"]: "cancelled"}
    assert case.state == "closed"
    slot = now.replace(hour=0, minute=0, second=0, microsecond=0)
    daily_digest(JobContext(database, None, slot, now))
    digests = _outbox(database, world, "digest.daily")
    numbers = {c["number"] for d in digests for c in d["cases"]}
    late_number = api.get(f"/api/v1/cases/{late['case_id']}", headers=admin).json()["case"]
    assert late_number["number"] in numbers


def test_a_request_is_reminded_at_its_share_of_the_period(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "dsr-remind")
    admin = auth(person_token(world, "admin"))
    body = _register(api, admin, world, "correction")
    with database.tenant_session(world.id) as s:
        reminder = s.scalars(
            select(ClockReminder).where(ClockReminder.case_id == uuid.UUID(body["case_id"]))
        ).one()
        remind_at = reminder.remind_at
    assert remind_at < _at(body["due_at"])
    send_reminders(database, remind_at + dt.timedelta(minutes=1))
    reminded = [p for p in _outbox(database, world, "deadline.reminder")]
    assert [p["case_id"] for p in reminded] == [body["case_id"]]
    assert reminded[0]["clock"]["name"] == "dsr.response"
