"""Customers (policyholders, insured, beneficiaries, prospects) and their policies."""

from __future__ import annotations

import enum
import uuid
from datetime import date

from sqlalchemy import Enum, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk


def _enum(cls: type[enum.Enum], length: int = 32) -> Enum:
    return Enum(
        cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


class CustomerKind(enum.StrEnum):
    """The customer's relation to the insurer (客户服务管理规定 第二条)."""

    POLICYHOLDER = "policyholder"  # 投保人
    INSURED = "insured"  # 被保险人
    BENEFICIARY = "beneficiary"  # 受益人
    PROSPECT = "prospect"  # 潜在客户


class ContactChannel(enum.StrEnum):
    """How a customer prefers to be contacted."""

    PHONE = "phone"
    SMS = "sms"
    EMAIL = "email"
    LETTER = "letter"
    WECHAT = "wechat"


class Customer(TenantScoped, Timestamped, Base):
    """A person or organization the tenant serves."""

    __tablename__ = "customers"
    __table_args__ = (tenant_fk("unit_id", "org_units"),)

    kind: Mapped[CustomerKind] = mapped_column(_enum(CustomerKind))
    name: Mapped[str] = mapped_column(String(200))
    id_type: Mapped[str | None] = mapped_column(String(32), default=None)
    id_number: Mapped[str | None] = mapped_column(String(64), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    address: Mapped[str | None] = mapped_column(String(500), default=None)
    preferred_channel: Mapped[ContactChannel] = mapped_column(
        _enum(ContactChannel), default=ContactChannel.PHONE
    )
    preferred_language: Mapped[str] = mapped_column(String(16), default="zh-CN")
    unit_id: Mapped[uuid.UUID]


class LineOfBusiness(enum.StrEnum):
    """Line of business of a policy."""

    LIFE = "life"
    HEALTH = "health"
    ACCIDENT = "accident"
    ANNUITY = "annuity"
    PROPERTY = "property"
    MOTOR = "motor"
    LIABILITY = "liability"


class Policy(TenantScoped, Timestamped, Base):
    """An insurance policy, owned by a unit and sold by an agent."""

    __tablename__ = "policies"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        tenant_fk("agent_id", "people"),
        tenant_fk("policyholder_id", "customers"),
        tenant_fk("insured_id", "customers"),
        UniqueConstraint("tenant_id", "number"),
    )

    number: Mapped[str] = mapped_column(String(64))
    product_code: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(200))
    line_of_business: Mapped[LineOfBusiness] = mapped_column(_enum(LineOfBusiness))
    term_months: Mapped[int | None] = mapped_column(default=None)
    start_date: Mapped[date]
    cooling_off_end: Mapped[date | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16), default="in_force")
    unit_id: Mapped[uuid.UUID]
    agent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    policyholder_id: Mapped[uuid.UUID]
    insured_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
