"""The webhook worker: fan-out, retries with backoff, dead letters, replay, leases, and the
SSRF guard at connection time (DNS rebinding). On the background tests' own database, so no
live server's worker takes the rows."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from core.auth.guards import Access, Grant
from core.auth.principal import Principal
from core.db import Database, new_id, utcnow
from core.outbox.models import OutboxEvent, OutboxStatus
from core.outbox.processing import Defer, EventView, Processor
from core.webhooks import services
from core.webhooks.delivery import WebhookDispatcher, with_webhooks
from core.webhooks.models import WebhookDelivery, WebhookSubscription
from core.webhooks.services import SEND_EVENT
from core.webhooks.signing import generate_secret
from core.webhooks.urls import AddressRefused, check_url, guarded_client, is_public
from tests.factories import TenantWorld, make_tenant
from tests.integrators.receiver import Receiver, running_receiver
from tests.outbox import fixtures

bg_settings = fixtures.bg_settings
"""Settings of the background tests' own database (both backends)."""
bg_db = fixtures.bg_db
"""The background tests' database."""


@pytest.fixture
def tenant(bg_db: Database) -> TenantWorld:
    """A fresh tenant in the background database."""
    return make_tenant(bg_db, "wh")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on a loopback port."""
    with running_receiver() as sink:
        yield sink


def subscription(
    db: Database, world: TenantWorld, url: str, receiver: Receiver | None
) -> uuid.UUID:
    """A subscription to every event, straight into the database."""
    secret = generate_secret()
    if receiver is not None:
        receiver.secret = secret
    with db.tenant_transaction(world.id) as session:
        sub = WebhookSubscription(url=url, event_types=["*"], unit_ids=[], secret=secret)
        session.add(sub)
        session.flush()
        return sub.id


def case_created(world: TenantWorld) -> EventView:
    """A ``case.created`` event about the BJ case, as the outbox hands it over."""
    case = world.cases["bj"]
    return EventView(
        tenant_id=world.id,
        id=new_id(),
        event_type="case.created",
        payload={"case_id": str(case.id), "number": case.number, "type": "complaint"},
        created_at=utcnow(),
        attempts=1,
    )


def drain(db: Database, world: TenantWorld, processor: Processor, timeout: float = 15.0) -> None:
    """Run every due ``webhook.send`` outbox row of the tenant until none is left open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.tenant_session(world.id) as session:
            rows = session.execute(
                select(OutboxEvent.id, OutboxEvent.available_at).where(
                    OutboxEvent.event_type == SEND_EVENT,
                    OutboxEvent.status == OutboxStatus.PENDING.value,
                )
            ).all()
        if not rows:
            return
        due = [i for i, at in rows if at <= utcnow()]
        if due:
            processor.process_many(world.id, due)
        else:
            time.sleep(0.02)
    raise AssertionError("webhook.send events still pending")


def dispatcher_for(db: Database, **kwargs: object) -> tuple[WebhookDispatcher, Processor]:
    """A dispatcher with fast retries, and the outbox processor that runs it."""
    options: dict[str, object] = {"allow_private": True, "backoff_base": 0.05, "backoff_cap": 0.2}
    options.update(kwargs)
    dispatcher = WebhookDispatcher(db, **options)  # type: ignore[arg-type]
    processor = Processor(
        db,
        handlers={SEND_EVENT: dispatcher.handle_send},
        batch_default=with_webhooks(lambda events: dict.fromkeys(e.id for e in events), dispatcher),
    )
    return dispatcher, processor


def delivery_rows(db: Database, world: TenantWorld) -> list[WebhookDelivery]:
    """The tenant's deliveries (fixture rows aside: those are dead and unsubscribed)."""
    with db.tenant_session(world.id) as session:
        return [
            d
            for d in session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
            if d.event_type != "case.created" or d.body != "{}"
        ]


