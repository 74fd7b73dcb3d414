"""Authorization: what a principal may do at an organization unit.

A person holds roles at units; a role's permissions apply at its unit and every unit below
it. A token's scopes narrow that further: the effective permissions at a unit are the union,
over the person's assignments at that unit or above it, of ``role permissions ∩ token scopes``.
An integrator client has its scopes at the units it was registered for (none listed: the whole
tenant). Checks therefore need only the unit's materialized path, never a tree walk.

Answers: no permission anywhere → 403; the record exists but lies outside the caller's units
→ 404, exactly as for another tenant's id, so nothing is revealed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.api.problems import Problem
from core.auth.principal import Principal
from core.orgs.models import OrgUnit
from core.people.models import Role, RoleAssignment


@dataclass(frozen=True)
class Grant:
    """Permissions held at one unit (and, by inheritance, below it)."""

    unit_path: str
    permissions: frozenset[str]


class Access:
    """The caller's permissions for one request, resolved once (one query for a person)."""

    def __init__(self, principal: Principal, grants: Iterable[Grant]) -> None:
        self.principal = principal
        self.grants = tuple(g for g in grants if g.permissions)

    def prefixes(self, permission: str) -> list[str]:
        """Unit paths under which ``permission`` holds (minimal set, no nested duplicates)."""
        paths = sorted({g.unit_path for g in self.grants if permission in g.permissions})
        minimal: list[str] = []
        for path in paths:
            if not any(path.startswith(p) for p in minimal):
                minimal.append(path)
        return minimal

    def has_anywhere(self, permission: str) -> bool:
        """True if ``permission`` holds at some unit."""
        return any(permission in g.permissions for g in self.grants)

    def can(self, permission: str, unit_path: str) -> bool:
        """True if ``permission`` holds at the unit with materialized path ``unit_path``."""
        return any(
            permission in g.permissions and unit_path.startswith(g.unit_path) for g in self.grants
        )

    def require_anywhere(self, permission: str) -> None:
        """Raise a 403 problem unless ``permission`` holds somewhere."""
        if not self.has_anywhere(permission):
            raise Problem(
                403,
                f"this requires the {permission!r} permission",
                slug="forbidden",
                permission=permission,
            )

    def require(self, permission: str, unit: OrgUnit, *, hide: bool = False) -> None:
        """Raise unless ``permission`` holds at ``unit``.

        :param hide: answer 404 instead of 403 (the caller is reading a specific record).
        """
        self.require_anywhere(permission)
        if not self.can(permission, unit.path):
            if hide:
                raise Problem(404, "the record was not found", slug="not-found")
            raise Problem(
                403,
                f"{permission!r} does not hold at unit {unit.code}",
                slug="forbidden",
                permission=permission,
                unit=unit.code,
            )

    def unit_clause(
        self, permission: str, unit_id_column: InstrumentedAttribute[object]
    ) -> ColumnElement[bool]:
        """A WHERE clause keeping rows whose unit lies under a unit where ``permission`` holds.

        ``unit_id_column`` is the row's unit id column (e.g. ``Customer.unit_id``).
        """
        prefixes = self.prefixes(permission)
        if not prefixes:
            return false()
        visible = (
            select(OrgUnit.id)
            .where(
                OrgUnit.tenant_id == self.principal.tenant_id,
                or_(*(OrgUnit.path.startswith(p, autoescape=True) for p in prefixes)),
            )
            .correlate(None)
        )
        return unit_id_column.in_(visible)


def person_grants_query(person_id: Any) -> Select[str, list[str]]:
    """The unit path and role permissions of each of a person's assignments at active units."""
    return (
        select(OrgUnit.path, Role.permissions)
        .join(RoleAssignment, RoleAssignment.unit_id == OrgUnit.id)
        .join(Role, Role.id == RoleAssignment.role_id)
        .where(RoleAssignment.person_id == person_id, OrgUnit.active.is_(True))
    )


def person_access(principal: Principal, rows: Iterable[tuple[str, Iterable[str]]]) -> Access:
    """A person's access from ``(unit path, role permissions)`` rows: each role's permissions
    narrowed to the token's scopes."""
    scopes = principal.scopes
    return Access(principal, [Grant(path, frozenset(perms) & scopes) for path, perms in rows])


def load_access(session: Session, principal: Principal) -> Access:
    """Resolve the principal's grants: one query for a person, one for a client's units."""
    scopes = principal.scopes
    if principal.kind == "person" and principal.person_id is not None:
        rows = session.execute(person_grants_query(principal.person_id)).all()
        return person_access(principal, [(path, perms) for path, perms in rows])
    if principal.kind == "client":
        if principal.client_unit_ids:
            paths = session.scalars(
                select(OrgUnit.path).where(OrgUnit.id.in_(principal.client_unit_ids))
            ).all()
        else:
            paths = list(session.scalars(select(OrgUnit.path).where(OrgUnit.parent_id.is_(None))))
        return Access(principal, [Grant(path, scopes) for path in paths])
    return Access(principal, [])
