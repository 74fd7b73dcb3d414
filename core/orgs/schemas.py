"""Organization unit schemas at the HTTP edge."""

from __future__ import annotations

import uuid
from datetime import datetime

from core.api.schemas import Code, Input, Name, Output
from core.orgs.models import OrgUnit, UnitKind


class UnitCreate(Input):
    """A new organization unit under ``parent_id`` (omit for a new root)."""

    code: Code
    name: Name
    kind: UnitKind
    parent_id: uuid.UUID | None = None
    name_en: Name | None = None


class UnitMove(Input):
    """Move a unit (with its subtree) under another parent."""

    parent_id: uuid.UUID


class UnitOut(Output):
    """An organization unit."""

    id: uuid.UUID
    code: str
    name: str
    name_en: str | None
    kind: UnitKind
    parent_id: uuid.UUID | None
    depth: int
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, unit: OrgUnit) -> UnitOut:
        """Render a unit."""
        return cls(
            id=unit.id,
            code=unit.code,
            name=unit.name,
            name_en=unit.name_en,
            kind=unit.kind,
            parent_id=unit.parent_id,
            depth=unit.depth,
            active=unit.active,
            created_at=unit.created_at,
            updated_at=unit.updated_at,
        )


class UnitNode(Output):
    """A unit with its children (the tree view)."""

    id: uuid.UUID
    code: str
    name: str
    kind: UnitKind
    active: bool
    children: list[UnitNode]
