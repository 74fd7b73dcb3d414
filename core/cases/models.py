"""Case records: complaints, appeals, consultations, claim reports, whistle-blowing, service.

Tables (all tenant-owned, composite keys ``(tenant_id, id)``, composite foreign keys):

* :class:`Case` — the request and its handling; ``state`` follows the lifecycle table of
  :mod:`core.cases.lifecycle`; ``version`` is the ETag (optimistic concurrency).
* :class:`CaseEvent` — the append-only timeline: every registration, transition, notice,
  clock change and assignment, with who, when, why, before/after and the approver.
* :class:`CaseClock` — one row per deadline clock (rule, citation, source plugin, start, due,
  pauses, extensions, status, provisional). Open clocks are found by an index range scan on
  the due time (``ix_case_clocks_open_due`` and the per-tenant ``ix_case_clocks_tenant_open_due``).
* :class:`CaseCategory` — the tenant-editable classification (seeded for every tenant).
* :class:`CaseCounter` — named counters (case-number sequences, round-robin pointers),
  incremented with one upsert in the caller's transaction.
* :class:`Attachment` — materials, notices and reports, stored through
  :mod:`core.cases.storage` (checksum, size, media type, storage key), encrypted at rest
  with the tenant data key (:mod:`core.privacy.files`, ``key_version``).
"""

from __future__ import annotations

import enum
import json
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, Index, String, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk, utcnow
from core.privacy.fields import Sealed, SealedText
from core.privacy.masking import mask_text