def test_fan_out_then_retries_with_backoff_until_sent(
    bg_db: Database, tenant: TenantWorld, receiver: Receiver
) -> None:
    subscription(bg_db, tenant, receiver.url, receiver)
    receiver.statuses = [500, 503]
    dispatcher, processor = dispatcher_for(bg_db)
    event = case_created(tenant)
    assert dispatcher.fan_out([event]) == {event.id: None}
    assert dispatcher.fan_out([event]) == {event.id: None}  # a redelivered event adds nothing
    drain(bg_db, tenant, processor)
    [row] = delivery_rows(bg_db, tenant)
    assert row.status == "sent" and row.attempts == 3
    assert [h["status_code"] for h in row.history] == [500, 503, 204]
    got = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in got}) == 1  # one message, tried three times
    assert got[-1].verified and got[-1].json["id"] == str(event.id)
    times = [dt.datetime.fromisoformat(str(h["at"])) for h in row.history]
    assert times[0] < times[1] < times[2]
    dispatcher.close()


def test_dead_after_the_last_attempt_then_replayed(
    bg_db: Database, tenant: TenantWorld, receiver: Receiver
) -> None:
    sub_id = subscription(bg_db, tenant, receiver.url, receiver)
    receiver.statuses = [500, 500, 500]
    dispatcher, processor = dispatcher_for(bg_db, max_attempts=3)
    dispatcher.fan_out([case_created(tenant)])
    drain(bg_db, tenant, processor)
    [row] = delivery_rows(bg_db, tenant)
    assert row.status == "dead" and row.attempts == 3 and row.last_status_code == 500
    with bg_db.tenant_transaction(tenant.id) as session:
        sub = session.get(WebhookSubscription, (tenant.id, sub_id))
        dead = session.get(WebhookDelivery, (tenant.id, row.id))
        caller = services.Caller(_admin_access(tenant))
        services.replay(session, caller, sub, dead)  # type: ignore[arg-type]
    drain(bg_db, tenant, processor)
    [again] = delivery_rows(bg_db, tenant)
    assert again.status == "sent" and again.replays == 1 and again.attempts == 1
    assert receiver.received[-1].headers["webhook-id"] == str(row.id)
    dispatcher.close()


def test_a_crashed_workers_delivery_is_sent_after_its_lease(
    bg_db: Database, tenant: TenantWorld, receiver: Receiver
) -> None:
    subscription(bg_db, tenant, receiver.url, receiver)
    dispatcher, _ = dispatcher_for(bg_db)
    dispatcher.fan_out([case_created(tenant)])
    [row] = delivery_rows(bg_db, tenant)
    send = EventView(tenant.id, new_id(), SEND_EVENT, {"delivery_id": str(row.id)}, utcnow(), 1)
    with bg_db.tenant_transaction(tenant.id) as session:  # another worker holds it
        held = session.get(WebhookDelivery, (tenant.id, row.id))
        assert held is not None
        held.status, held.attempts = "sending", 1
        held.lease_until = utcnow() + dt.timedelta(minutes=1)
    with pytest.raises(Defer):
        dispatcher.handle_send(send)
    with bg_db.tenant_transaction(tenant.id) as session:  # ... and died
        held = session.get(WebhookDelivery, (tenant.id, row.id))
        assert held is not None
        held.lease_until = utcnow() - dt.timedelta(seconds=1)
    dispatcher.handle_send(send)
    [done] = delivery_rows(bg_db, tenant)
    assert done.status == "sent" and done.attempts == 2
    assert receiver.wait_for(1)[0].headers["webhook-id"] == str(row.id)
    dispatcher.close()


