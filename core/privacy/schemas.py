"""Privacy schemas at the HTTP edge."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from core.api.schemas import Input, Output
from core.privacy.models import (
    Consent,
    DataSubjectRequest,
    DestructionRecord,
    LegalHold,
    SharingAgreement,
)

NoticeVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Evidence = Annotated[str, msgspec.Meta(max_length=300)]
Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]
PurposeKey = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class ConsentIn(Input):
    """A consent given or withdrawn by the customer."""

    purpose: PurposeKey
    given: bool
    channel: Channel
    notice_version: NoticeVersion
    at: datetime | None = None
    """When the customer said so (default: now)."""
    evidence: Evidence | None = None


class ConsentOut(Output):
    """One consent event."""

    id: uuid.UUID
    customer_id: uuid.UUID
    purpose: str
    given: bool
    channel: str
    notice_version: str
    at: datetime
    recorded_at: datetime
    recorded_by: str
    evidence: str | None

    @classmethod
    def of(cls, c: Consent) -> ConsentOut:
        """Render a consent event."""
        return cls(
            id=c.id,
            customer_id=c.customer_id,
            purpose=c.purpose,
            given=c.given,
            channel=c.channel,
            notice_version=c.notice_version,
            at=c.at,
            recorded_at=c.recorded_at,
            recorded_by=c.recorded_by,
            evidence=c.evidence,
        )


class ConsentsOut(Output):
    """A customer's consents: the current choice per purpose, and the whole history."""

    customer_id: uuid.UUID
    current: dict[str, ConsentOut]
    history: list[ConsentOut]


class RequestIn(Input):
    """A data-subject request received from a customer."""

    customer_id: uuid.UUID
    kind: Annotated[str, msgspec.Meta(pattern=r"^(access|copy|correction|deletion)$")]
    channel: Channel
    received_at: datetime | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """What the customer asked, in their words (stored encrypted)."""


class FulfilIn(Input):
    """Fulfil a request. A correction names the fields to change and their new values."""

    changes: dict[str, str | None] | None = None


class ReasonIn(Input):
    """A reason (a refusal must state one: 个人信息保护法 第五十条)."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class RequestOut(Output):
    """A data-subject request."""

    id: uuid.UUID
    number: str
    kind: str
    channel: str
    state: str
    customer_id: uuid.UUID
    unit_id: uuid.UUID
    received_at: datetime
    due_at: datetime
    last_day: date
    working_days: int
    overdue: bool
    handler_id: uuid.UUID | None
    created_by: str
    note: str | None
    refusal_reason: str | None
    completed_at: datetime | None
    result: dict[str, Any]
    case_id: uuid.UUID | None = None
    """The request's case (type ``data_subject_request``) in the work queue."""

    @classmethod
    def of(cls, r: DataSubjectRequest, now: datetime) -> RequestOut:
        """Render a request."""
        return cls(
            id=r.id,
            number=r.number,
            kind=r.kind,
            channel=r.channel,
            state=r.state,
            customer_id=r.customer_id,
            unit_id=r.unit_id,
            received_at=r.received_at,
            due_at=r.due_at,
            last_day=r.last_day,
            working_days=r.working_days,
            overdue=r.state in ("received", "in_progress") and r.due_at < now,
            handler_id=r.handler_id,
            created_by=r.created_by,
            note=r.note,
            refusal_reason=r.refusal_reason,
            completed_at=r.completed_at,
            result=dict(r.result or {}),
            case_id=r.case_id,
        )


class FulfilOut(Output):
    """The outcome of a fulfilled request; ``export`` for access and copy requests."""

    request: RequestOut
    export: dict[str, Any] | None = None


class AgreementIn(Input):
    """A sharing agreement with a third party."""

    third_party: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    third_party_kind: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]+$", max_length=32)]
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    fields: list[Annotated[str, msgspec.Meta(max_length=32)]]
    legal_basis: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]+$", max_length=32)]
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    starts_on: date
    expires_on: date


class AgreementUpdate(Input):
    """Extend, narrow or terminate an agreement."""

    expires_on: date | None = None
    fields: list[Annotated[str, msgspec.Meta(max_length=32)]] | None = None
    active: bool | None = None


class AgreementOut(Output):
    """A sharing agreement and its status today."""

    id: uuid.UUID
    third_party: str
    third_party_kind: str
    purpose: str
    fields: list[str]
    legal_basis: str
    reference: str
    starts_on: date
    expires_on: date
    active: bool
    status: str
    created_by: str

    @classmethod
    def of(cls, a: SharingAgreement, status: str) -> AgreementOut:
        """Render an agreement."""
        return cls(
            id=a.id,
            third_party=a.third_party,
            third_party_kind=a.third_party_kind,
            purpose=a.purpose,
            fields=list(a.fields),
            legal_basis=a.legal_basis,
            reference=a.reference,
            starts_on=a.starts_on,
            expires_on=a.expires_on,
            active=a.active,
            status=status,
            created_by=a.created_by,
        )


class HoldIn(Input):
    """Place a legal hold on a customer's data."""

    customer_id: uuid.UUID
    reason: Annotated[str, msgspec.Meta(pattern=r"^(dispute|regulator_inquiry|litigation|audit)$")]
    case_id: uuid.UUID | None = None
    reference: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class HoldOut(Output):
    """A legal hold."""

    id: uuid.UUID
    customer_id: uuid.UUID
    case_id: uuid.UUID | None
    reason: str
    reference: str | None
    placed_by: str
    placed_at: datetime
    released_at: datetime | None
    released_by: str | None

    @classmethod
    def of(cls, h: LegalHold) -> HoldOut:
        """Render a hold."""
        return cls(
            id=h.id,
            customer_id=h.customer_id,
            case_id=h.case_id,
            reason=h.reason,
            reference=h.reference,
            placed_by=h.placed_by,
            placed_at=h.placed_at,
            released_at=h.released_at,
            released_by=h.released_by,
        )


class DestructionOut(Output):
    """One destruction batch."""

    id: uuid.UUID
    run_id: str
    batch: int
    data_class: str
    rule: str
    method: str
    cutoff: datetime
    count: int
    held: int
    subject_ids: list[str]
    actor: str
    started_at: datetime
    finished_at: datetime

    @classmethod
    def of(cls, d: DestructionRecord) -> DestructionOut:
        """Render a destruction record."""
        return cls(
            id=d.id,
            run_id=d.run_id,
            batch=d.batch,
            data_class=d.data_class,
            rule=d.rule,
            method=d.method,
            cutoff=d.cutoff,
            count=d.count,
            held=d.held,
            subject_ids=list(d.subject_ids),
            actor=d.actor,
            started_at=d.started_at,
            finished_at=d.finished_at,
        )
