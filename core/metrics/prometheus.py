"""Prometheus metrics of background work, collected when scraped (prometheus-client).

A custom collector queries the database on the platform path at each scrape (a few indexed
aggregates), so the figures are right whichever process did the work. Each app gets its own
:class:`~prometheus_client.CollectorRegistry`: nothing global.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.db import Database
from core.metrics.services import background_figures
from core.outbox.broker import BrokerHandle, queue_depth

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BackgroundCollector(Collector):
    """Outbox, delivery and queue gauges (see :mod:`core.metrics`)."""

    def __init__(self, db: Database, broker: Callable[[], BrokerHandle | None]) -> None:
        self.db = db
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges, read now."""
        with self.db.platform_session() as session:
            figures = background_figures(session)
        outbox = GaugeMetricFamily(
            "insurdesk_outbox_events", "Outbox rows by status (all tenants).", labels=["status"]
        )
        for status, count in figures.outbox.items():
            outbox.add_metric([status], count)
        yield outbox
        yield GaugeMetricFamily(
            "insurdesk_outbox_lag_seconds",
            "Age of the oldest due pending outbox row (0 when none waits).",
            value=figures.outbox_lag_seconds,
        )
        deliveries = GaugeMetricFamily(
            "insurdesk_deliveries", "Deliveries by status (all tenants).", labels=["status"]
        )
        for status, count in figures.deliveries.items():
            deliveries.add_metric([status], count)
        yield deliveries
        yield GaugeMetricFamily(
            "insurdesk_dead_letters",
            "Deliveries given up on (dead), waiting for an admin's retry.",
            value=figures.dead_letters,
        )
        handle = self.broker()
        depth = queue_depth(handle) if handle is not None else None
        if depth is not None and handle is not None:
            gauge = GaugeMetricFamily(
                "insurdesk_broker_queue_depth",
                "Messages ready in the broker's outbox queue.",
                labels=["broker", "queue"],
            )
            gauge.add_metric([handle.kind, handle.queue_name], depth)
            yield gauge


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text exposition format."""
    return generate_latest(registry)
