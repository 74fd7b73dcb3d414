"""``GET /api/v1/ops/metrics`` (a tenant admin's figures) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.schemas import Output
from core.auth.guards import Access
from core.db import Database
from core.metrics.prometheus import CONTENT_TYPE, BackgroundCollector, render
from core.metrics.services import background_figures
from core.notifications.services import require_tenant_admin
from core.outbox.broker import BrokerHandle, is_embedded, make_broker
from core.settings import Settings

_LOCK = threading.Lock()


class OpsMetricsOut(Output):
    """Background work of the caller's tenant."""

    at: datetime
    outbox: dict[str, int]
    """Outbox rows by status: pending, dispatched, done, failed."""
    outbox_lag_seconds: float
    """Age of the oldest due pending row: how far the relay is behind (0 when caught up)."""
    queued: int
    """Rows handed to the broker and not processed yet (the tenant's share of the queue)."""
    deliveries: dict[str, int]
    """Deliveries by status."""
    dead_letters: int
    """Deliveries given up on, to be looked at and retried."""


class OpsMetricsController(Controller):
    """Background-work figures for tenant administrators (their tenant only)."""

    path = "/api/v1/ops/metrics"
    tags = ["operations"]
    dependencies = API_DEPENDENCIES

    @get(
        "/",
        operation_id="getOpsMetrics",
        summary="Outbox, queue and delivery figures",
    )
    @uses_database
    def figures(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> OpsMetricsOut:
        """The tenant's outbox lag, queued messages, deliveries by status and dead letters."""
        require_tenant_admin(session, access)
        f = background_figures(session)
        return OpsMetricsOut(
            at=f.at,
            outbox=f.outbox,
            outbox_lag_seconds=round(f.outbox_lag_seconds, 3),
            queued=f.queued,
            deliveries=f.deliveries,
            dead_letters=f.dead_letters,
        )


def _broker(state: State, settings: Settings) -> BrokerHandle | None:
    background = state.get("background")
    if background is not None:
        return background.broker
    if is_embedded(settings.broker_url):
        return None
    with _LOCK:
        handle = state.get("metrics_broker")
        if handle is None:
            handle = make_broker(settings.broker_url)
            state["metrics_broker"] = handle
    return handle


@get(
    "/metrics",
    exclude_from_auth=True,
    tags=["operations"],
    operation_id="prometheusMetrics",
    summary="Prometheus metrics of the platform (aggregated, no tenant data)",
)
@uses_database
def prometheus_metrics(
    request: Request[Any, Any, Any],
    db: NamedDependency[Database],
    settings: NamedDependency[Settings],
) -> Response[bytes]:
    """Outbox by status and lag, deliveries by status, dead letters, broker queue depth.

    For the platform's monitoring: serve it on the internal network only (the figures are
    aggregated over tenants and name none).
    """
    state = request.app.state
    with _LOCK:
        registry = state.get("metrics_registry")
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(BackgroundCollector(db, lambda: _broker(state, settings)))
            state["metrics_registry"] = registry
    return Response(render(registry), media_type=CONTENT_TYPE)


ROUTES = [OpsMetricsController, prometheus_metrics]