def _enum(cls: type[enum.Enum], length: int = 32) -> Enum:
    return Enum(
        cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


class CaseType(enum.StrEnum):
    """The kinds of request a customer makes (DOMAIN.md, 'What happens')."""

    COMPLAINT = "complaint"  # 投诉
    APPEAL = "appeal"  # 申诉
    CONSULTATION = "consultation"  # 咨询
    CLAIM_REPORT = "claim_report"  # 报案
    WHISTLEBLOWING = "whistleblowing"  # 举报
    SERVICE_REQUEST = "service_request"  # 售后服务
    DATA_SUBJECT_REQUEST = "data_subject_request"  # 个人信息权利请求
    """Opened and moved only by its data-subject request (core.privacy.request_cases): it
    puts the request in the work queue with its deadline clock, reminders and escalation."""


class Channel(enum.StrEnum):
    """Where a request came in."""

    ONLINE = "online"
    HOTLINE = "hotline"
    FAX = "fax"
    LETTER = "letter"
    WALK_IN = "walk_in"
    EMAIL = "email"
    REGULATOR = "regulator"  # 监管转办
    API = "api"


class ServiceKind(enum.StrEnum):
    """What an after-sales service request (售后服务) asks for."""

    POLICY_QUERY = "policy_query"  # 保单查询
    POLICY_CHANGE = "policy_change"  # 保全 (变更)
    RENEWAL = "renewal"  # 续保
    CLAIM_ASSISTANCE = "claim_assistance"  # 理赔协助
    OTHER = "other"


OPEN_CLOCK_STATUSES = ("running", "paused")
"""Clock statuses that may still move; ``met``, ``breached`` and ``cancelled`` are final."""


class CaseCategory(TenantScoped, Timestamped, Base):
    """A class of the tenant's classification (e.g. 销售 sales, 理赔 claims), editable by admins."""

    __tablename__ = "case_categories"
    __table_args__ = (
        tenant_fk("parent_id", "case_categories"),
        UniqueConstraint("tenant_id", "code"),
    )

    code: Mapped[str] = mapped_column(String(64))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    case_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The case types the category applies to; empty: all."""
    active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    builtin: Mapped[bool] = mapped_column(default=False)


class Case(TenantScoped, Timestamped, Base):
    """A customer's request and its handling."""

    __tablename__ = "cases"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        tenant_fk("customer_id", "customers"),
        tenant_fk("policy_id", "policies"),
        tenant_fk("assignee_id", "people"),
        tenant_fk("category_id", "case_categories"),
        tenant_fk("parent_case_id", "cases"),
        tenant_fk("created_by_id", "people"),
        UniqueConstraint("tenant_id", "number"),
        Index("ix_cases_tenant_state", "tenant_id", "state"),
        Index("ix_cases_tenant_unit", "tenant_id", "unit_id"),
        Index("ix_cases_tenant_assignee", "tenant_id", "assignee_id"),
        Index("ix_cases_tenant_customer", "tenant_id", "customer_id"),
        Index("ix_cases_tenant_next_due", "tenant_id", "next_due_at"),
        Index("ix_cases_tenant_parent", "tenant_id", "parent_case_id"),
    )

    number: Mapped[str] = mapped_column(String(64))
    type: Mapped[CaseType] = mapped_column(_enum(CaseType))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    state: Mapped[str] = mapped_column(String(32), default="registered")
    sealed_enc: Mapped[str | None] = mapped_column(SealedText, default=None)
    """The sealed record of the free text below (:data:`CASE_TEXT_FIELDS`,
    :data:`REPORTER_FIELDS`): one AES-256-GCM ciphertext under the tenant's data key."""
    key_version: Mapped[int] = mapped_column(default=0)
    anonymized_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when retention removed the case's personal free text (the case record stays)."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    unit_id: Mapped[uuid.UUID]
    category_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    policy_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    """The handler (经办人)."""
    assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    service_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    complexity: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Flags such as ``complex``, ``particularly_complex``, ``new_facts``."""

    # An appeal (申诉) re-examines a decided complaint: the complaint it is about.
    parent_case_id: Mapped[uuid.UUID | None] = mapped_column(default=None)

    # 监管转办: the regulator's reference, its due date and the written report (第十三条).
    regulator_reference: Mapped[str | None] = mapped_column(String(100), default=None)
    regulator_due_date: Mapped[date | None] = mapped_column(default=None)
    regulator_reported_at: Mapped[datetime | None] = mapped_column(default=None)

    # 举报: the reporter's identity (sealed below), shown only with ``cases:whistleblower``.
    reporter_anonymous: Mapped[bool] = mapped_column(default=False)

    # Resolution (第十四条; 2020-complaints 第十九条); the texts are sealed below.
    missing_materials: Mapped[list[str]] = mapped_column(JSON, default=list)
    refer_to: Mapped[str | None] = mapped_column(String(300), default=None)
    """Where a request that is not the tenant's to handle belongs (whom to turn to)."""
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    answer_channel: Mapped[str | None] = mapped_column(String(32), default=None)
    review_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    review_decided_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)

    next_due_at: Mapped[datetime | None] = mapped_column(default=None)
    """The earliest due of the case's running clocks (work queues sort on it)."""
    version: Mapped[int] = mapped_column(default=1)
    """Bumped by every change; the ETag. ``If-Match`` must carry it."""
    last_event_seq: Mapped[int] = mapped_column(default=0)

    __mapper_args__ = {"version_id_col": version}

    # The free text of the case, sealed in ``sealed_enc`` (:mod:`core.privacy.fields`): what the
    # customer wrote or said, and what the handlers wrote back. The API masks identifiers in it
    # (phone, identity and bank-account numbers, e-mail addresses) unless the caller may read
    # it in clear for a declared purpose (core.cases.disclosure).
    # The record keeps each text's masked form too (computed when sealed, where it differs):
    # a page of the work queue shows them without masking at every read.
    __sealed_column__ = "sealed_enc"
    subject = Sealed[str](mask=mask_text)
    description = Sealed[str | None](mask=mask_text)
    not_accepted_reason = Sealed[str | None](mask=mask_text)
    plan = Sealed[str | None](mask=mask_text)
    """A service request's handling plan (保险售后服务管理办法 三.2)."""
    decision = Sealed[str | None](mask=mask_text)
    answer = Sealed[str | None](mask=mask_text)
    review_reason = Sealed[str | None](mask=mask_text)
    review_decision = Sealed[str | None](mask=mask_text)
    regulator_report = Sealed[str | None](mask=mask_text)
    withdrawn_reason = Sealed[str | None](mask=mask_text)
    reporter_name = Sealed[str | None]()
    reporter_contact = Sealed[str | None]()
    reporter_id_number = Sealed[str | None]()


