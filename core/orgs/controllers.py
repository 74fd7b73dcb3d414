"""HTTP API of organization units: ``/api/v1/org-units``."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, paginate
from core.api.problems import Problem
from core.auth.guards import Access
from core.orgs import services
from core.orgs.models import OrgUnit, UnitKind
from core.orgs.schemas import UnitCreate, UnitMove, UnitNode, UnitOut


class OrgUnitController(Controller):
    """The organization tree of the caller's tenant."""

    path = "/api/v1/org-units"
    tags = ["organization"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listOrgUnits", summary="List organization units")
    @uses_database
    def list_units(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        kind: FromQuery[UnitKind | None] = None,
        parent_id: FromQuery[uuid.UUID | None] = None,
        under: Annotated[
            uuid.UUID | None, Parameter(description="Only this unit and the units below it")
        ] = None,
        active: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[UnitOut]:
        """Units the caller may read (``org:read``), filtered, by cursor."""
        access.require_anywhere("org:read")
        stmt = select(OrgUnit).where(access.unit_clause("org:read", OrgUnit.id))
        if kind is not None:
            stmt = stmt.where(OrgUnit.kind == kind)
        if parent_id is not None:
            stmt = stmt.where(OrgUnit.parent_id == parent_id)
        if active is not None:
            stmt = stmt.where(OrgUnit.active.is_(active))
        if under is not None:
            base = services.get_unit(session, under)
            stmt = stmt.where(OrgUnit.path.startswith(base.path, autoescape=True))
        return paginate(session, stmt, OrgUnit.id, cursor=cursor, limit=limit, to_item=UnitOut.of)

    @get("/tree", operation_id="getOrgTree", summary="The organization tree")
    @uses_database
    def tree(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> list[UnitNode]:
        """The visible part of the tree, nested; roots are the highest visible units."""
        access.require_anywhere("org:read")
        units = session.scalars(
            select(OrgUnit)
            .where(access.unit_clause("org:read", OrgUnit.id))
            .order_by(OrgUnit.depth, OrgUnit.code)
        ).all()
        nodes = {
            u.id: UnitNode(
                id=u.id, code=u.code, name=u.name, kind=u.kind, active=u.active, children=[]
            )
            for u in units
        }
        roots: list[UnitNode] = []
        for u in units:
            parent = nodes.get(u.parent_id) if u.parent_id else None
            (parent.children if parent else roots).append(nodes[u.id])
        return roots

    @get(
        "/{unit_id:uuid}",
        operation_id="getOrgUnit",
        summary="One organization unit",
    )
    @uses_database
    def get_unit(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        unit_id: FromPath[uuid.UUID],
    ) -> UnitOut:
        """A unit by id (404 when it is not in the caller's tenant or units)."""
        unit = services.get_unit(session, unit_id)
        access.require("org:read", unit, hide=True)
        return UnitOut.of(unit)

    @post(
        "/",
        operation_id="createOrgUnit",
        summary="Create an organization unit",
    )
    @uses_database
    def create(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[UnitCreate],
    ) -> UnitOut:
        """Create a unit; needs ``org:write`` at the parent (at a root: anywhere at the top)."""
        if data.parent_id is None:
            access.require_anywhere("org:write")
            if not any(p.count("/") == 2 for p in access.prefixes("org:write")):
                raise Problem(403, "creating a root unit needs org:write at a root unit")
        else:
            access.require("org:write", services.get_unit(session, data.parent_id))
        unit = services.create_unit(
            session,
            code=data.code,
            name=data.name,
            kind=data.kind,
            parent_id=data.parent_id,
            name_en=data.name_en,
        )
        session.commit()
        return UnitOut.of(unit)

    @post(
        "/{unit_id:uuid}/move",
        operation_id="moveOrgUnit",
        summary="Move a unit",
        status_code=200,
    )
    @uses_database
    def move(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        unit_id: FromPath[uuid.UUID],
        data: JSONBody[UnitMove],
    ) -> UnitOut:
        """Move a unit and its subtree; needs ``org:write`` at the unit and the new parent."""
        unit = services.get_unit(session, unit_id)
        access.require("org:write", unit)
        access.require("org:write", services.get_unit(session, data.parent_id))
        moved = services.move_unit(session, unit, data.parent_id)
        session.commit()
        return UnitOut.of(moved)

    @post(
        "/{unit_id:uuid}/deactivate",
        operation_id="deactivateOrgUnit",
        summary="Deactivate a unit",
        status_code=200,
    )
    @uses_database
    def deactivate(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        unit_id: FromPath[uuid.UUID],
    ) -> UnitOut:
        """Deactivate a unit with no active sub-units; its records stay."""
        unit = services.get_unit(session, unit_id)
        access.require("org:write", unit)
        unit = services.deactivate_unit(session, unit)
        session.commit()
        return UnitOut.of(unit)


ROUTES = [OrgUnitController]
