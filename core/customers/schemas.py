"""Customer and policy schemas at the HTTP edge."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

import msgspec

from core.api.schemas import Code, Email, Input, Name, Output, Phone
from core.customers.models import ContactChannel, Customer, CustomerKind, LineOfBusiness, Policy
from core.privacy.fields import view

IdNumber = Annotated[str, msgspec.Meta(min_length=4, max_length=64, pattern=r"^[0-9A-Za-z\-]+$")]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
BankAccount = Annotated[str, msgspec.Meta(min_length=8, max_length=34, pattern=r"^[0-9A-Za-z ]+$")]


class CustomerCreate(Input):
    """A new customer owned by ``unit_id``."""

    kind: CustomerKind
    name: Name
    unit_id: uuid.UUID
    id_type: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    id_number: IdNumber | None = None
    phone: Phone | None = None
    email: Email | None = None
    address: Address | None = None
    bank_account: BankAccount | None = None
    preferred_channel: ContactChannel = ContactChannel.PHONE
    preferred_language: Annotated[str, msgspec.Meta(pattern=r"^(zh-CN|en)$")] = "zh-CN"


class CustomerUpdate(Input):
    """Fields of a customer that can change (omitted fields stay)."""

    name: Name | None = None
    phone: Phone | None = None
    email: Email | None = None
    address: Address | None = None
    bank_account: BankAccount | None = None
    id_type: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    id_number: IdNumber | None = None
    preferred_channel: ContactChannel | None = None
    preferred_language: Annotated[str, msgspec.Meta(pattern=r"^(zh-CN|en)$")] | None = None


class CustomerOut(Output):
    """A customer. Personal fields are masked (``138****5678``) unless ``masked`` is false:
    the caller holds ``customers:read_clear`` at the customer's unit and declared a purpose
    (``X-Purpose``), which is echoed in ``purpose``."""

    id: uuid.UUID
    kind: CustomerKind
    name: str
    unit_id: uuid.UUID
    id_type: str | None
    id_number: str | None
    phone: str | None
    email: str | None
    address: str | None
    bank_account: str | None
    preferred_channel: ContactChannel
    preferred_language: str
    masked: bool
    purpose: str | None
    anonymized: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: Customer, *, clear: bool = False, purpose: str | None = None) -> CustomerOut:
        """Render a customer, masked unless ``clear`` (an anonymized customer's name is its
        anonymous token, shown as it is)."""
        fields = view(c, clear=clear or c.anonymized_at is not None)
        return cls(
            id=c.id,
            kind=c.kind,
            name=fields["name"] or "",
            unit_id=c.unit_id,
            id_type=c.id_type,
            id_number=fields["id_number"],
            phone=fields["phone"],
            email=fields["email"],
            address=fields["address"],
            bank_account=fields["bank_account"],
            preferred_channel=c.preferred_channel,
            preferred_language=c.preferred_language,
            masked=not clear,
            purpose=purpose if clear else None,
            anonymized=c.anonymized_at is not None,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class PolicyCreate(Input):
    """A new policy; ``cooling_off_end`` defaults from the line of business and term."""

    number: Code
    product_code: Code
    product_name: Name
    line_of_business: LineOfBusiness
    start_date: date
    unit_id: uuid.UUID
    policyholder_id: uuid.UUID
    insured_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    term_months: Annotated[int, msgspec.Meta(ge=1, le=1200)] | None = None
    cooling_off_end: date | None = None


class PolicyOut(Output):
    """A policy."""

    id: uuid.UUID
    number: str
    product_code: str
    product_name: str
    line_of_business: LineOfBusiness
    term_months: int | None
    start_date: date
    cooling_off_end: date | None
    status: str
    unit_id: uuid.UUID
    agent_id: uuid.UUID | None
    policyholder_id: uuid.UUID
    insured_id: uuid.UUID | None

    @classmethod
    def of(cls, p: Policy) -> PolicyOut:
        """Render a policy."""
        return cls(
            id=p.id,
            number=p.number,
            product_code=p.product_code,
            product_name=p.product_name,
            line_of_business=p.line_of_business,
            term_months=p.term_months,
            start_date=p.start_date,
            cooling_off_end=p.cooling_off_end,
            status=p.status,
            unit_id=p.unit_id,
            agent_id=p.agent_id,
            policyholder_id=p.policyholder_id,
            insured_id=p.insured_id,
        )
