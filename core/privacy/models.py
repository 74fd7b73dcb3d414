"""Privacy tables: tenant keys (and, further down, consents, data-subject requests, sharing
agreements, legal holds and destruction records).

Every table is tenant-owned (composite primary key, composite foreign keys).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk, utcnow
from core.privacy.fields import Sealed, SealedText


class TenantKey(TenantScoped, Base):
    """One version of a tenant's key, wrapped by the platform master key.

    ``purpose`` is ``data`` (AES-256-GCM, personal fields; versions rotate: exactly one is
    ``active``, older ones are ``retired`` and still decrypt until no row uses them, then
    ``destroyed`` with their material erased) or ``index`` (HMAC-SHA256 for blind indexes).
    """

    __tablename__ = "tenant_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "purpose", "version"),
        Index("ix_tenant_keys_tenant_purpose_status", "tenant_id", "purpose", "status"),
    )

    purpose: Mapped[str] = mapped_column(String(16))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="active")
    wrapped: Mapped[str | None] = mapped_column(Text, default=None)
    """Base64 of the wrapped key; NULL once destroyed."""
    master_key_id: Mapped[str] = mapped_column(String(100))
    """Which master key wrapped it (``local:<fingerprint>`` or a KMS key id)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None)


class Consent(TenantScoped, Base):
    """One consent event of a customer: given or withdrawn, for a purpose, through a channel,
    at a time, under a version of the privacy notice. Append-only history; the latest event
    per purpose is the customer's current choice (:func:`core.privacy.consent.current`).
    """

    __tablename__ = "consents"
    __table_args__ = (
        tenant_fk("customer_id", "customers"),
        Index("ix_consents_tenant_customer_purpose", "tenant_id", "customer_id", "purpose", "at"),
    )

    customer_id: Mapped[uuid.UUID]
    purpose: Mapped[str] = mapped_column(String(32))
    """``marketing``, ``third_party_sharing``, ``sensitive_data`` (health) ..."""
    given: Mapped[bool]
    """True: consent given; False: withdrawn (or refused)."""
    channel: Mapped[str] = mapped_column(String(32))
    """How the customer expressed it: ``phone``, ``online``, ``paper``, ``sms``, ``wechat``,
    ``in_person``, ``email``."""
    notice_version: Mapped[str] = mapped_column(String(40))
    """The version of the privacy notice the customer was shown (告知书版本)."""
    at: Mapped[datetime]
    """When the customer gave or withdrew it."""
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(200))
    evidence: Mapped[str | None] = mapped_column(String(300), default=None)
    """A reference to the proof (call recording id, signed form number)."""


