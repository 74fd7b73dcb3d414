"""Tenant provisioning and resolution: the platform path that creates and finds tenants."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.cases.services import seed_case_categories
from core.db import Database
from core.people.services import seed_builtin_roles
from core.plugins.services import ensure_revision_row
from core.tenancy.models import PlatformAuditEntry, Tenant


class ProvisioningError(ValueError):
    """A tenant cannot be created or changed as asked."""


def record_platform_action(
    session: Session, *, actor: str, action: str, tenant_id: uuid.UUID | None, **detail: Any
) -> None:
    """Append an entry to the platform audit log (in the caller's transaction)."""
    session.add(PlatformAuditEntry(actor=actor, action=action, tenant_id=tenant_id, detail=detail))


def get_tenant_by_slug(session: Session, slug: str) -> Tenant | None:
    """The tenant with ``slug``, or None. Tenants are readable by the application role."""
    return session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()


def seed_tenant(session: Session, tenant_id: uuid.UUID) -> list[str]:
    """Create what every tenant starts with and lacks: the built-in roles and, when the case
    module is installed, the default case categories. Idempotent; platform or tenant session.

    Returns what was created (``"role agent"``, ``"case category claims"`` ...).
    """
    created = [f"role {role.key}" for role in seed_builtin_roles(session, tenant_id)]
    created += [f"case category {c.code}" for c in seed_case_categories(session, tenant_id)]
    if ensure_revision_row(session, tenant_id):
        created.append("plugin configuration revision")
    return created


def provision_tenant(
    db: Database,
    *,
    slug: str,
    name: str,
    time_zone: str = "Asia/Shanghai",
    locale: str = "zh-CN",
    actor: str = "platform",
) -> Tenant:
    """Create a tenant with the built-in roles, through the audited platform path."""
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ProvisioningError(f"unknown time zone {time_zone!r}") from exc
    with db.platform_transaction() as session:
        if get_tenant_by_slug(session, slug) is not None:
            raise ProvisioningError(f"tenant {slug!r} already exists")
        tenant = Tenant(slug=slug, name=name, time_zone=time_zone, locale=locale)
        session.add(tenant)
        session.flush()
        seed_tenant(session, tenant.id)
        record_platform_action(
            session, actor=actor, action="tenant.provision", tenant_id=tenant.id, slug=slug
        )
    return tenant
