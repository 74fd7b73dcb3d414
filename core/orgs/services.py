"""Organization units: the tree, with cheap ancestor and descendant queries (materialized path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import String, func, literal, select, update
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.db import new_id
from core.orgs.models import OrgUnit, UnitKind


def get_unit(session: Session, unit_id: uuid.UUID) -> OrgUnit:
    """The unit ``unit_id`` of the session's tenant, or a 404 problem."""
    unit = session.get(OrgUnit, (session.info["tenant_id"], unit_id))
    if unit is None:
        raise not_found("organization unit", unit_id)
    return unit


def get_unit_by_code(session: Session, code: str) -> OrgUnit | None:
    """The unit with ``code`` in the session's tenant, or None."""
    return session.scalars(select(OrgUnit).where(OrgUnit.code == code)).one_or_none()


def unit_paths(session: Session, unit_ids: Iterable[str | uuid.UUID]) -> list[tuple[str, str]]:
    """(path, code) of the units named, or of the tenant's roots when none is named.

    An empty list of units means "the whole tenant" for clients and webhook subscriptions; the
    roots' paths then stand for it in permission checks.
    """
    ids = [uuid.UUID(str(u)) for u in unit_ids]
    stmt = select(OrgUnit.path, OrgUnit.code)
    stmt = stmt.where(OrgUnit.id.in_(ids)) if ids else stmt.where(OrgUnit.parent_id.is_(None))
    return [(path, code) for path, code in session.execute(stmt).all()]


def create_unit(
    session: Session,
    *,
    code: str,
    name: str,
    kind: UnitKind,
    parent_id: uuid.UUID | None,
    name_en: str | None = None,
) -> OrgUnit:
    """Create a unit under ``parent_id`` (None: a root). Codes are unique in a tenant."""
    if get_unit_by_code(session, code) is not None:
        raise Problem(409, f"a unit with code {code!r} already exists", slug="duplicate")
    unit_id = new_id()
    if parent_id is None:
        path, depth = f"/{unit_id}/", 0
    else:
        parent = get_unit(session, parent_id)
        if not parent.active:
            raise Problem(422, f"parent unit {parent.code} is deactivated", slug="inactive-parent")
        path, depth = f"{parent.path}{unit_id}/", parent.depth + 1
    unit = OrgUnit(
        id=unit_id,
        code=code,
        name=name,
        name_en=name_en,
        kind=kind,
        parent_id=parent_id,
        path=path,
        depth=depth,
    )
    session.add(unit)
    session.flush()
    return unit


def descendants_query(unit: OrgUnit, *, include_self: bool = True):  # type: ignore[no-untyped-def]
    """A SELECT of the unit's subtree (an index range scan on ``(tenant_id, path)``)."""
    stmt = select(OrgUnit).where(OrgUnit.path.startswith(unit.path, autoescape=True))
    if not include_self:
        stmt = stmt.where(OrgUnit.id != unit.id)
    return stmt.order_by(OrgUnit.path)


def ancestors(session: Session, unit: OrgUnit) -> Sequence[OrgUnit]:
    """The unit's ancestors from the root down, itself excluded (one primary-key IN query)."""
    ids = unit.ancestor_ids()[:-1]
    if not ids:
        return []
    rows = session.scalars(select(OrgUnit).where(OrgUnit.id.in_(ids))).all()
    return sorted(rows, key=lambda u: u.depth)


def move_unit(session: Session, unit: OrgUnit, new_parent_id: uuid.UUID) -> OrgUnit:
    """Move ``unit`` and its subtree under ``new_parent_id`` (one UPDATE of the paths)."""
    parent = get_unit(session, new_parent_id)
    if parent.path.startswith(unit.path):
        raise Problem(422, "a unit cannot be moved under itself or its descendants", slug="cycle")
    old_path, new_path = unit.path, f"{parent.path}{unit.id}/"
    depth_delta = parent.depth + 1 - unit.depth
    session.execute(
        update(OrgUnit)
        .where(OrgUnit.path.startswith(old_path, autoescape=True))
        .values(
            path=literal(new_path, String()) + func.substr(OrgUnit.path, len(old_path) + 1),
            depth=OrgUnit.depth + depth_delta,
        )
        .execution_options(synchronize_session=False)
    )
    unit.parent_id = parent.id
    session.flush()
    session.expire_all()
    return get_unit(session, unit.id)


def deactivate_unit(session: Session, unit: OrgUnit) -> OrgUnit:
    """Deactivate a unit; refused while active units remain below it."""
    active_children = session.scalar(
        select(func.count())
        .select_from(OrgUnit)
        .where(OrgUnit.parent_id == unit.id, OrgUnit.active.is_(True))
    )
    if active_children:
        raise Problem(
            409,
            f"unit {unit.code} still has {active_children} active sub-units",
            slug="unit-has-children",
        )
    unit.active = False
    session.flush()
    return unit
