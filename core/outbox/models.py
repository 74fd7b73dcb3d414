"""The outbox table: one row per side effect, written in the transaction that causes it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, utcnow


class OutboxStatus(enum.StrEnum):
    """Where an outbox row is in its life.

    ``pending`` → (relay) ``dispatched`` → (actor) ``done``; ``failed`` after too many attempts.
    A ``dispatched`` row whose message was lost goes back to the broker after
    ``Relay.redispatch_after`` (the actor is idempotent, so a second copy is harmless).
    """

    PENDING = "pending"
    DISPATCHED = "dispatched"
    DONE = "done"
    FAILED = "failed"


class OutboxEvent(TenantScoped, Base):
    """A side effect to carry out outside the request: an event and its JSON payload.

    ``available_at`` delays it (retries with backoff, reminders); ``dedupe_key`` makes a second
    :func:`core.outbox.emit` of the same fact a no-op (unique per tenant; NULLs never clash).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("tenant_id", "dedupe_key"),
        # Partial: a status change adds an entry to every index whose condition the new row
        # meets, so these hold only the open rows the queries look for (migration 0006).
        # The relay's cross-tenant work query (pending rows that are due, oldest first) and the
        # age of the oldest pending row (metrics).
        Index(
            "ix_outbox_pending",
            "available_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Dispatched rows whose message was lost (Relay.requeue_stale).
        Index(
            "ix_outbox_dispatched",
            "dispatched_at",
            postgresql_where=text("status = 'dispatched'"),
            sqlite_where=text("status = 'dispatched'"),
        ),
    )

    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    """How many times the relay handed the row to the broker."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
