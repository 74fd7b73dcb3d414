"""The embedded default as ``serve`` runs it: the app's lifespan starts the relay, the worker
and the scheduler, and the channels come from the plugins the tenant enabled."""

from __future__ import annotations

from dataclasses import replace

from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient
from sqlalchemy import select

from core.db import Database
from core.notifications.models import Delivery
from core.outbox import emit
from core.outbox.embedded import embedded_lifespans
from core.outbox.runtime import BackgroundRuntime
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from core.plugins.services import Actor, enable_plugin, set_settings
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, wait_until


def enable_channels(
    db: Database, host: PluginHost, world: TenantWorld, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    """Enable ``email_smtp`` and ``webhook`` at the tenant's group unit, set for the sinks."""
    actor = Actor("test")
    with db.tenant_transaction(world.id) as session:
        group = world.units["group"]
        for plugin, settings in (("email_smtp", smtp.settings()), ("webhook", webhooks.settings())):
            set_settings(
                session, host.registry, plugin=plugin, unit=group, settings=settings, actor=actor
            )
            enable_plugin(session, host.registry, plugin=plugin, unit=group, actor=actor)


def test_serve_runs_the_background_work_in_process_with_the_plugins_channels(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    smtp: SmtpSink,
    webhooks: WebhookSink,
) -> None:
    host = PluginHost(build_registry(), bg_db)
    enable_channels(bg_db, host, world, smtp, webhooks)
    app = Litestar(
        route_handlers=[],
        lifespan=embedded_lifespans(bg_settings, bg_db),
        state=State({"plugins": host}),
    )
    with TestClient(app):
        runtime = app.state["background"]
        assert isinstance(runtime, BackgroundRuntime)
        assert runtime.broker.kind == "stub" and runtime.scheduler is not None
        with bg_db.tenant_transaction(world.id) as session:
            event_id = emit(session, "case.created", {"case_id": world.cases["bj"].id})
        wait_until(lambda: len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1)
    assert all(t.is_alive() is False for t in runtime._threads)
    with bg_db.tenant_session(world.id) as session:
        rows = session.scalars(select(Delivery).where(Delivery.outbox_id == event_id)).all()
    assert sorted((r.channel, r.status) for r in rows) == [
        ("email", "sent"),
        ("email", "sent"),
        ("webhook", "sent"),
    ]
    assert webhooks.of("case.created")[0].verified
    host.close()


def test_with_a_broker_url_serve_runs_no_background_work(
    bg_settings: Settings, bg_db: Database
) -> None:
    settings = replace(bg_settings, broker_url="amqp://guest:guest@127.0.0.1:5672/%2F")
    assert embedded_lifespans(settings, bg_db) == []
