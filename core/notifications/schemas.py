"""Schemas of the delivery log and template API (msgspec, at the HTTP edge)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from core.api.schemas import Input, Output
from core.notifications.models import Delivery, NotificationTemplate


class DeliveryOut(Output):
    """One delivery attempt record: the recipient is masked, never shown in clear."""

    id: uuid.UUID
    outbox_id: uuid.UUID
    event_type: str
    channel: str
    recipient: str
    recipient_ref: str
    audience: str
    language: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        """Render a delivery."""
        return cls(
            id=d.id,
            outbox_id=d.outbox_id,
            event_type=d.event_type,
            channel=d.channel,
            recipient=d.recipient_masked,
            recipient_ref=d.recipient_ref,
            audience=d.audience,
            language=d.language,
            status=d.status,
            attempts=d.attempts,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            sent_at=d.sent_at,
            created_at=d.created_at,
            updated_at=d.updated_at,
        )


EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[a-z_.*]+$")]


class TemplateIn(Input):
    """A tenant's wording for an event, language and channel (``*``: every channel)."""

    event_type: EventType
    language: Annotated[str, msgspec.Meta(pattern=r"^(zh-CN|en)$")]
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "*"


class TemplateOut(Output):
    """A template override."""

    id: uuid.UUID
    event_type: str
    language: str
    channel: str
    subject: str
    body: str
    updated_by: str
    changed_at: datetime

    @classmethod
    def of(cls, t: NotificationTemplate) -> TemplateOut:
        """Render a template."""
        return cls(
            id=t.id,
            event_type=t.event_type,
            language=t.language,
            channel=t.channel,
            subject=t.subject,
            body=t.body,
            updated_by=t.updated_by,
            changed_at=t.changed_at,
        )
