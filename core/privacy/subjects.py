"""Everything held about one person: the export (right to access and copy), legal holds, and
anonymization (right to deletion, retention).

Anonymization keeps the customer row (cases, their timelines and policies still point at it,
as the records insurers must keep, 保险法 第八十七条) and removes the person from it: the name
becomes an anonymous token (``匿名客户 ANON-…``), every other personal field is erased, consent
history and request notes are deleted. The audit entry names the fields removed, not their
values. The attachment files of the customer's cases (medical records, letters: the evidence
of those records) are kept with their cases, encrypted, and go when the case's retention
ends (``case_attachment`` in :mod:`core.privacy.retention`), not with the customer.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.orm import Session

from core.audit import AuditActor, record
from core.audit.models import AuditEntry
from core.cases.models import (
    CASE_TEXT_FIELDS,
    REPORTER_FIELDS,
    Case,
    CaseClock,
    CaseEvent,
    CaseType,
)
from core.customers.models import PERSONAL_FIELDS, Customer, Policy
from core.db import utcnow
from core.notifications.models import Delivery
from core.orgs.models import OrgUnit
from core.privacy.models import Consent, DataSubjectRequest, LegalHold

REVIEW_WINDOW = dt.timedelta(days=30)
"""A closed complaint may still be taken to review (核查) for 30 days (2020-complaints 第二十条):
its customer is held that long."""


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return getattr(value, "value", value)


def export_person(session: Session, customer: Customer) -> dict[str, Any]:
    """A complete, machine-readable copy of what the tenant holds about ``customer`` (JSON):
    identity and contact data in clear, policies, cases with their timelines, consents,
    requests, the messages sent to them, and who read or changed their data (the audit
    entries about them)."""
    unit = session.get(OrgUnit, (customer.tenant_id, customer.unit_id))
    policies = session.scalars(
        select(Policy)
        .where(or_(Policy.policyholder_id == customer.id, Policy.insured_id == customer.id))
        .order_by(Policy.start_date)
    ).all()
    cases = session.scalars(
        select(Case).where(Case.customer_id == customer.id).order_by(Case.received_at)
    ).all()
    events: dict[uuid.UUID, list[CaseEvent]] = defaultdict(list)
    if cases:
        for event in session.scalars(
            select(CaseEvent)
            .where(CaseEvent.case_id.in_([c.id for c in cases]))
            .order_by(CaseEvent.case_id, CaseEvent.seq)
        ):
            events[event.case_id].append(event)
    consents = session.scalars(
        select(Consent).where(Consent.customer_id == customer.id).order_by(Consent.at)
    ).all()
    requests = session.scalars(
        select(DataSubjectRequest)
        .where(DataSubjectRequest.customer_id == customer.id)
        .order_by(DataSubjectRequest.received_at)
    ).all()
    deliveries = session.scalars(
        select(Delivery)
        .where(Delivery.recipient_ref == f"customer:{customer.id}")
        .order_by(Delivery.created_at)
    ).all()
    accesses = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.target_type == "customer", AuditEntry.target_id == str(customer.id))
        .order_by(AuditEntry.seq)
    ).all()
    return {
        "format": "insurdesk.person-export/1",
        "generated_at": utcnow().isoformat(),
        "customer": {
            "id": str(customer.id),
            "kind": _iso(customer.kind),
            **{field: getattr(customer, field) for field in PERSONAL_FIELDS},
            "id_type": customer.id_type,
            "preferred_channel": _iso(customer.preferred_channel),
            "preferred_language": customer.preferred_language,
            "unit": {"code": unit.code, "name": unit.name} if unit else None,
            "created_at": _iso(customer.created_at),
            "updated_at": _iso(customer.updated_at),
            "anonymized_at": _iso(customer.anonymized_at),
        },
        "policies": [
            {
                "number": p.number,
                "role": "policyholder" if p.policyholder_id == customer.id else "insured",
                "product_code": p.product_code,
                "product_name": p.product_name,
                "line_of_business": _iso(p.line_of_business),
                "start_date": _iso(p.start_date),
                "term_months": p.term_months,
                "cooling_off_end": _iso(p.cooling_off_end),
                "status": p.status,
            }
            for p in policies
        ],
        "cases": [
            {
                "number": c.number,
                "type": _iso(c.type),
                "channel": _iso(c.channel),
                "state": c.state,
                "subject": c.subject,
                "description": c.description,
                "received_at": _iso(c.received_at),
                "decision": c.decision,
                "answer": c.answer,
                "closed_at": _iso(c.closed_at),
                "timeline": [
                    {
                        "seq": e.seq,
                        "at": _iso(e.at),
                        "kind": e.kind,
                        "action": e.action,
                        "from_state": e.from_state,
                        "to_state": e.to_state,
                        "reason": e.reason,
                    }
                    for e in events[c.id]
                ],
            }
            for c in cases
        ],
        "consents": [
            {
                "purpose": c.purpose,
                "given": c.given,
                "channel": c.channel,
                "notice_version": c.notice_version,
                "at": _iso(c.at),
            }
            for c in consents
        ],
        "requests": [
            {
                "number": r.number,
                "kind": r.kind,
                "state": r.state,
                "received_at": _iso(r.received_at),
                "due_at": _iso(r.due_at),
                "completed_at": _iso(r.completed_at),
            }
            for r in requests
        ],
        "messages": [
            {
                "event": d.event_type,
                "channel": d.channel,
                "recipient": d.recipient_masked,
                "status": d.status,
                "sent_at": _iso(d.sent_at),
            }
            for d in deliveries
        ],
        "accesses": [
            {
                "at": _iso(e.at),
                "action": e.action,
                "by": e.actor,
                "purpose": (e.details or {}).get("purpose"),
                "fields": (e.details or {}).get("fields"),
            }
            for e in accesses
        ],
    }


def holds_for(
    session: Session, customer_ids: Iterable[uuid.UUID], now: dt.datetime | None = None
) -> dict[uuid.UUID, list[str]]:
    """Why each of ``customer_ids`` must not be destroyed now (customers without a hold are
    absent): an explicit legal hold, an open case, a case closed within the review window."""
    ids = list(customer_ids)
    if not ids:
        return {}
    now = now or utcnow()
    found: dict[uuid.UUID, list[str]] = defaultdict(list)
    for customer_id, reason, reference in session.execute(
        select(LegalHold.customer_id, LegalHold.reason, LegalHold.reference).where(
            LegalHold.customer_id.in_(ids), LegalHold.released_at.is_(None)
        )
    ):
        suffix = f" ({reference})" if reference else ""
        found[customer_id].append(f"legal hold: {reason}{suffix}")
    for case_customer, number, state, closed_at in session.execute(
        select(Case.customer_id, Case.number, Case.state, Case.closed_at).where(
            Case.customer_id.in_(ids),
            # A data-subject request's own case holds nothing: it is the request itself.
            Case.type != CaseType.DATA_SUBJECT_REQUEST,
            or_(Case.state != "closed", Case.closed_at > now - REVIEW_WINDOW),
        )
    ):
        assert case_customer is not None
        if state != "closed":
            found[case_customer].append(f"case {number} is open ({state})")
        else:
            found[case_customer].append(f"case {number} closed {closed_at:%Y-%m-%d}: review window")
    return dict(found)


ANONYMIZED_SUBJECT = "（已匿名）"
"""What an anonymized case's subject reads."""


