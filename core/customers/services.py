"""Customers and policies: data access for one aggregate each."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.customers.models import Customer, LineOfBusiness, Policy
from core.privacy.crypto import keyring_of

COOLING_OFF_DAYS = 15
"""Default cooling-off (犹豫期) for life and health policies over one year, in days
(健康保险管理办法 2019 第十五条: at least 15 days; the policy contract may give more)."""


def index_of(session: Session, field: str, value: str) -> str:
    """The blind index of ``value`` for the customer field ``field`` in the session's tenant,
    under the active index key (what a new row gets)."""
    return indexes_of(session, field, value)[0]


def indexes_of(session: Session, field: str, value: str) -> list[str]:
    """The blind indexes of ``value`` for the customer field ``field`` in the session's
    tenant, one per index-key version still in use (the active one first; two while an
    index-key rotation re-indexes the rows): what an exact-match search compares
    ``Customer.<field>_bidx`` with (``.in_(...)``; no row is decrypted)."""
    from core.privacy.crypto import INDEX

    sealed = Customer.__sealed_fields__[field]  # type: ignore[attr-defined]
    if sealed.index is None:
        raise ValueError(f"customer field {field!r} has no blind index")
    keyring = keyring_of(session)
    tenant_id = session.info["tenant_id"]
    normalized = sealed.normalize(value)
    active = keyring.active_index_version(session, tenant_id)
    versions = keyring.usable_versions(session, tenant_id, INDEX) or [active]
    ordered = [active, *(v for v in versions if v != active)]
    return [keyring.blind_index(session, tenant_id, field, normalized, v) for v in ordered]


def get_customer(session: Session, customer_id: uuid.UUID) -> Customer:
    """The customer ``customer_id`` of the session's tenant, or a 404 problem."""
    customer = session.get(Customer, (session.info["tenant_id"], customer_id))
    if customer is None:
        raise not_found("customer", customer_id)
    return customer


def get_policy(session: Session, policy_id: uuid.UUID) -> Policy:
    """The policy ``policy_id`` of the session's tenant, or a 404 problem."""
    policy = session.get(Policy, (session.info["tenant_id"], policy_id))
    if policy is None:
        raise not_found("policy", policy_id)
    return policy


def default_cooling_off_end(
    line: LineOfBusiness, start: date, term_months: int | None
) -> date | None:
    """The cooling-off end for a long-term life or health policy, None where none applies."""
    if line in (LineOfBusiness.LIFE, LineOfBusiness.HEALTH, LineOfBusiness.ANNUITY) and (
        term_months is None or term_months > 12
    ):
        return start + timedelta(days=COOLING_OFF_DAYS)
    return None


def ensure_policy_number_free(session: Session, number: str) -> None:
    """A 409 problem when ``number`` is taken in the tenant."""
    if session.scalars(select(Policy.id).where(Policy.number == number)).first() is not None:
        raise Problem(409, f"policy number {number!r} already exists", slug="duplicate")
