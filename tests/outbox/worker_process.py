"""A worker process for the fault tests: consumes outbox messages until it is killed.

Configured by the environment: ``INSURDESK_DATABASE_URL``, ``INSURDESK_ADMIN_DATABASE_URL``,
``INSURDESK_BROKER_URL``, and ``TEST_NAMESPACE``, ``TEST_WEBHOOK_URL``,
``TEST_WEBHOOK_SECRET``, ``TEST_LEASE_SECONDS``, ``TEST_THREADS``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading

from core.db import Database
from core.models import import_all_models
from core.notifications.channels import ResolvedChannel, StaticChannels
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.settings import load_settings
from plugins.webhook import WebhookChannel


def main() -> None:
    """Run a consuming worker until SIGTERM (or SIGKILL, which is the point)."""
    import_all_models()
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    hook = {
        "url": os.environ["TEST_WEBHOOK_URL"],
        "secret": os.environ["TEST_WEBHOOK_SECRET"],
        "events": ["*"],
    }
    channels = StaticChannels([ResolvedChannel(WebhookChannel(hook), "webhook", hook)])
    options = RuntimeOptions(
        relay=False,
        consume=True,
        namespace=os.environ["TEST_NAMESPACE"],
        worker_threads=int(os.environ.get("TEST_THREADS", "4")),
        lease=dt.timedelta(seconds=float(os.environ.get("TEST_LEASE_SECONDS", "2"))),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with BackgroundRuntime(settings, db, options, channels=channels):
        print("worker ready", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
