"""Audit log schemas at the HTTP edge."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core.api.schemas import Output
from core.audit.models import AuditEntry


class AuditEntryOut(Output):
    """One audit entry, with its place in the tenant's hash chain."""

    id: uuid.UUID
    seq: int
    at: datetime
    actor_kind: str
    actor: str
    actor_id: str | None
    client_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    source: str | None
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        """Render an entry."""
        return cls(
            id=e.id,
            seq=e.seq,
            at=e.at,
            actor_kind=e.actor_kind,
            actor=e.actor,
            actor_id=e.actor_id,
            client_id=e.client_id,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            details=dict(e.details or {}),
            source=e.source,
            prev_hash=e.prev_hash,
            hash=e.hash,
        )


class AuditPage(Output):
    """A page of audit entries; ``next_cursor`` is null on the last page."""

    items: list[AuditEntryOut]
    next_cursor: str | None = None


class BrokenEntryOut(Output):
    """Where a chain breaks first."""

    seq: int
    entry_id: str | None
    reason: str
    detail: str


class VerificationOut(Output):
    """The result of checking the tenant's chain."""

    ok: bool
    checked: int
    last_seq: int
    first_broken: BrokenEntryOut | None = None
