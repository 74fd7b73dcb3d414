"""The security-assessment report (保险行业客户信息管理制度 (3): 定期进行信息安全风险评估):
where personal data is stored and how, who can read it in clear, unmasked reads and exports in
a period, sharing agreements and their expiry, data-subject requests, retention backlog,
holds, keys."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit.models import AuditEntry
from core.auth.models import OAuthClient
from core.cases.models import Attachment
from core.orgs.models import OrgUnit
from core.people.models import Person, Role, RoleAssignment
from core.privacy.models import DataSubjectRequest, LegalHold, TenantKey
from core.privacy.requests import OPEN_STATES
from core.privacy.retention import backlog
from core.privacy.rotation import pending_rows, sealed_models
from core.privacy.sharing import agreements, status_of
from core.tenancy.models import Tenant

READ_CLEAR = "customers:read_clear"

PLAIN_LOCATIONS: tuple[dict[str, str], ...] = (
    {
        "table": "case_clocks",
        "fields": "history (pause and extension reasons)",
        "protection": "not encrypted (the deadline engine's state, read by the cross-tenant "
        "sweeps); tenant isolation (RLS); erased with the case's free text at retention",
    },
    {
        "table": "case_attachments",
        "fields": "filename (and the timeline's attachment events: name, size, SHA-256)",
        "protection": "not encrypted (the file names uploaders gave); tenant isolation (RLS); "
        "the row is deleted with its file at retention, the timeline event stays",
    },
    {
        "table": "deliveries",
        "fields": "recipient_masked",
        "protection": "masked at write (138****5678), address hash only; erased after the "
        "delivery-log retention period",
    },
    {
        "table": "audit_log",
        "fields": "details",
        "protection": "masked values and keyed fingerprints only; append-only, hash-chained; "
        "kept (the record of processing, 个人信息保护法 第五十六条: at least 3 years)",
    },
    {
        "table": "people",
        "fields": "display_name, email, phone (staff)",
        "protection": "not encrypted (staff directory); tenant isolation (RLS)",
    },
)
"""Personal data outside the encrypted columns, stated plainly for the assessment."""


def _storage(session: Session, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    active = session.scalar(
        select(TenantKey.version).where(TenantKey.purpose == "data", TenantKey.status == "active")
    )
    out: list[dict[str, Any]] = []
    for model in sealed_models():
        fields = model.__sealed_fields__
        out.append(
            {
                "table": model.__tablename__,
                "fields": sorted(fields),
                "protection": f"AES-256-GCM, one record per row, tenant data key v{active} "
                "wrapped by the platform master key; bound to tenant, table and row",
                "exact_match_search": sorted(n for n, f in fields.items() if f.index),
                "rows": int(session.scalar(select(func.count()).select_from(model)) or 0),
            }
        )
    out.append(_attachment_files(session, tenant_id, active))
    return out + [dict(loc) for loc in PLAIN_LOCATIONS]


def _attachment_files(session: Session, tenant_id: uuid.UUID, active: int | None) -> dict[str, Any]:
    in_clear = Attachment.key_version.is_(None)
    rows = session.execute(
        select(in_clear, func.count()).where(Attachment.tenant_id == tenant_id).group_by(in_clear)
    )
    counts = {is_clear: n for is_clear, n in rows}
    clear = int(counts.get(True, 0))
    total = clear + int(counts.get(False, 0))
    protection = (
        f"in the attachment store (local directory or S3), each file AES-256-GCM under the "
        f"tenant data key (v{active} for new uploads) wrapped by the platform master key; "
        "bound to tenant and attachment; SHA-256 of the upload checked at every download"
    )
    if clear:
        protection += (
            f"; {clear} stored before encryption are still in clear until the "
            "privacy_reencrypt job encrypts them"
        )
    return {
        "table": "case_attachments (files)",
        "fields": ["materials uploaded to cases (medical records, letters)"],
        "protection": protection,
        "exact_match_search": [],
        "rows": total,
        "in_clear": clear,
    }


def _clear_readers(session: Session) -> dict[str, Any]:
    roles = [r for r in session.scalars(select(Role)) if READ_CLEAR in (r.permissions or [])]
    people = session.execute(
        select(Person.username, Role.key, OrgUnit.code)
        .join(RoleAssignment, RoleAssignment.person_id == Person.id)
        .join(Role, Role.id == RoleAssignment.role_id)
        .join(OrgUnit, OrgUnit.id == RoleAssignment.unit_id)
        .where(Role.id.in_([r.id for r in roles]), Person.active.is_(True))
        .order_by(Person.username, Role.key)
    ).all()
    clients = [
        c.client_id
        for c in session.scalars(select(OAuthClient).where(OAuthClient.active.is_(True)))
        if READ_CLEAR in (c.scopes or [])
    ]
    return {
        "permission": READ_CLEAR,
        "roles": sorted(r.key for r in roles),
        "people": [{"username": u, "role": k, "unit": code} for u, k, code in people],
        "clients": sorted(clients),
    }


def _reads(session: Session, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    rows = session.execute(
        select(AuditEntry.action, AuditEntry.actor, AuditEntry.target_id, AuditEntry.details).where(
            AuditEntry.action.in_(("customer.read_clear", "customer.exported")),
            AuditEntry.at >= since,
            AuditEntry.at < until,
        )
    ).all()
    reads = [
        (actor, target, details or {})
        for action, actor, target, details in rows
        if action == "customer.read_clear"
    ]
    return {
        "unmasked_reads": len(reads),
        "customers_read_in_clear": len({target for _, target, _ in reads}),
        "by_purpose": dict(Counter(d.get("purpose", "?") for _, _, d in reads)),
        "by_actor": dict(Counter(actor for actor, _, _ in reads).most_common(20)),
        "exports": sum(1 for action, *_ in rows if action == "customer.exported"),
    }


def privacy_report(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
) -> dict[str, Any]:
    """The report of the session's tenant (see the module docstring)."""
    tenant = session.get(Tenant, tenant_id)
    today = now.date()
    requests = session.scalars(select(DataSubjectRequest)).all()
    open_requests = [r for r in requests if r.state in OPEN_STATES]
    closed = [r for r in requests if r.completed_at is not None and r.state == "completed"]
    keys = session.scalars(select(TenantKey).order_by(TenantKey.purpose, TenantKey.version)).all()
    return {
        "tenant": tenant.slug if tenant else str(tenant_id),
        "generated_at": now.isoformat(),
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "storage": _storage(session, tenant_id),
        "keys": [
            {
                "purpose": k.purpose,
                "version": k.version,
                "status": k.status,
                "master_key_id": k.master_key_id,
                "created_at": k.created_at.isoformat(),
            }
            for k in keys
        ],
        "rows_on_retired_keys": pending_rows(session, tenant_id) if keys else {},
        "clear_readers": _clear_readers(session),
        "access": _reads(session, since, until),
        "sharing_agreements": [
            {
                "third_party": a.third_party,
                "kind": a.third_party_kind,
                "reference": a.reference,
                "purpose": a.purpose,
                "fields": list(a.fields),
                "legal_basis": a.legal_basis,
                "expires_on": a.expires_on.isoformat(),
                "status": status_of(a, today),
            }
            for a in agreements(session)
        ],
        "requests": {
            "open": len(open_requests),
            "overdue": sum(1 for r in open_requests if r.due_at < now),
            "completed_on_time": sum(
                1 for r in closed if r.completed_at is not None and r.completed_at <= r.due_at
            ),
            "completed_late": sum(
                1 for r in closed if r.completed_at is not None and r.completed_at > r.due_at
            ),
        },
        "retention_backlog": backlog(session, tenant_id, now),
        "legal_holds": int(
            session.scalar(
                select(func.count()).select_from(LegalHold).where(LegalHold.released_at.is_(None))
            )
            or 0
        ),
    }