def anonymize_case(session: Session, case: Case) -> list[str]:
    """Remove the personal free text of a closed case, keep the record: every sealed text
    field erased (the subject replaced), the timeline's sealed texts (reasons, notices,
    decisions) erased with single-column updates (the timeline stays append-only for
    everything else), the reasons in its clocks' history blanked. Returns the fields removed."""
    removed = [f for f in (*CASE_TEXT_FIELDS, *REPORTER_FIELDS) if getattr(case, f) is not None]
    for name in (*CASE_TEXT_FIELDS, *REPORTER_FIELDS):
        setattr(case, name, None)
    case.subject = ANONYMIZED_SUBJECT
    case.anonymized_at = utcnow()
    events = cast(Table, CaseEvent.__table__)
    session.execute(
        update(events)
        .where(events.c.tenant_id == case.tenant_id, events.c.case_id == case.id)
        .values(sealed_enc=None, key_version=0)
    )
    for clock in session.scalars(select(CaseClock).where(CaseClock.case_id == case.id)):
        clock.history = _without_reasons(clock.history)
    session.flush()
    return removed


def _without_reasons(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("" if k in ("reason", "pause_reason") and v else _without_reasons(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_reasons(v) for v in value]
    return value


def anonymize_customer(
    session: Session,
    customer: Customer,
    *,
    actor: AuditActor,
    reason: str,
    source: str | None = None,
    audit: bool = True,
) -> str:
    """Remove the person from ``customer`` (see the module docstring); returns the anonymous
    token. The caller checks holds first."""
    token = "ANON-" + secrets.token_hex(5).upper()
    removed = [f for f in PERSONAL_FIELDS if getattr(customer, f) is not None]
    customer.name = f"匿名客户 {token}"
    for field in PERSONAL_FIELDS:
        if field != "name":
            setattr(customer, field, None)
    customer.id_type = None
    customer.anonymized_at = utcnow()
    customer.anonymous_token = token
    session.execute(
        delete(Consent)
        .where(Consent.customer_id == customer.id)
        .execution_options(synchronize_session=False)
    )
    for request in session.scalars(
        select(DataSubjectRequest).where(
            DataSubjectRequest.customer_id == customer.id, DataSubjectRequest.sealed_enc.isnot(None)
        )
    ):
        request.note = None
    session.flush()
    if audit:
        record(
            session,
            action="customer.anonymized",
            actor=actor,
            target=("customer", customer.id),
            details={"fields_removed": removed, "token": token, "reason": reason},
            source=source,
        )
    return token
