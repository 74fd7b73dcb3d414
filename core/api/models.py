"""Tables of the HTTP edge: stored idempotent responses and rate-limit buckets.

Both are tenant-owned (``(tenant_id, id)`` keys, row-level security on PostgreSQL): a key or a
bucket of one tenant can never be read or spent through another tenant's session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, utcnow


class IdempotencyRecord(TenantScoped, Base):
    """One ``Idempotency-Key`` of one caller, and the response to replay for it.

    ``principal`` is ``<client_id>`` for an integrator's token and ``<client_id>/<person id>``
    for a person's, so two callers never share keys. ``state`` is ``running`` while the first
    request is served (a concurrent retry gets a 409) and ``done`` once its response is stored.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "principal", "key"),
        Index("ix_idempotency_keys_expires", "expires_at"),
    )

    principal: Mapped[str] = mapped_column(String(400))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the method, path, query, content type and body of the first request."""
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2000))
    state: Mapped[str] = mapped_column(String(16), default="running")
    status_code: Mapped[int | None] = mapped_column(default=None)
    headers: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    """While ``running``: after this time a crashed first request no longer blocks the key."""


class RateLimitBucket(TenantScoped, Base):
    """A token bucket of the ``database`` rate-limit backend (one row per tenant or caller).

    ``tokens`` is the content at ``stamp`` (Unix seconds); the refill is computed in the upsert
    that spends a token, so concurrent requests of several processes never lose an update.
    """

    __tablename__ = "rate_limit_buckets"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(400))
    tokens: Mapped[float]
    stamp: Mapped[float]
    allowed: Mapped[bool] = mapped_column(default=True)
    """Whether the last request spent a token (read back by the upsert's RETURNING)."""
