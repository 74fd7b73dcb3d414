"""Consent: recorded with purpose, channel, time and notice version, withdrawn, and enforced:
a marketing message to a customer without marketing consent is not sent, and the delivery log
says why."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import select

from core.audit import AuditActor
from core.audit.models import AuditEntry
from core.db import Database, utcnow
from core.privacy.consent import has_consent, record_consent
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld
from tests.notifications.test_delivery import deliveries, new_event, notifier
from tests.outbox.fixtures import SmtpSink, WebhookSink

ACTOR = AuditActor("person", "person:agent_bj")


def _consent(db: Database, world: TenantWorld, given: bool, minutes_ago: int) -> None:
    with db.tenant_transaction(world.id) as s:
        record_consent(
            s,
            customer_id=world.customers["bj"].id,
            purpose="marketing",
            given=given,
            channel="phone",
            notice_version="2026-01",
            at=utcnow() - dt.timedelta(minutes=minutes_ago),
            actor=ACTOR,
        )


def test_marketing_without_consent_is_not_sent_and_the_reason_is_logged(
    bg_db: Database, world: TenantWorld, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks, smtp)
    customer = str(world.customers["bj"].id)
    offer = new_event(bg_db, world, "marketing.campaign", customer_id=customer, title="续保优惠")
    n.handle_event(offer)
    (row,) = deliveries(bg_db, world, offer.id)
    assert (row.audience, row.status) == ("customer", "skipped")
    assert "not consented to marketing" in (row.last_error or "")
    assert not [m for m in smtp.messages if m.rcpt[0].startswith("customer.bj")]


def test_marketing_with_consent_is_sent_until_it_is_withdrawn(
    bg_db: Database, world: TenantWorld, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks, smtp)
    customer = str(world.customers["bj"].id)
    _consent(bg_db, world, True, minutes_ago=10)
    sent = new_event(bg_db, world, "marketing.campaign", customer_id=customer, title="新品")
    n.handle_event(sent)
    (row,) = deliveries(bg_db, world, sent.id)
    assert (row.channel, row.status) == ("email", "sent")
    _consent(bg_db, world, False, minutes_ago=1)
    with bg_db.tenant_session(world.id) as s:
        assert not has_consent(s, world.customers["bj"].id, "marketing")
    after = new_event(bg_db, world, "marketing.campaign", customer_id=customer, title="又一次")
    n.handle_event(after)
    (row,) = deliveries(bg_db, world, after.id)
    assert row.status == "skipped" and "withdrew" in (row.last_error or "")
    # Service messages need no marketing consent.
    service = new_event(
        bg_db,
        world,
        "case.materials_missing",
        case_id=str(world.cases["bj"].id),
        materials=["保单"],
    )
    n.handle_event(service)
    assert ("customer", "sent") in {
        (d.audience, d.status) for d in deliveries(bg_db, world, service.id)
    }


def test_consents_over_http(
    api: httpx.Client,
    database: Database,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    url = f"/api/v1/customers/{tenant_a.customers['bj'].id}/consents"
    given = api.post(
        url,
        headers=agent,
        json={
            "purpose": "marketing",
            "given": True,
            "channel": "phone",
            "notice_version": "2026-01",
            "evidence": "call-20260301-0042",
        },
    )
    assert given.status_code == 201, given.text
    withdrawn = api.post(
        url,
        headers=agent,
        json={
            "purpose": "marketing",
            "given": False,
            "channel": "app",
            "notice_version": "2026-01",
        },
    )
    assert withdrawn.status_code == 201
    listed = api.get(url, headers=agent).json()
    assert listed["current"]["marketing"]["given"] is False
    assert [(e["given"], e["channel"]) for e in listed["history"]] == [
        (True, "phone"),
        (False, "app"),
    ]
    assert listed["history"][0]["recorded_by"] == "person:agent_bj"
    bad = api.post(
        url,
        headers=agent,
        json={"purpose": "curiosity", "given": True, "channel": "phone", "notice_version": "1"},
    )
    assert bad.status_code == 422
    # Another branch's agent and another tenant see nothing (404).
    sh = auth(person_token(tenant_a, "agent_sh"))
    assert api.get(url, headers=sh).status_code == 404
    other = auth(person_token(tenant_b, "admin"))
    assert api.get(url, headers=other).status_code == 404
    with database.tenant_session(tenant_a.id) as s:
        actions = [
            e.action
            for e in s.scalars(
                select(AuditEntry)
                .where(AuditEntry.target_id == str(tenant_a.customers["bj"].id))
                .order_by(AuditEntry.seq)
            )
        ]
    assert actions[-2:] == ["consent.given", "consent.withdrawn"]
