"""Sharing agreements (保险行业客户信息管理制度 (4)): the register, and the check every export or
integration that sends personal data to a third party must pass.

:func:`require_agreement` refuses (409 ``agreement-expired`` / ``agreement-inactive``, 422
``fields-not-covered``) an agreement that is terminated, not yet in force, expired, or that does
not cover the fields being sent; each use is written to the audit log (``sharing.used``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.customers.models import PERSONAL_FIELDS
from core.privacy.models import SharingAgreement

THIRD_PARTY_KINDS = (
    "reinsurer",
    "claims_assessor",
    "call_centre",
    "agency",
    "it_provider",
    "regulator",
    "other",
)
LEGAL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "emergency",
    "public_interest",
    "disclosed",
    "other_law",
)
"""个人信息保护法 第十三条."""
EXPIRING_SOON = dt.timedelta(days=30)


def get_agreement(session: Session, agreement_id: uuid.UUID) -> SharingAgreement:
    """The agreement of the session's tenant, or a 404 problem."""
    found = session.get(SharingAgreement, (session.info["tenant_id"], agreement_id))
    if found is None:
        raise not_found("sharing agreement", agreement_id)
    return found


def check_fields(fields: Iterable[str]) -> list[str]:
    """``fields`` if all are personal fields (sorted, unique), else a 422 problem."""
    unknown = sorted(set(fields) - set(PERSONAL_FIELDS))
    if unknown:
        raise Problem(
            422,
            f"not personal fields: {unknown}",
            slug="invalid-fields",
            fields=list(PERSONAL_FIELDS),
        )
    return sorted(set(fields))


def status_of(agreement: SharingAgreement, today: dt.date) -> str:
    """``active``, ``expiring`` (within 30 days), ``expired``, ``pending`` (not yet in force) or
    ``terminated``."""
    if not agreement.active:
        return "terminated"
    if today < agreement.starts_on:
        return "pending"
    if today > agreement.expires_on:
        return "expired"
    if agreement.expires_on - today <= EXPIRING_SOON:
        return "expiring"
    return "active"


def require_agreement(
    session: Session, agreement_id: uuid.UUID, fields: Iterable[str], today: dt.date
) -> SharingAgreement:
    """The agreement, if it allows sending ``fields`` today (see the module docstring)."""
    agreement = get_agreement(session, agreement_id)
    status = status_of(agreement, today)
    if status in ("expired", "terminated", "pending"):
        raise Problem(
            409,
            f"sharing agreement {agreement.reference} with {agreement.third_party} is {status}"
            + (f" (expired {agreement.expires_on})" if status == "expired" else "")
            + ": no personal data may be sent under it",
            slug="agreement-expired" if status == "expired" else "agreement-inactive",
            agreement=agreement.reference,
            agreement_status=status,
        )
    missing = sorted(set(fields) - set(agreement.fields))
    if missing:
        raise Problem(
            422,
            f"sharing agreement {agreement.reference} does not cover {missing}",
            slug="fields-not-covered",
            covered=list(agreement.fields),
        )
    return agreement


def agreements(session: Session) -> list[SharingAgreement]:
    """The tenant's agreements, soonest expiry first."""
    return list(
        session.scalars(
            select(SharingAgreement).order_by(SharingAgreement.expires_on, SharingAgreement.id)
        )
    )
