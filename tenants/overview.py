"""A cross-tenant overview for operators (``insurdesk tenants list``), read on the platform path."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from core.cases.models import Case
from core.db import Database
from core.orgs.models import OrgUnit
from core.people.models import Person
from core.tenancy.models import Tenant


@dataclass(frozen=True)
class TenantRow:
    """One tenant and the size of its organization."""

    id: uuid.UUID
    slug: str
    name: str
    status: str
    units: int
    people: int
    cases: int
    manifest_digest: str | None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the id as a string)."""
        return asdict(self) | {"id": str(self.id)}


def tenant_overview(db: Database) -> list[TenantRow]:
    """Every tenant, ordered by slug, with its unit, people and case counts (4 queries)."""
    with db.platform_session() as session:
        counts: dict[str, dict[uuid.UUID, int]] = {}
        for name, model in (("units", OrgUnit), ("people", Person), ("cases", Case)):
            rows = session.execute(
                select(model.tenant_id, func.count()).group_by(model.tenant_id)
            ).all()
            counts[name] = {tid: int(n) for tid, n in rows}
        tenants = session.scalars(select(Tenant).order_by(Tenant.slug)).all()
        return [
            TenantRow(
                id=t.id,
                slug=t.slug,
                name=t.name,
                status=t.status,
                units=counts["units"].get(t.id, 0),
                people=counts["people"].get(t.id, 0),
                cases=counts["cases"].get(t.id, 0),
                manifest_digest=t.manifest_digest,
            )
            for t in tenants
        ]
