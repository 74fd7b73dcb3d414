"""Case schemas at the HTTP edge (the minimal record; the cases issue grows it)."""

from __future__ import annotations

import uuid
from datetime import datetime

from core.api.schemas import Output
from core.cases.models import Case, CaseType, Channel


class CaseOut(Output):
    """A case."""

    id: uuid.UUID
    number: str
    type: CaseType
    channel: Channel
    status: str
    subject: str
    received_at: datetime
    unit_id: uuid.UUID
    customer_id: uuid.UUID | None
    policy_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: Case) -> CaseOut:
        """Render a case."""
        return cls(
            id=c.id,
            number=c.number,
            type=c.type,
            channel=c.channel,
            status=c.status,
            subject=c.subject,
            received_at=c.received_at,
            unit_id=c.unit_id,
            customer_id=c.customer_id,
            policy_id=c.policy_id,
            assignee_id=c.assignee_id,
            version=c.version,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
