"""``insurdesk worker``, ``insurdesk worker status`` and the ``dramatiq`` entry module, run as
the operator runs them (subprocesses against a real RabbitMQ)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core.db import Database
from core.outbox import emit
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from core.settings import Settings
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, wait_until
from tests.outbox.test_lifespan import enable_channels

INSURDESK = str(Path(sys.executable).parent / "insurdesk")


def _env(settings: Settings, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
    env.update(
        INSURDESK_DATABASE_URL=settings.effective_database_url,
        INSURDESK_ADMIN_DATABASE_URL=settings.effective_admin_database_url,
        INSURDESK_BROKER_URL=broker_url,
        INSURDESK_LOG_LEVEL="WARNING",
    )
    # The worker must unwrap the same tenant data keys as the test process (issue 7's keys).
    master_key = getattr(settings, "master_key", "")
    if master_key:
        env["INSURDESK_MASTER_KEY"] = master_key
    return env


def test_insurdesk_worker_relays_and_delivers_until_sigterm(
    bg_db: Database,
    bg_settings: Settings,
    world: TenantWorld,
    smtp: SmtpSink,
    webhooks: WebhookSink,
    require_rabbitmq: str,
    namespace: str,
) -> None:
    host = PluginHost(build_registry(), bg_db)
    enable_channels(bg_db, host, world, smtp, webhooks)
    host.close()
    with bg_db.tenant_transaction(world.id) as session:
        emit(session, "case.created", {"case_id": world.cases["bj"].id})
    proc = subprocess.Popen(
        [INSURDESK, "worker", "--namespace", namespace, "--threads", "2"],
        env=_env(bg_settings, require_rabbitmq),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    try:
        wait_until(
            lambda: len(smtp.messages) == 2 and len(webhooks.of("case.created")) == 1, timeout=60
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_insurdesk_worker_refuses_to_run_without_a_broker(bg_settings: Settings) -> None:
    result = subprocess.run(
        [INSURDESK, "worker"],
        env=_env(bg_settings, ""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "INSURDESK_BROKER_URL" in result.stderr


def test_insurdesk_worker_status_prints_the_figures(
    bg_settings: Settings, require_rabbitmq: str, namespace: str
) -> None:
    result = subprocess.run(
        [INSURDESK, "worker", "status", "--namespace", namespace],
        env=_env(bg_settings, require_rabbitmq),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["broker"] == "rabbitmq"
    assert figures["queue"] == f"{namespace}.outbox"
    assert figures["queue_depth"] == 0
    assert set(figures["outbox"]) == {"pending", "dispatched", "done", "failed"}


def test_the_dramatiq_entry_module_declares_the_outbox_actor(
    bg_settings: Settings, require_rabbitmq: str
) -> None:
    code = (
        "import core.outbox.dramatiq_app as app, dramatiq; "
        "assert dramatiq.get_broker() is app.broker; "
        "print(sorted(app.broker.actors), sorted(app.broker.get_declared_queues()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(bg_settings, require_rabbitmq),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "['insurdesk_outbox'] ['insurdesk.outbox']" in result.stdout
