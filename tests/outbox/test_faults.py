"""Faults: the broker down while events pile up, a worker killed mid-batch, a rollback.

Each proves what the recipient sees: every notification arrives, and a deduplicating
receiver (keyed on ``webhook-id``, the delivery id) keeps exactly one of each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select

from core.db import Database
from core.notifications.models import Delivery
from core.outbox import emit
from core.outbox.models import OutboxEvent
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import TcpProxy, WebhookSink, local_channels, wait_until

pytestmark = pytest.mark.slow

EVENT = "case.note_added"  # not in the routing table: integrators' endpoints only


def emit_many(db: Database, tenant_id: uuid.UUID, count: int, per_tx: int = 100) -> list[uuid.UUID]:
    """``count`` events in transactions of ``per_tx``; returns their ids."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, per_tx):
        with db.tenant_transaction(tenant_id) as session:
            for n in range(start, min(count, start + per_tx)):
                row_id = emit(session, EVENT, {"n": n})
                assert row_id is not None
                ids.append(row_id)
    return ids


def statuses(db: Database, tenant_id: uuid.UUID, event_type: str | None = None) -> dict[str, int]:
    """Outbox rows of the tenant by status (of ``event_type`` only, when given: the tenant's
    factory set-up emits other events, e.g. ``plugin.settings_changed``)."""
    stmt = select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
    if event_type is not None:
        stmt = stmt.where(OutboxEvent.event_type == event_type)
    with db.tenant_session(tenant_id) as session:
        return dict(session.execute(stmt).all())  # type: ignore[arg-type]


def sent_deliveries(db: Database, tenant_id: uuid.UUID) -> list[Delivery]:
    """The tenant's webhook deliveries."""
    with db.tenant_session(tenant_id) as session:
        return list(session.scalars(select(Delivery).where(Delivery.event_type == EVENT)).all())


def test_a_broker_outage_delays_1000_notifications_and_loses_none(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    webhooks: WebhookSink,
    require_rabbitmq: str,
    namespace: str,
) -> None:
    proxy = TcpProxy(5672)  # the relay's way to RabbitMQ; starts down
    channels = local_channels(None, webhooks)
    relay = BackgroundRuntime(
        bg_settings,
        bg_db,
        RuntimeOptions(
            broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
            namespace=namespace,
            consume=False,
            poll_interval=0.05,
        ),
        channels=channels,
    )
    relay.relay.max_backoff = 0.5
    relay.relay.tenant_ids = frozenset({world.id})
    worker = BackgroundRuntime(
        bg_settings,
        bg_db,
        RuntimeOptions(
            broker_url=require_rabbitmq, namespace=namespace, relay=False, worker_threads=8
        ),
        channels=channels,
    )
    with worker, relay:
        ids = emit_many(bg_db, world.id, 1000)
        wait_until(lambda: relay.relay.stats.broker_errors >= 3)
        assert statuses(bg_db, world.id, EVENT) == {"pending": 1000}
        assert webhooks.received == []

        proxy.up()
        wait_until(lambda: len(webhooks.of(EVENT)) >= 1000, timeout=120)
        wait_until(lambda: statuses(bg_db, world.id, EVENT) == {"done": 1000}, timeout=60)
        time.sleep(0.5)  # anything sent twice would arrive now
    proxy.down()
    received = webhooks.of(EVENT)
    counts = Counter(h.id for h in received)
    assert len(counts) == 1000 and max(counts.values()) == 1  # all delivered, none twice
    assert all(h.verified for h in received)
    assert {h.json["data"]["payload"]["n"] for h in received} == set(range(1000))
    rows = sent_deliveries(bg_db, world.id)
    assert {r.outbox_id for r in rows} == set(ids)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}


