"""Data-subject requests (个人信息保护法 第四十四至四十七条): register with a deadline, handle,
and fulfil — an export of everything held (access, copy), corrections with before/after in the
audit log (correction), or anonymization keeping the case records (deletion).

The deadline is ``dsr_working_days`` working days after receipt (``privacy_cn`` at the
customer's unit, default 15), counted on the tenant calendar (Chinese holidays and 调休). A
refusal states its reason (第五十条). Every step is in the audit log. Each request has a case
of type ``data_subject_request`` that follows it (:mod:`core.privacy.request_cases`): the work
queue, the reminder, the escalation when overdue and the daily digest come from there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.audit import AuditActor, record
from core.calendars.services import tenant_calendar
from core.customers.flows import record_change, snapshot
from core.customers.models import PERSONAL_FIELDS, Customer
from core.db import utcnow
from core.deadlines import compute_due
from core.orgs.models import OrgUnit
from core.privacy import request_cases
from core.privacy.masking import mask_text
from core.privacy.models import DataSubjectRequest
from core.privacy.policy import PrivacyPolicy
from core.privacy.subjects import anonymize_customer, export_person, holds_for
from core.tenancy.models import Tenant

KINDS: dict[str, tuple[str, str]] = {
    "access": ("查阅", "See the data held (第四十五条)"),
    "copy": ("复制", "A machine-readable copy (第四十五条)"),
    "correction": ("更正、补充", "Correct or complete the data (第四十六条)"),
    "deletion": ("删除", "Delete the data (第四十七条)"),
}
OPEN_STATES = frozenset({"received", "in_progress"})
CHANNELS: tuple[str, ...] = (
    "hotline",
    "online",
    "app",
    "letter",
    "email",
    "walk_in",
    "wechat",
    "fax",
)
"""Where a request may come in."""
CORRECTABLE = (*PERSONAL_FIELDS, "id_type")


def _audit(
    session: Session,
    request: DataSubjectRequest,
    action: str,
    actor: AuditActor,
    source: str | None,
    **details: Any,
) -> None:
    record(
        session,
        action=action,
        actor=actor,
        target=("privacy_request", request.id),
        details={
            "number": request.number,
            "kind": request.kind,
            "customer_id": str(request.customer_id),
            **details,
        },
        source=source,
    )


def register(
    session: Session,
    *,
    customer: Customer,
    unit: OrgUnit,
    kind: str,
    channel: str,
    policy: PrivacyPolicy,
    actor: AuditActor,
    received_at: dt.datetime | None = None,
    note: str | None = None,
    source: str | None = None,
) -> DataSubjectRequest:
    """Register a request, with its deadline; ``privacy.request_received`` in the audit log."""
    if kind not in KINDS:
        raise Problem(
            422,
            f"unknown request kind {kind!r}; one of: {', '.join(KINDS)}",
            slug="unknown-request-kind",
        )
    if customer.anonymized_at is not None:
        raise Problem(409, "the customer was anonymized", slug="customer-anonymized")
    now = utcnow()
    received = received_at or now
    if received.tzinfo is None:
        received = received.replace(tzinfo=dt.UTC)
    if received > now + dt.timedelta(minutes=5):
        raise Problem(422, "received_at lies in the future", slug="invalid-time")
    tenant = session.get(Tenant, customer.tenant_id)
    assert tenant is not None
    calendar = tenant_calendar(session, tenant.time_zone)
    due = compute_due(received, policy.dsr_working_days, "working_days", calendar)
    local = received.astimezone(calendar.tz)
    request = DataSubjectRequest(
        number=f"DSR-{local:%Y%m%d}-{secrets.token_hex(3).upper()}",
        kind=kind,
        channel=channel,
        state="received",
        customer_id=customer.id,
        unit_id=unit.id,
        received_at=received,
        due_at=due.due,
        last_day=due.last_day,
        working_days=policy.dsr_working_days,
        created_by=actor.label,
        note=note,
    )
    session.add(request)
    session.flush()
    case = request_cases.open_case(
        session,
        request,
        unit=unit,
        policy=policy,
        calendar=calendar,
        number_format=tenant.case_number_format,
        actor=actor,
    )
    _audit(
        session,
        request,
        "privacy.request_received",
        actor,
        source,
        due_at=due.due.isoformat(),
        working_days=policy.dsr_working_days,
        policy=policy.source,
        case=case.number,
    )
    return request


def _require_open(request: DataSubjectRequest, action: str) -> None:
    if request.state not in OPEN_STATES:
        raise Problem(
            409,
            f"request {request.number} is {request.state}: it cannot {action}",
            slug="request-closed",
            state=request.state,
        )


def start(
    session: Session,
    request: DataSubjectRequest,
    *,
    actor: AuditActor,
    source: str | None = None,
) -> None:
    """The handler takes the request (``received`` → ``in_progress``)."""
    if request.state != "received":
        raise Problem(409, f"request {request.number} is {request.state}", slug="request-state")
    request.state = "in_progress"
    request.handler_id = actor.person_id
    request_cases.follow(session, request, "start", actor=actor, at=utcnow())
    _audit(session, request, "privacy.request_started", actor, source)


def _digest(document: Mapping[str, Any]) -> str:
    raw = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def export(
    session: Session,
    request: DataSubjectRequest,
    customer: Customer,
    *,
    actor: AuditActor,
    source: str | None = None,
) -> dict[str, Any]:
    """The person's export for an access or copy request (audited ``customer.exported``)."""
    if request.kind not in ("access", "copy"):
        raise Problem(409, f"a {request.kind} request has no export", slug="no-export")
    if request.state not in (*OPEN_STATES, "completed"):
        raise Problem(409, f"request {request.number} is {request.state}", slug="request-state")
    document = {"request": request.number, **export_person(session, customer)}
    digest = _digest(document)
    record(
        session,
        action="customer.exported",
        actor=actor,
        target=("customer", customer.id),
        details={
            "purpose": "data_subject_request",
            "request": request.number,
            "sha256": digest,
            "sections": {k: len(v) for k, v in document.items() if isinstance(v, list)},
        },
        source=source,
    )
    return document


