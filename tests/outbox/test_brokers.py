"""A case event through each broker (RabbitMQ, Redis, embedded): one delivery per recipient
and channel, received by a real SMTP server and a real webhook receiver."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from core.db import Database
from core.notifications.models import Delivery
from core.outbox import emit
from core.outbox.broker import broker_kind, is_embedded, make_broker, queue_depth
from core.outbox.models import OutboxEvent
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, local_channels, must_get, wait_until


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("", "stub"),
        ("stub", "stub"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "rabbitmq"),
        ("redis://127.0.0.1:6379/0", "redis"),
    ],
)
def test_the_broker_url_selects_the_broker(url: str, kind: str) -> None:
    assert broker_kind(url) == kind
    assert is_embedded(url) == (kind == "stub")


def test_an_unknown_scheme_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="INSURDESK_BROKER_URL"):
        broker_kind("kafka://localhost")


@pytest.fixture(params=["rabbitmq", "redis", "stub"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each broker in turn (RabbitMQ and Redis are the services of this machine)."""
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("require_rabbitmq"))
    if request.param == "redis":
        return str(request.getfixturevalue("require_redis"))
    return ""


def test_a_case_event_reaches_each_recipient_once_through_the_broker(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    smtp: SmtpSink,
    webhooks: WebhookSink,
    broker_url: str,
    namespace: str,
) -> None:
    case = world.cases["bj"]
    with bg_db.tenant_transaction(world.id) as session:
        event_id = emit(session, "case.created", {"case_id": case.id})
    options = RuntimeOptions(
        broker_url=broker_url, namespace=namespace, poll_interval=0.05, worker_threads=2
    )
    runtime = BackgroundRuntime(
        bg_settings, bg_db, options, channels=local_channels(smtp, webhooks)
    )
    with runtime:
        wait_until(lambda: len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1)
        with bg_db.tenant_session(world.id) as session:
            wait_until(lambda: must_get(session, OutboxEvent, world.id, event_id).status == "done")
        assert queue_depth(runtime.broker) == 0
        time.sleep(0.5)  # a second copy of anything would arrive now
    # As the recipients see it: two e-mails and one webhook, none twice.
    assert len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1
    with bg_db.tenant_session(world.id) as session:
        rows = session.scalars(select(Delivery).where(Delivery.outbox_id == event_id)).all()
    # Exactly one delivery per recipient and channel, all sent, visible in the log.
    assert sorted((r.audience, r.channel, r.status, r.attempts) for r in rows) == [
        ("customer", "email", "sent", 1),
        ("endpoint", "webhook", "sent", 1),
        ("handler", "email", "sent", 1),
    ]
    # The e-mails carry the delivery id in their Message-ID; the webhook in webhook-id.
    assert len({m.message_id for m in smtp.messages}) == 2
    assert all("【" in m.subject for m in smtp.messages)
    hook = webhooks.of("case.created")[0]
    assert hook.verified
    assert hook.id == str(next(r.id for r in rows if r.channel == "webhook"))
    assert hook.json["data"]["payload"]["case_id"] == str(case.id)


def test_queue_depth_counts_messages_waiting(require_rabbitmq: str, namespace: str) -> None:
    from core.outbox.relay import BrokerPublisher

    handle = make_broker(require_rabbitmq, namespace=namespace)
    try:
        publisher = BrokerPublisher(handle)
        import uuid

        for _ in range(3):
            publisher.publish(uuid.uuid4(), [uuid.uuid4()])
        assert queue_depth(handle) == 3
    finally:
        handle.close()
