"""The Dramatiq broker selected by ``INSURDESK_BROKER_URL``, and what the outbox needs of it.

``amqp://`` / ``amqps://`` → :class:`RabbitmqBroker` (production; publisher confirms on, so a
publish returns only once RabbitMQ has the message), ``redis://`` / ``rediss://`` →
:class:`RedisBroker`, empty or ``stub`` → :class:`StubBroker` (the embedded default: an
in-memory queue consumed by a worker inside the same process).

Every broker carries a *namespace*: the queue name prefix (RabbitMQ) or key prefix (Redis), so
several deployments, or test runs, can share one server without seeing each other's messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

DEFAULT_NAMESPACE = "insurdesk"
EMBEDDED_URLS = frozenset({"", "stub"})


def is_embedded(url: str) -> bool:
    """True when ``url`` selects the embedded default (no external broker)."""
    return url.strip().lower() in EMBEDDED_URLS


def broker_kind(url: str) -> str:
    """``rabbitmq``, ``redis`` or ``stub`` for a broker URL.

    :raises ValueError: for a URL scheme that is none of them (names the setting).
    """
    lowered = url.strip().lower()
    if lowered in EMBEDDED_URLS:
        return "stub"
    if lowered.startswith(("amqp://", "amqps://")):
        return "rabbitmq"
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    raise ValueError(
        f"INSURDESK_BROKER_URL: unsupported scheme in {url.split('://')[0]!r}; "
        "use amqp://, redis:// or leave it empty for the embedded worker"
    )


@dataclass(frozen=True)
class BrokerHandle:
    """A broker and the names the outbox uses on it."""

    broker: dramatiq.Broker
    kind: str
    namespace: str

    @property
    def queue_name(self) -> str:
        """The queue the relay publishes outbox messages to."""
        return f"{self.namespace}.outbox"

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()


def _middleware() -> list[dramatiq.Middleware]:
    # Dramatiq's defaults minus Prometheus (the platform exports its own metrics) and with
    # Retries kept only as a last resort: the outbox itself retries with backoff.
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=3, min_backoff=1_000, max_backoff=30_000),
        CurrentMessage(),
    ]


def make_broker(url: str, *, namespace: str = DEFAULT_NAMESPACE) -> BrokerHandle:
    """Build the broker for ``url`` (see the module docstring)."""
    kind = broker_kind(url)
    middleware = _middleware()
    broker: dramatiq.Broker
    if kind == "rabbitmq":
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=middleware)
    elif kind == "redis":
        broker = RedisBroker(url=url, namespace=namespace, middleware=middleware)
    else:
        broker = StubBroker(middleware=middleware)
    return BrokerHandle(broker=broker, kind=kind, namespace=namespace)


def queue_depth(handle: BrokerHandle) -> int | None:
    """Messages waiting in the outbox queue (ready ones, not those held by workers).

    None when the broker cannot be asked (down); the metrics show it as missing, not zero.
    """
    try:
        if handle.kind == "stub":
            queue = handle.broker.queues.get(handle.queue_name)
            return int(queue.qsize()) if queue is not None else 0
        if handle.kind == "rabbitmq":
            return _rabbitmq_depth(handle)
        broker = handle.broker
        assert isinstance(broker, RedisBroker)
        return int(broker.client.llen(f"{handle.namespace}:{handle.queue_name}"))
    except Exception:  # a metric, not an operation: an unreachable broker is "unknown"
        return None


def _rabbitmq_depth(handle: BrokerHandle) -> int:
    # A short-lived connection of its own: the broker's connections are per thread and must
    # not be left idle in whatever thread serves a metrics scrape.
    broker = handle.broker
    assert isinstance(broker, RabbitmqBroker)
    connection = pika.BlockingConnection(broker.parameters)
    try:
        channel = connection.channel()
        try:
            frame = channel.queue_declare(handle.queue_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # never declared: nothing waiting
                return 0
            raise
        return int(frame.method.message_count)
    finally:
        if connection.is_open:
            connection.close()
