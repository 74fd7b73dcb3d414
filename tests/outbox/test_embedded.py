"""The embedded default: StubBroker and an in-process worker, end to end."""

from __future__ import annotations

import time

from sqlalchemy import select

from core.db import Database
from core.notifications.models import Delivery
from core.outbox import emit
from core.outbox.models import OutboxEvent
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, local_channels, must_get, wait_until


def test_a_case_event_is_delivered_once_per_recipient_and_channel(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    smtp: SmtpSink,
    webhooks: WebhookSink,
) -> None:
    case = world.cases["bj"]
    with bg_db.tenant_transaction(world.id) as session:
        event_id = emit(session, "case.created", {"case_id": case.id})
    options = RuntimeOptions(broker_url="", poll_interval=0.05, worker_threads=2)
    with BackgroundRuntime(bg_settings, bg_db, options, channels=local_channels(smtp, webhooks)):
        wait_until(lambda: len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1)
        with bg_db.tenant_session(world.id) as session:
            wait_until(lambda: must_get(session, OutboxEvent, world.id, event_id).status == "done")
        time.sleep(0.5)  # a second copy of anything would arrive now
    assert len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1  # none twice
    with bg_db.tenant_session(world.id) as session:
        rows = session.scalars(select(Delivery).where(Delivery.outbox_id == event_id)).all()
    assert sorted((r.audience, r.channel, r.status) for r in rows) == [
        ("customer", "email", "sent"),
        ("endpoint", "webhook", "sent"),
        ("handler", "email", "sent"),
    ]
    assert sorted(r for m in smtp.messages for r in m.rcpt) == sorted(
        [
            f"agent_bj@{world.tenant.slug}.example.com",
            f"customer.bj@{world.tenant.slug}.example.com",
        ]
    )
    hook = webhooks.of("case.created")[0]
    assert hook.verified
    assert hook.json["type"] == "case.created"
    assert {r.recipient_masked for r in rows if r.channel == "email"} == {
        f"a***@{world.tenant.slug}.example.com",
        f"c***@{world.tenant.slug}.example.com",
    }