def test_subscribers_can_subscribe_to_plugin_settings_changes(
    bg_db: Database, tenant: TenantWorld, receiver: Receiver
) -> None:
    from core.orgs.services import get_unit
    from core.plugins import services as plugin_services
    from core.plugins.registry import build_registry

    secret = generate_secret()
    receiver.secret = secret
    with bg_db.tenant_transaction(tenant.id) as session:
        session.add(
            WebhookSubscription(
                url=receiver.url,
                event_types=["plugin.settings_changed"],
                unit_ids=[],
                secret=secret,
            )
        )
    with bg_db.tenant_transaction(tenant.id) as session:
        plugin_services.set_settings(
            session,
            build_registry(),
            plugin="branch_policy",
            unit=get_unit(session, tenant.units["bj"].id),
            settings={"escalation_contacts": ["duty@bj.example.com"]},
            actor=plugin_services.Actor("person:admin"),
        )
    with bg_db.tenant_session(tenant.id) as session:
        row = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.event_type == "plugin.settings_changed")
            .order_by(OutboxEvent.created_at.desc(), OutboxEvent.id.desc())
            .limit(1)
        ).one()
        event = EventView.of(row)
    dispatcher, processor = dispatcher_for(bg_db)
    other = case_created(tenant)
    assert dispatcher.fan_out([event, other]) == {event.id: None, other.id: None}
    drain(bg_db, tenant, processor)
    [got] = receiver.wait_for(1)
    assert got.verified and got.json["type"] == "plugin.settings_changed"
    data = got.json["data"]
    assert (data["plugin"], data["unit"], data["changed"]) == (
        "branch_policy",
        "BJ",
        ["$.escalation_contacts"],
    )
    assert "duty@bj.example.com" not in got.body.decode()  # keys, never values
    [row_sent] = [d for d in delivery_rows(bg_db, tenant) if d.status == "sent"]
    assert row_sent.event_type == "plugin.settings_changed"  # case.created: not subscribed
    dispatcher.close()


def test_a_private_address_is_refused_when_connecting(
    bg_db: Database, tenant: TenantWorld, receiver: Receiver
) -> None:
    # a subscription that predates the rule, or a host whose DNS now points inside
    subscription(bg_db, tenant, receiver.url, receiver)
    dispatcher, processor = dispatcher_for(bg_db, allow_private=False)
    dispatcher.fan_out([case_created(tenant)])
    drain(bg_db, tenant, processor)
    [row] = delivery_rows(bg_db, tenant)
    assert row.status == "dead" and row.attempts == 1  # permanent: not retried
    assert "non-public address" in (row.last_error or "")
    assert receiver.received == []
    dispatcher.close()


def test_dns_rebinding_is_caught_at_connect_time(receiver: Receiver) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    # the subscription check sees a public address ...
    check_url(
        "http://hooks.example.com/x", https_only=False, allow_private=False, resolver=rebinding
    )
    # ... the connection gets another answer, and is refused before any byte is sent
    with (
        guarded_client(allow_private=False, resolver=rebinding) as client,
        pytest.raises(AddressRefused),
    ):
        client.post(f"http://hooks.example.com:{receiver.port}/x", content=b"{}")
    mixed = guarded_client(allow_private=False, resolver=lambda h, p: ["8.8.8.8", "10.0.0.5"])
    with mixed, pytest.raises(AddressRefused):
        mixed.post("http://hooks.example.com/x", content=b"{}")
    # allowed when the platform says so: it connects to the checked address
    local = guarded_client(allow_private=True, resolver=lambda h, p: ["127.0.0.1"])
    with local:
        assert local.post(f"http://hooks.example.com:{receiver.port}/x").status_code == 401
    assert receiver.received[-1].headers["host"] == f"hooks.example.com:{receiver.port}"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_what_counts_as_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def _admin_access(world: TenantWorld) -> Access:
    principal = Principal(
        tenant_id=world.id,
        subject="fixture",
        kind="client",
        scopes=frozenset({"webhooks:admin", "cases:read"}),
        client_id="fixture.client",
    )
    return Access(principal, [Grant(world.units["group"].path, principal.scopes)])


def test_http_errors_are_retryable_not_permanent(bg_db: Database, receiver: Receiver) -> None:
    dispatcher = WebhookDispatcher(bg_db, allow_private=True)
    receiver.statuses = [410]  # a real receiver answering 410 Gone
    from core.webhooks.delivery import _Claim

    result = dispatcher._post(_Claim(new_id(), 1, receiver.url, b"{}", (generate_secret(),)))
    assert result.status_code == 410 and not result.permanent and not result.ok
    dispatcher.close()
