"""Real case events, as the case flows emit them, delivered by the embedded worker through the
channels of the plugins the tenant enabled; and a breach escalated with a branch's plugin
contacts."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import msgspec
import pytest
from sqlalchemy import select, update

from core.auth.guards import load_access
from core.auth.principal import Principal
from core.cases.flows import etag, make_context, register_case, transition
from core.cases.models import Case, CaseClock
from core.cases.schemas import CaseCreate, TransitionIn
from core.cases.storage import LocalStorage
from core.db import Database, utcnow
from core.notifications.models import Delivery
from core.outbox.models import OutboxEvent
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.people.permissions import ALL_PERMISSIONS
from core.people.services import assign_role, create_person, get_role_by_key
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from core.plugins.services import Actor, enable_plugin, set_settings
from core.scheduler.sweeps import escalate_breaches
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, must_get, wait_until
from tests.outbox.test_lifespan import enable_channels


@pytest.fixture
def host(bg_db: Database) -> Iterator[PluginHost]:
    """The real plugins, as the app factory builds them."""
    h = PluginHost(build_registry(), bg_db, listen=False)
    yield h
    h.close()


@pytest.fixture
def runtime(
    bg_db: Database, bg_settings: Settings, host: PluginHost, world: TenantWorld
) -> Iterator[BackgroundRuntime]:
    """The embedded worker (relay limited to this test's tenant)."""
    rt = BackgroundRuntime(
        bg_settings, bg_db, RuntimeOptions(broker_url="", poll_interval=0.05), plugin_host=host
    )
    rt.relay.tenant_ids = frozenset({world.id})
    with rt:
        yield rt


def acting(
    db: Database, world: TenantWorld, host: PluginHost, username: str, tmp: LocalStorage
) -> object:
    """A case-flow context of ``username`` in a new transaction (a context manager)."""
    from contextlib import contextmanager

    @contextmanager
    def _ctx() -> Iterator[object]:
        person = world.people[username]
        with db.tenant_transaction(world.id) as session:
            principal = Principal(
                tenant_id=world.id,
                subject=str(person.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=person.id,
            )
            yield make_context(
                session, load_access(session, principal), plugins=host, storage=tmp, now=utcnow
            )

    return _ctx()


def outbox_ids(
    db: Database, world: TenantWorld, event_type: str, case_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """The tenant's outbox rows of ``event_type`` (about ``case_id``)."""
    with db.tenant_session(world.id) as session:
        rows = session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == event_type))
        return [r.id for r in rows if case_id is None or r.payload.get("case_id") == str(case_id)]


def log_of(db: Database, world: TenantWorld, outbox_id: uuid.UUID) -> set[tuple[str, str, str]]:
    """(audience, channel, status) of an event's deliveries."""
    with db.tenant_session(world.id) as session:
        rows = session.scalars(select(Delivery).where(Delivery.outbox_id == outbox_id)).all()
    return {(r.audience, r.channel, r.status) for r in rows}


def register(db: Database, world: TenantWorld, host: PluginHost, store: LocalStorage) -> uuid.UUID:
    """Register a complaint at BJ through the case flow, handled by agent_bj; its id."""
    data = msgspec.convert(
        {
            "type": "complaint",
            "channel": "hotline",
            "subject": "理赔进度慢",
            "unit_id": str(world.units["bj"].id),
            "customer_id": str(world.customers["bj"].id),
            "policy_id": str(world.policies["bj"].id),
            "category": "claims",
            "assignee_id": str(world.people["agent_bj"].id),
        },
        CaseCreate,
        str_keys=True,
    )
    with acting(db, world, host, "admin", store) as ctx:  # type: ignore[attr-defined]
        return register_case(ctx, data).id


def test_registering_a_complaint_and_asking_for_materials_notify_through_the_plugins(
    bg_db: Database,
    world: TenantWorld,
    host: PluginHost,
    runtime: BackgroundRuntime,
    smtp: SmtpSink,
    webhooks: WebhookSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    enable_channels(bg_db, host, world, smtp, webhooks)
    store = LocalStorage(tmp_path_factory.mktemp("att"))
    case_id = register(bg_db, world, host, store)
    (created,) = outbox_ids(bg_db, world, "case.created", case_id)
    wait_until(
        lambda: (
            log_of(bg_db, world, created)
            == {
                ("handler", "email", "sent"),
                ("customer", "email", "sent"),
                ("endpoint", "webhook", "sent"),
            }
        )
    )
    with acting(bg_db, world, host, "agent_bj", store) as ctx:  # type: ignore[attr-defined]
        case = ctx.session.get(Case, (world.id, case_id))
        asked = TransitionIn(
            action="request_materials",
            notice_channel="email",
            missing_materials=["医疗发票原件", "诊断证明"],
        )
        transition(ctx, case, asked, if_match=etag(case))
    (missing,) = outbox_ids(bg_db, world, "case.materials_missing", case_id)
    wait_until(lambda: ("customer", "email", "sent") in log_of(bg_db, world, missing))
    slug = world.tenant.slug
    to_customer = [m for m in smtp.messages if m.rcpt == [f"customer.bj@{slug}.example.com"]]
    assert len(to_customer) == 2  # the acknowledgement and the materials notice, once each
    assert "医疗发票原件" in to_customer[-1].text and "诊断证明" in to_customer[-1].text
    expected = {"case.created", "case.transitioned", "case.materials_missing"}
    wait_until(lambda: expected <= {h.json["type"] for h in webhooks.received})
    assert len(webhooks.unique_ids()) == len(webhooks.received)  # one per event, none twice
    assert all(h.verified for h in webhooks.received)


def test_a_breach_reaches_the_branchs_escalation_contacts_from_its_plugin(
    bg_db: Database,
    world: TenantWorld,
    host: PluginHost,
    runtime: BackgroundRuntime,
    smtp: SmtpSink,
    webhooks: WebhookSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    enable_channels(bg_db, host, world, smtp, webhooks)
    slug = world.tenant.slug
    with bg_db.tenant_transaction(world.id) as session:
        actor = Actor("test")
        bj = world.units["bj"]
        contacts = {"escalation_contacts": [f"duty@{slug}.example.com"]}
        set_settings(
            session, host.registry, plugin="branch_policy", unit=bj, settings=contacts, actor=actor
        )
        enable_plugin(session, host.registry, plugin="branch_policy", unit=bj, actor=actor)
        manager = create_person(
            session,
            username="manager_co",
            display_name="经理",
            email=f"manager_co@{slug}.example.com",
        )
        role = get_role_by_key(session, "branch_manager")
        assert role is not None
        assign_role(
            session, person_id=manager.id, role_id=role.id, unit_id=world.units["company"].id
        )
    case_id = register(bg_db, world, host, LocalStorage(tmp_path_factory.mktemp("att")))
    wait_until(lambda: "case.created" in {h.json["type"] for h in webhooks.received})
    with bg_db.tenant_transaction(world.id) as session:
        # Its complaint decision clock ran out an hour ago.
        session.execute(
            update(CaseClock)
            .where(CaseClock.case_id == case_id, CaseClock.clock == "complaint.decision")
            .values(due_at=utcnow() - dt.timedelta(hours=1))
        )
    escalate_breaches(bg_db, utcnow(), plugins=host)
    (breach,) = outbox_ids(bg_db, world, "deadline.breached", case_id)
    with bg_db.tenant_session(world.id) as session:
        payload = must_get(session, OutboxEvent, world.id, breach).payload
    assert payload["contacts"] == [f"duty@{slug}.example.com"]
    wait_until(
        lambda: (
            log_of(bg_db, world, breach)
            == {
                ("handler", "email", "sent"),
                ("manager", "email", "sent"),
                ("contact", "email", "sent"),
                ("endpoint", "webhook", "sent"),
            }
        )
    )
    escalated = [m for m in smtp.messages if "超时" in m.subject]
    assert sorted(r for m in escalated for r in m.rcpt) == [
        f"agent_bj@{slug}.example.com",
        f"duty@{slug}.example.com",
        f"manager_co@{slug}.example.com",
    ]
