"""Consent: what a customer agreed to, and the check that stops marketing without it.

保险行业客户信息管理制度 (2) and (6): information is used for the purposes stated, and the
customer keeps the right to know, control and choose. A consent event records the purpose, the
channel it came through, the time and the version of the notice the customer was shown; a
withdrawal is an event too (the history is kept, the latest event per purpose counts).

Enforcement: :func:`notification_refusal` is asked by the notification planner for every
customer recipient; a marketing message (event type ``marketing.*``, or a payload with
``"purpose": "marketing"``) to a customer whose current marketing consent is not "given" is not
sent, and the reason goes into the delivery log as a skipped delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.audit import AuditActor, record
from core.privacy.models import Consent

CONSENT_PURPOSES: dict[str, tuple[str, str]] = {
    "marketing": ("营销推广", "Marketing: offers, campaigns, cross-selling"),
    "third_party_sharing": (
        "向第三方提供",
        "Sharing with third parties beyond what a contract needs",
    ),
    "sensitive_data": ("处理敏感个人信息", "Processing sensitive data (health, biometrics)"),
    "automated_decisions": ("自动化决策", "Automated decisions and profiling"),
}
"""Purposes that need the customer's own consent (others rest on the contract or the law)."""

CONSENT_CHANNELS: tuple[str, ...] = (
    "phone",
    "online",
    "app",
    "paper",
    "sms",
    "wechat",
    "email",
    "in_person",
)
MARKETING = "marketing"
MARKETING_EVENT_PREFIX = "marketing."


def check_consent_purpose(purpose: str) -> str:
    """``purpose`` if consent can be recorded for it, else a 422 problem."""
    if purpose not in CONSENT_PURPOSES:
        raise Problem(
            422,
            f"unknown consent purpose {purpose!r}; one of: {', '.join(CONSENT_PURPOSES)}",
            slug="unknown-consent-purpose",
            purposes=sorted(CONSENT_PURPOSES),
        )
    return purpose


def record_consent(
    session: Session,
    *,
    customer_id: uuid.UUID,
    purpose: str,
    given: bool,
    channel: str,
    notice_version: str,
    at: datetime,
    actor: AuditActor,
    evidence: str | None = None,
    source: str | None = None,
) -> Consent:
    """Append a consent (``given``) or withdrawal event, and its audit entry."""
    check_consent_purpose(purpose)
    consent = Consent(
        customer_id=customer_id,
        purpose=purpose,
        given=given,
        channel=channel,
        notice_version=notice_version,
        at=at,
        recorded_by=actor.label,
        evidence=evidence,
    )
    session.add(consent)
    session.flush()
    record(
        session,
        action="consent.given" if given else "consent.withdrawn",
        actor=actor,
        target=("customer", customer_id),
        details={
            "purpose": purpose,
            "channel": channel,
            "notice_version": notice_version,
            "at": at.isoformat(),
            "consent_id": str(consent.id),
        },
        source=source,
    )
    return consent


def history(session: Session, customer_id: uuid.UUID) -> list[Consent]:
    """Every consent event of the customer, oldest first."""
    return list(
        session.scalars(
            select(Consent)
            .where(Consent.customer_id == customer_id)
            .order_by(Consent.at, Consent.recorded_at, Consent.id)
        )
    )


def current(session: Session, customer_id: uuid.UUID) -> dict[str, Consent]:
    """The latest event per purpose (the customer's current choice)."""
    latest: dict[str, Consent] = {}
    for event in history(session, customer_id):
        latest[event.purpose] = event
    return latest


def has_consent(session: Session, customer_id: uuid.UUID, purpose: str) -> bool:
    """Whether the customer's current choice for ``purpose`` is "given"."""
    event = session.scalars(
        select(Consent)
        .where(Consent.customer_id == customer_id, Consent.purpose == purpose)
        .order_by(Consent.at.desc(), Consent.recorded_at.desc(), Consent.id.desc())
        .limit(1)
    ).first()
    return event is not None and event.given


def is_marketing(event_type: str, payload: Mapping[str, object]) -> bool:
    """Whether an outbox event is a marketing message."""
    return event_type.startswith(MARKETING_EVENT_PREFIX) or payload.get("purpose") == MARKETING


def notification_refusal(
    session: Session, event_type: str, payload: Mapping[str, object], recipient_ref: str
) -> str | None:
    """Why a message must not go to this recipient (None: it may).

    Only customers are checked (``recipient_ref`` ``customer:<id>``); only marketing needs
    their consent."""
    kind, _, ident = recipient_ref.partition(":")
    if kind != "customer" or not is_marketing(event_type, payload):
        return None
    try:
        customer_id = uuid.UUID(ident)
    except ValueError:
        return "not sent: the customer is unknown"
    if not has_consent(session, customer_id, MARKETING):
        return "not sent: the customer has not consented to marketing (or withdrew consent)"
    return None
