"""The delivery log and the tenants' notification templates."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk, utcnow


class DeliveryStatus(enum.StrEnum):
    """Where a delivery is.

    ``pending`` (recorded, not tried) → ``sending`` (claimed by a worker until
    ``lease_until``) → ``sent``; or ``failed`` (will be retried at ``next_attempt_at``) →
    … → ``dead`` (gave up: the dead letters an admin lists and retries). ``skipped``: nobody
    could be reached that way (e.g. a customer who prefers letters), recorded so the log
    shows it.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    SKIPPED = "skipped"


FINAL_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.DEAD, DeliveryStatus.SKIPPED})


class Delivery(TenantScoped, Timestamped, Base):
    """One message to one recipient over one channel, because of one outbox event.

    ``(outbox_id, channel, recipient_key)`` is unique: the delivery key. A worker records the
    row before it sends, and claims it with a conditional update, so a redelivered message
    finds it and never sends again; the row's id is the message's idempotency key on the
    wire (the e-mail ``Message-ID``, the webhook ``webhook-id``), so a resend after a crash is
    recognised by the recipient. Recipients are stored masked; ``recipient_key`` is a hash.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        tenant_fk("outbox_id", "outbox"),
        UniqueConstraint("tenant_id", "outbox_id", "channel", "recipient_key"),
        # Partial (migration 0006): the dead letters, failures and skips an admin lists; a
        # delivery marked sent leaves it (listing sent ones reads the primary key's range).
        Index(
            "ix_deliveries_tenant_unsent",
            "tenant_id",
            "status",
            "id",
            postgresql_where=text("status <> 'sent'"),
            sqlite_where=text("status <> 'sent'"),
        ),
    )

    outbox_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(64))
    recipient_key: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the channel and the full address (never stored in clear)."""
    recipient_masked: Mapped[str] = mapped_column(String(300))
    """E.g. ``138****5678``, ``z***@example.com``, ``https://hooks.example.com/…``."""
    recipient_ref: Mapped[str] = mapped_column(String(100))
    """Who it is: ``person:<id>``, ``customer:<id>`` or ``endpoint``."""
    audience: Mapped[str] = mapped_column(String(32))
    """Why they get it: ``handler``, ``manager``, ``cs_division``, ``customer``, ``endpoint``."""
    language: Mapped[str] = mapped_column(String(16), default="zh-CN")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    first_attempt_at: Mapped[datetime | None] = mapped_column(default=None)


class NotificationTemplate(TenantScoped, Timestamped, Base):
    """A tenant's own wording for an event in a language (optionally for one channel).

    Without one, the built-in template of :mod:`core.notifications.templates` applies. Both
    are Jinja2 rendered in a sandbox.
    """

    __tablename__ = "notification_templates"
    __table_args__ = (UniqueConstraint("tenant_id", "event_type", "language", "channel"),)

    event_type: Mapped[str] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64), default="*")
    """``*``: every channel; else the channel it is for (e.g. shorter text for ``sms``)."""
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(200), default="")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
