"""Rows of the background-work tables for the isolation fixture (``tests.factories``)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from core.db import utcnow
from core.notifications.models import Delivery, NotificationTemplate
from core.outbox.models import OutboxEvent


def add_background_rows(session: Session, *, case_id: uuid.UUID) -> None:
    """An outbox event already processed, its delivery and a template override.

    The event is ``done`` so that no relay running on the same database picks it up.
    """
    event = OutboxEvent(
        event_type="case.created",
        payload={"case_id": str(case_id)},
        status="done",
        processed_at=utcnow(),
    )
    session.add(event)
    session.flush()
    session.add(
        Delivery(
            outbox_id=event.id,
            event_type="case.created",
            channel="email",
            recipient_key=uuid.uuid4().hex,
            recipient_masked="a***@example.com",
            recipient_ref="person:fixture",
            audience="handler",
            status="sent",
            attempts=1,
            sent_at=utcnow(),
        )
    )
    session.add(
        NotificationTemplate(
            event_type="case.created",
            language="zh-CN",
            subject="【{{ case.number }}】已受理",
            body="您好，{{ recipient.name }}。",
        )
    )
    session.flush()
