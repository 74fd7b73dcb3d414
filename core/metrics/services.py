"""The figures, computed by indexed aggregate queries at the time they are asked for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.db import utcnow
from core.notifications.models import DeliveryStatus
from core.notifications.services import delivery_counts
from core.outbox.models import OutboxStatus
from core.outbox.services import outbox_stats


@dataclass(frozen=True)
class BackgroundFigures:
    """Outbox and delivery figures of one scope (a tenant, or the platform)."""

    outbox: dict[str, int]
    outbox_lag_seconds: float
    queued: int
    deliveries: dict[str, int]
    dead_letters: int
    at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "at": self.at.isoformat(),
            "outbox": self.outbox,
            "outbox_lag_seconds": round(self.outbox_lag_seconds, 3),
            "queued": self.queued,
            "deliveries": self.deliveries,
            "dead_letters": self.dead_letters,
        }


def background_figures(session: Session, *, now: dt.datetime | None = None) -> BackgroundFigures:
    """Figures of the session's scope: a tenant session sees its tenant, a platform session all.

    ``queued`` counts outbox rows handed to the broker and not processed yet: a tenant's share
    of the queue (the broker's queue is shared, so its depth is a platform figure).
    """
    now = now or utcnow()
    stats = outbox_stats(session, now=now)
    deliveries = delivery_counts(session)
    return BackgroundFigures(
        outbox=dict(stats.by_status),
        outbox_lag_seconds=stats.oldest_pending_age_seconds,
        queued=stats.by_status.get(OutboxStatus.DISPATCHED.value, 0),
        deliveries=deliveries,
        dead_letters=deliveries[DeliveryStatus.DEAD.value],
        at=now,
    )