def fulfil(
    session: Session,
    request: DataSubjectRequest,
    customer: Customer,
    *,
    actor: AuditActor,
    changes: Mapping[str, str | None] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Do what the request asks and complete it; returns the result (for access and copy, the
    export is in ``result["export"]``, not stored).

    :raises Problem: 409 ``legal-hold`` for a deletion while the customer is held (the reasons
        are listed: refuse the request with them, or wait); 422 for a correction without
        changes or with fields that cannot be corrected.
    """
    _require_open(request, "be fulfilled")
    result: dict[str, Any] = {}
    stored: dict[str, Any] = {}
    if request.kind in ("access", "copy"):
        document = export(session, request, customer, actor=actor, source=source)
        stored = {
            "export_sha256": _digest(document),
            "sections": {k: len(v) for k, v in document.items() if isinstance(v, list)},
        }
        result = {**stored, "export": document}
    elif request.kind == "correction":
        if not changes:
            raise Problem(422, "a correction needs the fields to change", slug="no-changes")
        unknown = sorted(set(changes) - set(CORRECTABLE))
        if unknown:
            raise Problem(
                422,
                f"these fields cannot be corrected: {unknown}",
                slug="invalid-fields",
                correctable=list(CORRECTABLE),
            )
        if changes.get("name") is None and "name" in changes:
            raise Problem(422, "the name cannot be removed", slug="invalid-fields")
        before = snapshot(customer)
        for field, value in changes.items():
            setattr(customer, field, value)
        session.flush()
        done = record_change(
            session,
            actor,
            customer,
            before,
            action="customer.corrected",
            source=source,
            extra={"request": request.number},
        )
        stored = result = {"fields_corrected": sorted(done)}
    elif request.kind == "deletion":
        holds = holds_for(session, [customer.id]).get(customer.id)
        if holds:
            raise Problem(
                409,
                "the customer's data is under a hold and cannot be deleted now: "
                + "; ".join(holds),
                slug="legal-hold",
                holds=holds,
            )
        token = anonymize_customer(
            session,
            customer,
            actor=actor,
            reason=f"data-subject request {request.number}",
            source=source,
        )
        stored = result = {"anonymous_token": token}
    request.state, request.completed_at = "completed", utcnow()
    request.result = stored
    request_cases.follow(session, request, "fulfil", actor=actor, at=request.completed_at)
    _audit(
        session,
        request,
        "privacy.request_fulfilled",
        actor,
        source,
        on_time=request.completed_at <= request.due_at,
        **{k: v for k, v in stored.items() if k != "sections"},
    )
    return result


def refuse(
    session: Session,
    request: DataSubjectRequest,
    *,
    reason: str,
    actor: AuditActor,
    source: str | None = None,
) -> None:
    """Refuse, stating the reason (第五十条)."""
    _require_open(request, "be refused")
    request.state, request.completed_at, request.refusal_reason = "refused", utcnow(), reason
    request_cases.follow(
        session, request, "refuse", actor=actor, at=request.completed_at, reason=reason
    )
    _audit(session, request, "privacy.request_refused", actor, source, reason=mask_text(reason))


def withdraw(
    session: Session,
    request: DataSubjectRequest,
    *,
    actor: AuditActor,
    source: str | None = None,
) -> None:
    """The customer withdraws the request."""
    _require_open(request, "be withdrawn")
    request.state, request.completed_at = "withdrawn", utcnow()
    request_cases.follow(session, request, "withdraw", actor=actor, at=request.completed_at)
    _audit(session, request, "privacy.request_withdrawn", actor, source)
