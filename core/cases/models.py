"""Case records: complaints, appeals, consultations, claim reports, whistle-blowing, service."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk, utcnow


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


class Case(TenantScoped, Timestamped, Base):
    """A customer's request and its handling. The cases issue grows this into the full record."""

    __tablename__ = "cases"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        tenant_fk("customer_id", "customers"),
        tenant_fk("policy_id", "policies"),
        tenant_fk("assignee_id", "people"),
        UniqueConstraint("tenant_id", "number"),
        Index("ix_cases_tenant_status", "tenant_id", "status"),
        Index("ix_cases_tenant_unit", "tenant_id", "unit_id"),
    )

    number: Mapped[str] = mapped_column(String(32))
    type: Mapped[CaseType] = mapped_column(_enum(CaseType))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    status: Mapped[str] = mapped_column(String(32), default="registered")
    subject: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    unit_id: Mapped[uuid.UUID]
    customer_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    policy_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(default=1)