class DataSubjectRequest(TenantScoped, Timestamped, Base):
    """A customer's request to see, copy, correct or delete their personal data (个人信息保护法
    第四十四至四十七条), with its deadline and outcome.

    A small aggregate of its own rather than a case type: its lifecycle is short
    (``received`` → ``in_progress`` → ``completed`` | ``refused``, or ``withdrawn``), its clock
    is a policy period (no statutory one), and its outcome is itself personal data that only
    ``privacy:admin`` may see (docs/decisions/0005-data-subject-requests.md). ``note`` is
    encrypted like a customer's fields.
    """

    __tablename__ = "privacy_requests"
    __table_args__ = (
        tenant_fk("customer_id", "customers"),
        tenant_fk("unit_id", "org_units"),
        tenant_fk("handler_id", "people"),
        tenant_fk("case_id", "cases"),
        UniqueConstraint("tenant_id", "number"),
        Index("ix_privacy_requests_tenant_state_due", "tenant_id", "state", "due_at"),
        Index("ix_privacy_requests_tenant_customer", "tenant_id", "customer_id"),
    )

    number: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    """``access`` (查阅), ``copy`` (复制, a machine-readable export), ``correction`` (更正),
    ``deletion`` (删除)."""
    channel: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="received")
    customer_id: Mapped[uuid.UUID]
    unit_id: Mapped[uuid.UUID]
    received_at: Mapped[datetime]
    due_at: Mapped[datetime]
    last_day: Mapped[date]
    working_days: Mapped[int]
    """The period applied (``privacy_cn.dsr_working_days`` at the unit, default 15)."""
    handler_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    case_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    """The request's case (type ``data_subject_request``): what puts it in the handlers' work
    queue, with its deadline clock, reminders and escalation (docs/decisions/0006)."""
    created_by: Mapped[str] = mapped_column(String(200))
    sealed_enc: Mapped[str | None] = mapped_column(SealedText, default=None)
    """The encrypted ``note`` and ``refusal_reason``."""
    key_version: Mapped[int] = mapped_column(default=0)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What was done: export digest and sections, fields corrected, the anonymous token."""

    __sealed_column__ = "sealed_enc"
    note = Sealed[str | None]()
    refusal_reason = Sealed[str | None]()
    """Why it was refused (第五十条): free text, sealed with the note."""


class SharingAgreement(TenantScoped, Timestamped, Base):
    """A third party the tenant shares customer data with, under an agreement
    (保险行业客户信息管理制度 (4): purpose, scope and manner agreed, confidentiality signed).

    An export or integration that sends personal data names the agreement; it may send only
    the agreement's ``fields``, and only between ``starts_on`` and ``expires_on`` while it is
    ``active`` (:func:`core.privacy.sharing.require_agreement`).
    """

    __tablename__ = "sharing_agreements"
    __table_args__ = (
        UniqueConstraint("tenant_id", "reference"),
        Index("ix_sharing_agreements_tenant_expires", "tenant_id", "expires_on"),
    )

    third_party: Mapped[str] = mapped_column(String(200))
    third_party_kind: Mapped[str] = mapped_column(String(32))
    """``reinsurer``, ``claims_assessor``, ``call_centre``, ``agency``, ``it_provider``,
    ``other``."""
    purpose: Mapped[str] = mapped_column(String(300))
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    legal_basis: Mapped[str] = mapped_column(String(32))
    """个人信息保护法 第十三条: ``consent``, ``contract``, ``legal_obligation``, ``emergency``,
    ``public_interest``, ``disclosed``, ``other_law``."""
    reference: Mapped[str] = mapped_column(String(100))
    """The agreement's own number (合同编号)."""
    starts_on: Mapped[date]
    expires_on: Mapped[date]
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(200))


class LegalHold(TenantScoped, Base):
    """Data that must not be destroyed or anonymized: a dispute, a regulator's inquiry,
    litigation. Placed on a customer (and optionally a case) until released."""

    __tablename__ = "legal_holds"
    __table_args__ = (
        tenant_fk("customer_id", "customers"),
        tenant_fk("case_id", "cases"),
        Index("ix_legal_holds_tenant_customer", "tenant_id", "customer_id"),
    )

    customer_id: Mapped[uuid.UUID]
    case_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    reason: Mapped[str] = mapped_column(String(32))
    """``dispute``, ``regulator_inquiry``, ``litigation``, ``audit``."""
    reference: Mapped[str | None] = mapped_column(String(100), default=None)
    placed_by: Mapped[str] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(default=None)
    released_by: Mapped[str | None] = mapped_column(String(200), default=None)


class DestructionRecord(TenantScoped, Base):
    """One batch of retention destruction: which data class, under which rule, how many rows,
    how many were skipped because of a hold, when, and by whom (保险行业客户信息管理制度 (5))."""

    __tablename__ = "destruction_records"
    __table_args__ = (Index("ix_destruction_records_tenant_at", "tenant_id", "finished_at"),)

    run_id: Mapped[str] = mapped_column(String(40))
    batch: Mapped[int]
    data_class: Mapped[str] = mapped_column(String(40))
    rule: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(20))
    """``anonymized`` (personal fields removed, the row kept for the records the law requires)
    or ``erased``."""
    cutoff: Mapped[datetime]
    """Rows whose retention ended before this instant were due."""
    count: Mapped[int]
    held: Mapped[int] = mapped_column(default=0)
    subject_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The ids of the rows destroyed (ids only: no personal data)."""
    actor: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)
