"""Rows in the integrator tables, so the isolation suite (tests/tenancy) covers them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from core.api.models import IdempotencyRecord, RateLimitBucket
from core.db import new_id, utcnow
from core.webhooks.models import WebhookDelivery, WebhookSubscription
from core.webhooks.signing import generate_secret


def add_integrator_rows(session: Session) -> None:
    """One stored idempotent response, one rate-limit bucket, one subscription, one delivery."""
    now = utcnow()
    session.add(
        IdempotencyRecord(
            principal="fixture.client",
            key=new_id().hex,
            fingerprint="0" * 64,
            method="POST",
            path="/api/v1/cases",
            state="done",
            status_code=201,
            headers=[["content-type", "application/json"]],
            body=b"{}",
            expires_at=now + timedelta(hours=24),
        )
    )
    session.add(RateLimitBucket(key=f"fixture:{new_id()}", tokens=10.0, stamp=now.timestamp()))
    sub = WebhookSubscription(
        url="https://hooks.example.com/insurdesk",
        event_types=["case.created"],
        unit_ids=[],
        secret=generate_secret(),
        created_by="fixture",
        active=False,
    )
    session.add(sub)
    session.flush()
    session.add(
        WebhookDelivery(
            subscription_id=sub.id,
            event_id=new_id(),
            event_type="case.created",
            body="{}",
            status="dead",
            history=[],
        )
    )
    session.flush()
