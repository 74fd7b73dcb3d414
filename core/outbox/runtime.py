"""The background runtime of one process: relay, Dramatiq worker and scheduler, as threads.

``insurdesk worker`` runs the relay and a worker; ``insurdesk scheduler`` the scheduler; the
embedded default (``INSURDESK_BROKER_URL`` empty) runs all three inside ``serve`` on a
:class:`~dramatiq.brokers.stub.StubBroker`. The parts are the same in every mode; only the
broker differs.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import structlog

from core.db import Database
from core.outbox.actors import declare_actor
from core.outbox.broker import DEFAULT_NAMESPACE, BrokerHandle, make_broker
from core.outbox.processing import Processor
from core.outbox.relay import BrokerPublisher, Relay
from core.settings import Settings

log = structlog.get_logger("insurdesk.background")


@dataclass
class RuntimeOptions:
    """What to run and how (defaults suit production).

    :param namespace: queue/key prefix on the broker (one per deployment or test run).
    :param lease: how long a claimed delivery stays reserved (see :mod:`core.notifications`).
    """

    relay: bool = True
    consume: bool = True
    scheduler: bool = False
    worker_threads: int = 8
    namespace: str = DEFAULT_NAMESPACE
    broker_url: str | None = None
    batch_size: int = 500
    message_size: int = 20
    poll_interval: float = 0.1
    redispatch_after: dt.timedelta = dt.timedelta(minutes=5)
    lease: dt.timedelta = dt.timedelta(seconds=120)
    delivery_max_attempts: int = 6
    delivery_backoff_base: float = 30.0
    scheduler_interval: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


def build_processor(
    db: Database,
    settings: Settings,
    options: RuntimeOptions,
    *,
    channels: Any = None,
    plugin_host: Any = None,
) -> tuple[Processor, Callable[[], None]]:
    """The outbox processor with the notification handlers; returns it and its closer.

    :param channels: a :class:`~core.notifications.channels.ChannelSource`; default: the
        channels of the plugins enabled per tenant and unit (through ``plugin_host``, built
        here when not given).
    """
    from core.notifications.channels import PluginChannels
    from core.notifications.delivery import RETRY_EVENT, Notifier
    from core.notifications.planner import Planner
    from core.notifications.transports import Transports

    closers: list[Callable[[], None]] = []
    if channels is None:
        if plugin_host is None:
            from core.plugins.host import PluginHost
            from core.plugins.registry import build_registry

            plugin_host = PluginHost(build_registry(), db).start()
            closers.append(plugin_host.close)
        channels = PluginChannels(plugin_host)
    from core.webhooks.urls import GuardedClients

    # One webhook client set (one keep-alive client per worker thread, one SSRF rule set) for
    # both webhook paths: the ``webhook`` notification channel and integrators' subscriptions.
    http = GuardedClients(allow_private=settings.webhooks_may_reach_private)
    closers.append(http.close)
    transports = Transports(allow_private_networks=settings.webhooks_may_reach_private, http=http)
    notifier = Notifier(
        db,
        Planner(channels),
        transports,
        lease=options.lease,
        max_attempts=options.delivery_max_attempts,
        backoff_base=options.delivery_backoff_base,
    )
    from core.webhooks.delivery import WebhookDispatcher, with_webhooks
    from core.webhooks.services import SEND_EVENT

    webhook_options = {"clients": http, **options.extra.get("webhooks", {})}
    webhooks = WebhookDispatcher(
        db, allow_private=settings.webhooks_may_reach_private, **webhook_options
    )
    closers.append(webhooks.close)
    processor = Processor(
        db,
        handlers={RETRY_EVENT: notifier.handle_retry, SEND_EVENT: webhooks.handle_send},
        batch_default=with_webhooks(notifier, webhooks),  # two-phase: see TwoPhaseBatch
    )

    def close() -> None:
        for closer in reversed(closers):
            closer()

    return processor, close


class BackgroundRuntime:
    """Relay, worker and scheduler threads of one process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        options: RuntimeOptions | None = None,
        *,
        processor: Processor | None = None,
        channels: Any = None,
        plugin_host: Any = None,
        broker: BrokerHandle | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.options = options or RuntimeOptions()
        url = (
            self.options.broker_url if self.options.broker_url is not None else settings.broker_url
        )
        self.broker = broker or make_broker(url, namespace=self.options.namespace)
        self._close_processor: Callable[[], None] = lambda: None
        self._own_host: Any = None
        if plugin_host is None and channels is None:
            from core.plugins.host import PluginHost
            from core.plugins.registry import build_registry

            plugin_host = self._own_host = PluginHost(build_registry(), db)
        if processor is None:
            processor, self._close_processor = build_processor(
                db, settings, self.options, channels=channels, plugin_host=plugin_host
            )
        self.processor = processor
        self.plugin_host = plugin_host
        self.actor = declare_actor(self.broker, processor)
        self.relay = Relay(
            db,
            BrokerPublisher(self.broker),
            batch_size=self.options.batch_size,
            message_size=self.options.message_size,
            poll_interval=self.options.poll_interval,
            redispatch_after=self.options.redispatch_after,
        )
        self.worker: dramatiq.Worker | None = None
        self.scheduler: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> BackgroundRuntime:
        """Start the parts the options ask for."""
        if self._own_host is not None:
            self._own_host.start()
        if self.options.consume:
            self.worker = dramatiq.Worker(
                self.broker.broker,
                queues={self.broker.queue_name},
                worker_threads=self.options.worker_threads,
                worker_timeout=100,
            )
            self.worker.start()
        if self.options.relay:
            self._thread("insurdesk-relay", self.relay.run)
        if self.options.scheduler:
            from core.scheduler.jobs import default_jobs
            from core.scheduler.runner import Scheduler

            self.scheduler = Scheduler(
                self.db,
                default_jobs(self.settings),
                interval=self.options.scheduler_interval,
                settings=self.settings,
                plugins=self.plugin_host,
            )
            self._thread("insurdesk-scheduler", self.scheduler.run)
        log.info(
            "background_started",
            broker=self.broker.kind,
            queue=self.broker.queue_name,
            relay=self.options.relay,
            consume=self.options.consume,
            scheduler=self.options.scheduler,
        )
        return self

    def _thread(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop everything: relay and scheduler first, then the worker, then connections."""
        self._stop.set()
        self.relay.wake.set()
        if self.scheduler is not None:
            self.scheduler.wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        if self.worker is not None:
            self.worker.stop(timeout=int(timeout * 1000))
        self.broker.close()
        self._close_processor()
        if self._own_host is not None:
            self._own_host.close()
        log.info("background_stopped")

    def __enter__(self) -> BackgroundRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
