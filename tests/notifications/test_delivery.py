"""Delivery: exactly once per recipient and channel, retries with backoff, dead letters,
a redelivered message, a worker that died holding a delivery."""

from __future__ import annotations

import datetime as dt
import random
import uuid

from sqlalchemy import select, update

from core.db import Database, utcnow
from core.notifications.delivery import Notifier, retry_delivery
from core.notifications.models import Delivery
from core.notifications.planner import Planner
from core.notifications.transports import Transports
from core.outbox import emit
from core.outbox.backoff import backoff_delay
from core.outbox.models import OutboxEvent
from core.outbox.processing import EventView, Processor
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, local_channels, must_get

EVENT = "case.note_added"  # endpoints only: one webhook delivery per event


def notifier(
    db: Database, webhooks: WebhookSink | None, smtp: SmtpSink | None = None, **kwargs: object
) -> Notifier:
    """A notifier with the real channels pointed at the local receivers."""
    return Notifier(db, Planner(local_channels(smtp, webhooks)), Transports(), **kwargs)  # type: ignore[arg-type]


def processor(n: Notifier) -> Processor:
    """The outbox processor as the worker builds it."""
    return Processor(n.db, handlers={"delivery.retry": n.handle_retry}, default=n.handle_event)


def new_event(
    db: Database, world: TenantWorld, event_type: str = EVENT, **payload: object
) -> EventView:
    """Emit and commit an event; return its view."""
    with db.tenant_transaction(world.id) as session:
        outbox_id = emit(session, event_type, payload)
        return EventView.of(must_get(session, OutboxEvent, world.id, outbox_id))


def deliveries(db: Database, world: TenantWorld, outbox_id: uuid.UUID) -> list[Delivery]:
    """The delivery log of an event."""
    with db.tenant_session(world.id) as session:
        return list(session.scalars(select(Delivery).where(Delivery.outbox_id == outbox_id)))


def retry_events(db: Database, world: TenantWorld) -> list[OutboxEvent]:
    """The tenant's scheduled ``delivery.retry`` rows, oldest first."""
    with db.tenant_session(world.id) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type == "delivery.retry")
                .order_by(OutboxEvent.created_at)
            )
        )


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        delay = backoff_delay(attempt, base=30, cap=3600, rng=rng).total_seconds()
        ceiling = min(3600, 30 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    draws = {backoff_delay(3, base=30, rng=rng) for _ in range(20)}
    assert len(draws) > 10  # jitter: retries of many deliveries spread out


def test_a_redelivered_message_sends_nothing_twice(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks)
    event = new_event(bg_db, world)
    n.handle_event(event)
    n.handle_event(event)  # the broker delivered the message again, before the row was done
    assert processor(n).process(world.id, event.id) == "skipped"  # a third copy: row is done
    assert len(webhooks.received) == 1
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("sent", 1)


def test_a_failed_delivery_is_retried_with_backoff_and_then_sent(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks, backoff_base=30.0)
    webhooks.fail_with = 503
    event = new_event(bg_db, world)
    before = utcnow()
    n.handle_event(event)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "HTTP 503 from the receiver")
    assert row.next_attempt_at is not None
    assert (
        before + dt.timedelta(seconds=15)
        <= row.next_attempt_at
        <= before + dt.timedelta(seconds=31)
    )
    (retry,) = retry_events(bg_db, world)
    assert retry.available_at == row.next_attempt_at  # the relay holds it back until then

    webhooks.fail_with = None
    assert processor(n).process(world.id, retry.id) == "done"
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert len(webhooks.received) == 1
    assert webhooks.received[0].id == str(row.id)


def test_after_the_last_attempt_a_delivery_is_dead_until_an_admin_retries_it(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks, max_attempts=3)
    webhooks.fail_with = 500
    event = new_event(bg_db, world)
    n.handle_event(event)
    for _ in range(2):
        pending = [r for r in retry_events(bg_db, world) if r.status == "pending"]
        assert len(pending) == 1
        processor(n).process(world.id, pending[0].id)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("dead", 3)
    assert [r for r in retry_events(bg_db, world) if r.status == "pending"] == []

    webhooks.fail_with = None
    with bg_db.tenant_transaction(world.id) as session:
        retry_delivery(session, must_get(session, Delivery, world.id, row.id), actor="person:admin")
    (manual,) = [r for r in retry_events(bg_db, world) if r.status == "pending"]
    processor(n).process(world.id, manual.id)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(webhooks.received) == 1


