"""Customers (policyholders, insured, beneficiaries, prospects) and their policies."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import Enum, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk
from core.privacy.fields import (
    Sealed,
    SealedText,
    normalize_id_number,
    normalize_name,
    normalize_phone,
)
from core.privacy.masking import (
    mask_address_text,
    mask_bank_account,
    mask_email,
    mask_id_number,
    mask_name,
    mask_phone,
)


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
    """A person or organization the tenant serves.

    Personal fields (name, identity number, phone, e-mail, address, bank account) are stored
    as one record encrypted with the tenant's data key (``personal_enc``,
    :mod:`core.privacy.fields`); name, phone and identity number have keyed blind indexes
    (``*_bidx``) for exact-match search.
    ``key_version`` is the data-key version the row is encrypted with, ``index_version`` the
    index-key version of its blind indexes (rotation re-encrypts and re-indexes rows below the
    active ones). An anonymized customer (deletion on request, retention) keeps
    its row, so cases and policies still point at it, with ``anonymized_at`` set and no
    personal data left.
    """

    __tablename__ = "customers"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        Index("ix_customers_tenant_phone_bidx", "tenant_id", "phone_bidx"),
        Index("ix_customers_tenant_id_number_bidx", "tenant_id", "id_number_bidx"),
        Index("ix_customers_tenant_name_bidx", "tenant_id", "name_bidx"),
        Index("ix_customers_tenant_key_version", "tenant_id", "key_version"),
    )

    kind: Mapped[CustomerKind] = mapped_column(_enum(CustomerKind))
    personal_enc: Mapped[str | None] = mapped_column(SealedText, default=None)
    """The sealed record of the personal fields below (one AES-256-GCM ciphertext)."""
    name_bidx: Mapped[str | None] = mapped_column(String(32), default=None)
    id_number_bidx: Mapped[str | None] = mapped_column(String(32), default=None)
    phone_bidx: Mapped[str | None] = mapped_column(String(32), default=None)
    key_version: Mapped[int] = mapped_column(default=0)
    index_version: Mapped[int] = mapped_column(default=0)
    """The index-key version the ``*_bidx`` columns were computed with (0: none)."""
    id_type: Mapped[str | None] = mapped_column(String(32), default=None)
    preferred_channel: Mapped[ContactChannel] = mapped_column(
        _enum(ContactChannel), default=ContactChannel.PHONE
    )
    preferred_language: Mapped[str] = mapped_column(String(16), default="zh-CN")
    unit_id: Mapped[uuid.UUID]
    anonymized_at: Mapped[datetime | None] = mapped_column(default=None)
    anonymous_token: Mapped[str | None] = mapped_column(String(40), default=None)
    """Set when the customer was anonymized: what cases and reports show instead of them."""

    __sealed_column__ = "personal_enc"
    name = Sealed[str](index="name_bidx", normalize=normalize_name, mask=mask_name)
    id_number = Sealed[str | None](
        index="id_number_bidx", normalize=normalize_id_number, mask=mask_id_number
    )
    phone = Sealed[str | None](index="phone_bidx", normalize=normalize_phone, mask=mask_phone)
    email = Sealed[str | None](mask=mask_email)
    address = Sealed[str | None](mask=mask_address_text)
    bank_account = Sealed[str | None](mask=mask_bank_account)


PERSONAL_FIELDS: tuple[str, ...] = (
    "name",
    "id_number",
    "phone",
    "email",
    "address",
    "bank_account",
)
"""The customer's encrypted personal fields, in display order."""


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