CASE_TEXT_FIELDS: tuple[str, ...] = (
    "subject",
    "description",
    "not_accepted_reason",
    "plan",
    "decision",
    "answer",
    "review_reason",
    "review_decision",
    "regulator_report",
    "withdrawn_reason",
)
"""A case's free-text fields (sealed; masked in the API without clear access)."""
REPORTER_FIELDS: tuple[str, ...] = ("reporter_name", "reporter_contact", "reporter_id_number")
"""A whistle-blower's identity (sealed; shown only with ``cases:whistleblower`` and a purpose)."""
EVENT_TEXT_KEYS: frozenset[str] = frozenset({*CASE_TEXT_FIELDS, "content"})
"""Keys of a timeline event's ``before``/``after``/``data`` that hold free text: kept in the
event's sealed record, not in its JSON columns (``content`` is a notice's body)."""


class CaseEvent(TenantScoped, Base):
    """One entry of a case's timeline. Append-only: the ORM refuses updates and deletes.

    :param kind: ``registered``, ``transition``, ``notice``, ``assigned``, ``clock.paused``,
        ``clock.resumed``, ``clock.extended``, ``clock.restarted``, ``clock.recomputed``,
        ``attachment``, ``note``.
    """

    __tablename__ = "case_events"
    __table_args__ = (
        tenant_fk("case_id", "cases"),
        tenant_fk("actor_id", "people"),
        tenant_fk("approver_id", "people"),
        UniqueConstraint("tenant_id", "case_id", "seq"),
    )

    case_id: Mapped[uuid.UUID]
    seq: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    """When it happened (may be earlier than ``recorded_at`` for a letter received yesterday)."""
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(40), default=None)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor: Mapped[str] = mapped_column(String(200))
    """``person:<username>``, ``client:<client id>`` or ``system:<what>``."""
    from_state: Mapped[str | None] = mapped_column(String(32), default=None)
    to_state: Mapped[str | None] = mapped_column(String(32), default=None)
    before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Values before the change, without free text (that is in ``texts``)."""
    after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approver_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    approver: Mapped[str | None] = mapped_column(String(200), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Kind-specific details: a notice's channel, a clock's old and new due ... (a notice's
    text is in ``texts``)."""
    sealed_enc: Mapped[str | None] = mapped_column(SealedText, default=None)
    """The sealed record of ``reason`` and ``texts``."""
    key_version: Mapped[int] = mapped_column(default=0)

    __sealed_column__ = "sealed_enc"
    reason = Sealed[str | None]()
    """Why (a transition's reason, an extension's or a pause's): free text, sealed."""
    texts = Sealed[str | None]()
    """JSON ``{"before": {...}, "after": {...}, "data": {...}}`` of the free-text keys
    (:data:`EVENT_TEXT_KEYS`) split off ``before``/``after``/``data`` (:func:`split_texts`)."""


