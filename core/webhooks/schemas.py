"""Request and response bodies of the webhooks API (msgspec)."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from core.api.schemas import Input, Output
from core.webhooks.events import EVENT_TYPES
from core.webhooks.models import WebhookDelivery, WebhookSubscription

EventType = enum.StrEnum(  # type: ignore[misc]
    "EventType",
    {"ALL": "*", **{n.replace(".", "_").upper(): n for n in sorted(EVENT_TYPES)}},
)
"""An event type to subscribe to, or ``*`` for all."""

Url = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2000,
        description="Where to POST deliveries: https (http only outside production); never a "
        "loopback, private or link-local address unless the platform allows it.",
        examples=["https://erp.example.com/hooks/insurdesk"],
    ),
]
EventTypes = Annotated[
    list[EventType],
    msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES) + 1, examples=[["case.created"]]),
]
Description = Annotated[str, msgspec.Meta(max_length=200)]
UnitIds = Annotated[
    list[uuid.UUID],
    msgspec.Meta(
        max_length=100,
        description="Only events about these units and those below them; empty: the tenant.",
    ),
]


class WebhookCreate(Input):
    """Subscribe a URL to event types. Needs ``webhooks:admin`` and ``cases:read`` at the units
    (for the whole tenant: at the top)."""

    url: Url
    event_types: EventTypes
    description: Description = ""
    unit_ids: UnitIds = msgspec.field(default_factory=list)
    active: bool = True


class WebhookUpdate(Input):
    """Change what is given (``active: false`` pauses deliveries)."""

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    unit_ids: UnitIds | None = None
    active: bool | None = None


class WebhookOut(Output):
    """A subscription (never its secret)."""

    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    unit_ids: list[uuid.UUID]
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, sub: WebhookSubscription) -> WebhookOut:
        """The representation of ``sub``."""
        return cls(
            id=sub.id,
            url=sub.url,
            description=sub.description,
            event_types=list(sub.event_types),
            unit_ids=[uuid.UUID(u) for u in sub.unit_ids],
            active=sub.active,
            created_by=sub.created_by,
            created_at=sub.created_at,
            updated_at=sub.updated_at,
            version=sub.version,
        )


class WebhookCreated(Output):
    """A new subscription and its signing secret: shown this once."""

    webhook: WebhookOut
    secret: str
    """``whsec_…``: verify ``webhook-signature`` with it (docs/integrators.md)."""


class WebhookSecret(Output):
    """A new signing secret, shown this once. For 24 hours deliveries carry signatures with
    both the new and the previous secret, so the receiver can switch without a gap."""

    id: uuid.UUID
    secret: str
    previous_valid_until: datetime


class AttemptOut(Output):
    """One attempt to deliver."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDeliveryOut(Output):
    """A delivery of one event to one subscription, with its attempts."""

    id: uuid.UUID
    """The ``webhook-id`` header of every attempt."""
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    replays: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]
    history: list[AttemptOut]

    @classmethod
    def of(cls, row: WebhookDelivery) -> WebhookDeliveryOut:
        """The representation of ``row``."""
        return cls(
            id=row.id,
            subscription_id=row.subscription_id,
            event_id=row.event_id,
            event_type=row.event_type,
            status=row.status,
            attempts=row.attempts,
            replays=row.replays,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            last_attempt_at=row.last_attempt_at,
            next_attempt_at=row.next_attempt_at,
            sent_at=row.sent_at,
            created_at=row.created_at,
            payload=json.loads(row.body),
            history=[
                AttemptOut(
                    at=datetime.fromisoformat(str(h["at"])),
                    status_code=h.get("status_code"),  # type: ignore[arg-type]
                    error=h.get("error"),  # type: ignore[arg-type]
                    duration_ms=int(h.get("ms", 0)),  # type: ignore[call-overload]
                )
                for h in row.history
            ],
        )


class EventTypeOut(Output):
    """An event type one can subscribe to."""

    name: str
    description: str