def test_a_permanent_refusal_is_dead_at_once(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    webhooks.fail_with = 410
    event = new_event(bg_db, world)
    notifier(bg_db, webhooks).handle_event(event)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert retry_events(bg_db, world) == []


def test_a_channel_webhook_to_a_private_address_is_refused_when_connecting(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    # The receiver listens on 127.0.0.1: with production rules the guarded client refuses it
    # at connection time (the same guard as integrators' webhooks), permanently.
    n = Notifier(
        bg_db, Planner(local_channels(None, webhooks)), Transports(allow_private_networks=False)
    )
    event = new_event(bg_db, world)
    n.handle_event(event)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "non-public address" in (row.last_error or "")
    assert webhooks.received == []
    assert retry_events(bg_db, world) == []


def test_a_delivery_held_by_a_dead_worker_is_sent_after_its_lease_with_the_same_id(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    n = notifier(bg_db, webhooks, lease=dt.timedelta(seconds=60))
    event = new_event(bg_db, world)
    # A worker recorded and claimed the delivery, then died before it sent anything.
    with bg_db.tenant_transaction(world.id) as session:
        plan = n.planner.plan(session, event)
        (claimed,) = n._record_and_claim(session, [plan])[event.id]
    n.handle_event(event)  # the message comes back to another worker: the lease still holds
    assert webhooks.received == []
    (check,) = retry_events(bg_db, world)
    (row,) = deliveries(bg_db, world, event.id)
    assert row.status == "sending" and row.lease_until is not None
    assert check.available_at > row.lease_until  # looked at again once the lease is over
    processor(n).process(world.id, check.id)
    assert webhooks.received == []  # still leased: nothing sent, nothing lost
    with bg_db.tenant_transaction(world.id) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == row.id)
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    for retry in [r for r in retry_events(bg_db, world) if r.status == "pending"]:
        processor(n).process(world.id, retry.id)
    (row,) = deliveries(bg_db, world, event.id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [h.id for h in webhooks.received] == [str(claimed.id)]


def test_customers_are_reached_through_their_preferred_channel(
    bg_db: Database, world: TenantWorld, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    from core.customers.models import ContactChannel, Customer

    with bg_db.tenant_transaction(world.id) as session:
        session.execute(
            update(Customer)
            .where(Customer.id == world.customers["sh"].id)
            .values(preferred_channel=ContactChannel.SMS)
        )
    n = notifier(bg_db, webhooks, smtp)
    by_mail = new_event(
        bg_db,
        world,
        "case.materials_missing",
        case_id=str(world.cases["bj"].id),
        materials=["身份证复印件", "保单"],
    )
    by_sms = new_event(
        bg_db,
        world,
        "case.materials_missing",
        case_id=str(world.cases["sh"].id),
        materials=["发票"],
    )
    n.handle_event(by_mail)
    n.handle_event(by_sms)
    mail = {(d.audience, d.channel, d.status) for d in deliveries(bg_db, world, by_mail.id)}
    assert ("customer", "email", "sent") in mail
    (sms,) = [d for d in deliveries(bg_db, world, by_sms.id) if d.audience == "customer"]
    # No SMS channel is enabled: recorded as skipped, with the reason, nothing sent.
    assert (sms.channel, sms.status) == ("phone", "skipped")
    assert "no enabled channel delivers to a phone" in (sms.last_error or "")
    (received,) = [m for m in smtp.messages if m.rcpt[0].startswith("customer.bj")]
    assert "身份证复印件" in received.text and "保单" in received.text


def test_a_message_naming_another_tenants_events_reads_and_changes_none_of_them(
    bg_db: Database, world: TenantWorld, webhooks: WebhookSink
) -> None:
    """The worker reads a message's rows and marks them done with statements of its own (on
    PostgreSQL, joins with ``unnest``): ids of another tenant's events, in a message of this
    tenant, are missing to it, and those events stay as they were."""
    from tests.outbox.fixtures import reachable_world

    other = reachable_world(bg_db, prefix="bg-other")
    mine, theirs = new_event(bg_db, world), new_event(bg_db, other)
    n = notifier(bg_db, webhooks)
    outcome = processor(n).process_many(world.id, [mine.id, theirs.id])
    assert outcome == {mine.id: "done", theirs.id: "missing"}
    with bg_db.platform_session() as session:
        statuses = dict(
            session.execute(
                select(OutboxEvent.id, OutboxEvent.status).where(
                    OutboxEvent.id.in_([mine.id, theirs.id])
                )
            ).all()
        )
    assert statuses == {mine.id: "done", theirs.id: "pending"}
    assert deliveries(bg_db, other, theirs.id) == []
    from core.outbox.services import mark_done

    with bg_db.tenant_transaction(world.id) as session:  # marking by id: the same
        mark_done(session, world.id, [theirs.id])
    with bg_db.platform_session() as session:
        assert session.get(OutboxEvent, (other.id, theirs.id)).status == "pending"  # type: ignore[union-attr]