_TEXTS_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""The encoder of :attr:`CaseEvent.texts` (``json.dumps``'s with these options, made once)."""


def split_texts(
    before: dict[str, Any], after: dict[str, Any], data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str | None]:
    """``before``, ``after`` and ``data`` without their free text, and that text as the JSON
    of :attr:`CaseEvent.texts` (None when there is none)."""
    parts: dict[str, dict[str, Any]] = {}
    plain = []
    for name, values in (("before", before), ("after", after), ("data", data)):
        texts = {k: v for k, v in values.items() if k in EVENT_TEXT_KEYS}
        if texts:
            parts[name] = texts
        plain.append({k: v for k, v in values.items() if k not in EVENT_TEXT_KEYS})
    encoded = _TEXTS_JSON.encode(parts) if parts else None
    return plain[0], plain[1], plain[2], encoded


def event_parts(e: CaseEvent) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An event's ``before``, ``after`` and ``data`` with their free text put back."""
    texts: dict[str, dict[str, Any]] = json.loads(e.texts) if e.texts else {}
    return (
        {**(e.before or {}), **texts.get("before", {})},
        {**(e.after or {}), **texts.get("after", {})},
        {**(e.data or {}), **texts.get("data", {})},
    )


class AppendOnlyError(RuntimeError):
    """An update or delete of a timeline event was attempted."""


@event.listens_for(CaseEvent, "before_update")
def _refuse_event_update(_mapper: Mapper[Any], _conn: Any, target: CaseEvent) -> None:
    # Only the platform rewrites an event's sealed record, with single-column UPDATEs that
    # never go through the ORM: re-encryption under a new key (core.privacy.rotation) and the
    # erasure of its free text at the end of retention (core.privacy.retention).
    raise AppendOnlyError(f"timeline event {target.id} is append-only")


@event.listens_for(CaseEvent, "before_delete")
def _refuse_event_delete(_mapper: Mapper[Any], _conn: Any, target: CaseEvent) -> None:
    raise AppendOnlyError(f"timeline event {target.id} is append-only")


class CaseClock(TenantScoped, Timestamped, Base):
    """One deadline clock of a case, as the deadline engine computed it.

    The queryable fields are columns; the full history (pauses, extensions, restarts) and the
    rule are in ``history`` so :func:`core.cases.clocks.to_state` rebuilds the engine's
    :class:`~core.deadlines.ClockState` exactly.
    """

    __tablename__ = "case_clocks"
    __table_args__ = (
        tenant_fk("case_id", "cases"),
        Index("ix_case_clocks_tenant_case", "tenant_id", "case_id"),
        # The SLA sweep (all tenants, platform path): open clocks by due time.
        Index(
            "ix_case_clocks_open_due",
            "due_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # Work queues and the per-tenant sweep (RLS): the same, led by the tenant.
        Index(
            "ix_case_clocks_tenant_open_due",
            "tenant_id",
            "due_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # Recomputation after a calendar year is loaded.
        Index(
            "ix_case_clocks_provisional",
            "tenant_id",
            postgresql_where=text("provisional AND status IN ('running', 'paused')"),
            sqlite_where=text("provisional AND status IN ('running', 'paused')"),
        ),
    )

    case_id: Mapped[uuid.UUID]
    clock: Mapped[str] = mapped_column(String(64))
    citation: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))
    """The plugin whose rule won (``statutory_cn``, a policy plugin, ``regulator``)."""
    statutory: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int]
    unit: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    last_day: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="running")
    """``running``, ``paused``, ``met``, ``breached`` or ``cancelled`` (case withdrawn)."""
    paused_at: Mapped[datetime | None] = mapped_column(default=None)
    paused_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    extensions: Mapped[int] = mapped_column(default=0)
    provisional: Mapped[bool] = mapped_column(default=False)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    breach_notified_at: Mapped[datetime | None] = mapped_column(default=None)
    history: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CaseCounter(TenantScoped, Base):
    """A named counter of the tenant: ``number:<prefix>`` sequences, ``rr:<unit>`` pointers.

    Incremented with a single ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` in the
    caller's transaction, so two concurrent registrations never get the same number.
    """

    __tablename__ = "case_counters"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(120))
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Attachment(TenantScoped, Base):
    """A file attached to a case: materials, a notice, a decision letter, a regulator report."""

    __tablename__ = "case_attachments"
    __table_args__ = (
        tenant_fk("case_id", "cases"),
        tenant_fk("uploaded_by_id", "people"),
        Index("ix_case_attachments_tenant_case", "tenant_id", "case_id"),
    )

    case_id: Mapped[uuid.UUID]
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(300))
    key_version: Mapped[int | None] = mapped_column(default=None)
    """The tenant data-key version the stored file is encrypted with (core.privacy.files);
    None: a file stored before encryption, in clear (served, and encrypted by the
    ``privacy_reencrypt`` job). ``sha256`` and ``size`` are always the uploaded plaintext's."""
    purpose: Mapped[str] = mapped_column(String(32), default="material")
    uploaded_by_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    uploaded_by: Mapped[str] = mapped_column(String(200), default="")
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseView(TenantScoped, Timestamped, Base):
    """A person's saved work-queue view: a name and the list filters."""

    __tablename__ = "case_views"
    __table_args__ = (
        tenant_fk("person_id", "people"),
        UniqueConstraint("tenant_id", "person_id", "name"),
    )

    person_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(100))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