def test_a_worker_killed_mid_batch_loses_nothing_and_the_recipient_sees_each_once(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    webhooks: WebhookSink,
    require_rabbitmq: str,
    namespace: str,
) -> None:
    webhooks.delay = 0.02  # slow receiver: the worker is always in the middle of something
    env = {
        **os.environ,
        "INSURDESK_DATABASE_URL": bg_settings.effective_database_url,
        "INSURDESK_ADMIN_DATABASE_URL": bg_settings.effective_admin_database_url,
        "INSURDESK_BROKER_URL": require_rabbitmq,
        "INSURDESK_LOG_LEVEL": "WARNING",
        "TEST_NAMESPACE": namespace,
        "TEST_WEBHOOK_URL": webhooks.url,
        "TEST_WEBHOOK_SECRET": webhooks.secret,
        "TEST_LEASE_SECONDS": "2",
    }

    def start_worker() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox.worker_process"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "worker ready":
                # Keep reading its output so that its logging never blocks on a full pipe.
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc
        raise AssertionError(f"the worker process exited: {proc.wait()}")

    relay = BackgroundRuntime(
        bg_settings,
        bg_db,
        RuntimeOptions(
            broker_url=require_rabbitmq, namespace=namespace, consume=False, poll_interval=0.05
        ),
        channels=local_channels(None, webhooks),
    )
    relay.relay.tenant_ids = frozenset({world.id})
    first = start_worker()
    try:
        with relay:
            ids = emit_many(bg_db, world.id, 300)
            wait_until(lambda: len(webhooks.of(EVENT)) >= 80, timeout=60)
            first.send_signal(signal.SIGKILL)  # mid-batch: messages prefetched, sends in flight
            first.wait(timeout=10)
            at_kill = len(webhooks.of(EVENT))
            assert at_kill < 300
            second = start_worker()
            try:
                wait_until(lambda: len(webhooks.unique_ids(EVENT)) >= 300, timeout=120)
                wait_until(
                    lambda: (
                        all(r.status == "sent" for r in sent_deliveries(bg_db, world.id))
                        and len(sent_deliveries(bg_db, world.id)) == 300
                    ),
                    timeout=60,
                )
                time.sleep(1)
            finally:
                second.terminate()
                second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    rows = sent_deliveries(bg_db, world.id)
    assert {r.outbox_id for r in rows} == set(ids)
    # As the recipient sees it: each delivery id exactly once after deduplication, all there.
    assert webhooks.unique_ids(EVENT) == {str(r.id) for r in rows}
    duplicates = len(webhooks.of(EVENT)) - len(webhooks.unique_ids(EVENT))
    print(f"killed after {at_kill} of 300 received; resent with the same id: {duplicates}")
    # Only messages the worker had begun can reach the receiver twice, with the same id:
    # sends of a message are recorded together, so at most threads x message size.
    assert duplicates <= 4 * 20  # TEST_THREADS x RuntimeOptions.message_size
    assert statuses(bg_db, world.id, EVENT) == {"done": 300}


def test_a_rolled_back_transaction_sends_nothing(
    bg_db: Database, bg_settings: Settings, world: TenantWorld, webhooks: WebhookSink
) -> None:
    case = world.cases["bj"]
    runtime = BackgroundRuntime(
        bg_settings,
        bg_db,
        RuntimeOptions(broker_url="", poll_interval=0.05),
        channels=local_channels(None, webhooks),
    )
    runtime.relay.tenant_ids = frozenset({world.id})
    with runtime:
        # The tenant's own set-up events (its factory's plugin.settings_changed) go first, so
        # that nothing else is pending or in flight while the transaction below is open.
        wait_until(lambda: not {"pending", "dispatched"} & set(statuses(bg_db, world.id)))
        before = statuses(bg_db, world.id)
        with pytest.raises(RuntimeError), bg_db.tenant_transaction(world.id) as session:
            emit(session, "case.created", {"case_id": case.id})
            session.flush()
            assert runtime.relay.run_once() == 0  # uncommitted: invisible to the relay
            raise RuntimeError("the request failed after emitting")
        # A committed event afterwards goes through, so the worker was really running.
        with bg_db.tenant_transaction(world.id) as session:
            emit(session, EVENT, {"n": 1})
        wait_until(lambda: len(webhooks.of(EVENT)) == 1)
        time.sleep(0.5)
    # Only the committed event arrived (besides the factory's plugin set-up events).
    assert [h.type for h in webhooks.received if h.type != "plugin.settings_changed"] == [EVENT]
    after = statuses(bg_db, world.id)
    assert sum(after.values()) == sum(before.values()) + 1
