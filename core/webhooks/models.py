"""Webhook subscriptions and their deliveries.

A subscription's secret is kept in clear: the platform must compute HMACs with it (it is
shown to the integrator once, at creation and at rotation; issue 7 wraps stored secrets with
the platform master key). A delivery holds the exact body it sends, so it can be retried and
replayed after the outbox row that caused it has been purged.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk


class WebhookSubscription(TenantScoped, Timestamped, Base):
    """A URL that receives the tenant's events of some types (for some units)."""

    __tablename__ = "webhook_subscriptions"

    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Event type names (:data:`core.webhooks.events.EVENT_TYPES`), or ``["*"]`` for all."""
    unit_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Only events about these units and those below them; empty: the whole tenant."""
    secret: Mapped[str] = mapped_column(String(100))
    """``whsec_`` + base64 of 32 random bytes: the HMAC-SHA256 key (Standard Webhooks)."""
    previous_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    """The secret before the last rotation: deliveries are signed with both until
    ``previous_secret_until``, so a receiver can switch without losing messages."""
    previous_secret_until: Mapped[datetime | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    """Who subscribed: ``client:<client_id>`` or ``person:<id>``."""
    version: Mapped[int] = mapped_column(default=1)
    """The ETag (optimistic concurrency)."""

    __mapper_args__ = {"version_id_col": version}


class WebhookDeliveryStatus(enum.StrEnum):
    """Where a delivery is: ``pending`` → ``sending`` (leased by a worker) → ``sent``; or
    ``failed`` (retried at ``next_attempt_at``) … → ``dead`` (gave up; can be replayed)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


class WebhookDelivery(TenantScoped, Timestamped, Base):
    """One event to one subscription: unique per ``(subscription_id, event_id)``.

    The row's ``id`` is the ``webhook-id`` header: the same on every retry and replay, so
    receivers deduplicate on it.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        tenant_fk("subscription_id", "webhook_subscriptions", ondelete="CASCADE"),
        UniqueConstraint("tenant_id", "subscription_id", "event_id"),
        Index("ix_webhook_deliveries_subscription", "tenant_id", "subscription_id", "id"),
        Index("ix_webhook_deliveries_status", "tenant_id", "status", "id"),
    )

    subscription_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    """The event's id (the outbox row's): the ``id`` member of the body."""
    event_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    """The exact JSON body sent (UTF-8), identical on every attempt."""
    status: Mapped[str] = mapped_column(String(16), default=WebhookDeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    replays: Mapped[int] = mapped_column(default=0)
    last_status_code: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    history: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    """The last attempts: ``{"at", "status_code", "error", "ms"}``, newest last (at most 20)."""
