"""Customer flows that cross into privacy and audit: what a caller sees of a customer, and
what a change leaves in the audit log.

Disclosure (保险行业客户信息管理制度 3; 服务人员规范 IV): personal fields are masked unless the
caller holds ``customers:read_clear`` at the customer's unit **and** declared a purpose
(``X-Purpose``); each clear read appends ``customer.read_clear`` to the audit log with the
fields shown, the purpose and the client. Changes append ``customer.changed`` with the
before/after of each personal field masked and fingerprinted (a keyed hash an auditor can match
against a value, :func:`fingerprint`), never in clear.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.audit import AuditActor, actor_from, record
from core.auth.guards import Access
from core.customers.models import PERSONAL_FIELDS, Customer
from core.customers.schemas import CustomerOut
from core.orgs.models import OrgUnit
from core.privacy.crypto import keyring_of
from core.privacy.masking import mask
from core.privacy.purposes import check_purpose

READ_CLEAR = "customers:read_clear"


def _unit_paths(session: Session, unit_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not unit_ids:
        return {}
    rows = session.execute(select(OrgUnit.id, OrgUnit.path).where(OrgUnit.id.in_(unit_ids)))
    return {unit_id: path for unit_id, path in rows}


def disclose(
    session: Session,
    access: Access,
    customers: Sequence[Customer],
    *,
    purpose: str | None,
    source: str | None = None,
) -> list[CustomerOut]:
    """Render ``customers`` for the caller: masked, or in clear (and audited, in the caller's
    transaction: commit it) where the caller may read them in clear for ``purpose``.

    :raises Problem: 422 for an unknown purpose; 403 when a purpose is declared by a caller
        who holds ``customers:read_clear`` nowhere.
    """
    if purpose is None:
        return [CustomerOut.of(c) for c in customers]
    check_purpose(purpose)
    access.require_anywhere(READ_CLEAR)
    paths = _unit_paths(session, {c.unit_id for c in customers})
    actor = actor_from(access.principal, session)
    out = []
    for c in customers:
        clear = c.anonymized_at is None and access.can(READ_CLEAR, paths.get(c.unit_id, "\0"))
        if clear:
            fields = [f for f in PERSONAL_FIELDS if getattr(c, f) is not None]
            record(
                session,
                action="customer.read_clear",
                actor=actor,
                target=("customer", c.id),
                details={"fields": fields, "purpose": purpose, "client_id": actor.client_id},
                source=source,
            )
        out.append(CustomerOut.of(c, clear=clear, purpose=purpose))
    return out


def disclose_one(
    session: Session,
    access: Access,
    customer: Customer,
    *,
    purpose: str | None,
    source: str | None = None,
) -> CustomerOut:
    """:func:`disclose` for one customer; a declared purpose the caller may not use at this
    customer's unit is a 403 (not a silently masked answer)."""
    out = disclose(session, access, [customer], purpose=purpose, source=source)[0]
    if purpose is not None and out.masked and customer.anonymized_at is None:
        raise Problem(
            403,
            f"{READ_CLEAR!r} does not hold at this customer's unit",
            slug="forbidden",
            permission=READ_CLEAR,
        )
    return out


def fingerprint(session: Session, field: str, value: str) -> str:
    """A keyed hash of ``value`` (the tenant's active index key; ``fp<v>:`` names versions
    after the first): lets an auditor confirm a value seen in the audit log without the log
    holding it, as long as that index-key version is kept."""
    keyring = keyring_of(session)
    tenant_id = session.info["tenant_id"]
    version = keyring.active_index_version(session, tenant_id)
    prefix = "fp:" if version == 1 else f"fp{version}:"
    return prefix + keyring.blind_index(session, tenant_id, f"audit.{field}", value, version)[:16]


TRACKED_FIELDS: tuple[str, ...] = (
    *PERSONAL_FIELDS,
    "id_type",
    "kind",
    "unit_id",
    "preferred_channel",
    "preferred_language",
)
"""Fields whose changes the audit log describes."""


def snapshot(customer: Customer) -> dict[str, str | None]:
    """The tracked fields as strings (personal ones in clear: in memory only, to diff)."""
    values = {}
    for field in TRACKED_FIELDS:
        value = getattr(customer, field)
        values[field] = None if value is None else str(getattr(value, "value", value))
    return values


def change_details(
    session: Session, before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, Any]:
    """Audit details of a change: per changed field, its before and after; personal fields
    masked and fingerprinted, never in clear."""

    def side(field: str, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if field in PERSONAL_FIELDS:
            return {"masked": mask(field, value), "fingerprint": fingerprint(session, field, value)}
        return {"value": value}

    return {
        field: {"before": side(field, before.get(field)), "after": side(field, after.get(field))}
        for field in TRACKED_FIELDS
        if before.get(field) != after.get(field)
    }


def record_change(
    session: Session,
    actor: AuditActor,
    customer: Customer,
    before: Mapping[str, str | None],
    *,
    action: str = "customer.changed",
    source: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append ``action`` with the before/after of every changed field (see
    :func:`change_details`); returns the changes (nothing is recorded when there are none)."""
    changes = change_details(session, before, snapshot(customer))
    if changes:
        record(
            session,
            action=action,
            actor=actor,
            target=("customer", customer.id),
            details={"changes": changes, **(extra or {})},
            source=source,
        )
    return changes


def export_rows(
    customers: Sequence[Customer], *, clear_fields: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Export rows: masked personal fields, or — under a sharing agreement — the agreement's
    fields in clear and the other personal fields left out."""
    rows = []
    for c in customers:
        row: dict[str, Any] = {
            "id": str(c.id),
            "kind": str(c.kind.value),
            "unit_id": str(c.unit_id),
            "id_type": c.id_type,
        }
        for field in PERSONAL_FIELDS:
            if clear_fields is None:
                row[field] = mask(field, getattr(c, field))
            elif field in clear_fields:
                row[field] = getattr(c, field)
        rows.append(row)
    return rows


def export_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Export rows as CSV (the columns of the first row)."""
    import csv
    import io

    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
