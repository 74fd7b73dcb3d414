"""People, roles and role-assignment schemas at the HTTP edge."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from core.api.schemas import Email, Input, Name, Output, Password, Phone, Username
from core.people.models import Person, Role, RoleAssignment

RoleKey = Annotated[str, msgspec.Meta(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class PersonCreate(Input):
    """A new member of staff. The password is optional (set later by the person)."""

    username: Username
    display_name: Name
    email: Email | None = None
    phone: Phone | None = None
    password: Password | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^(zh-CN|en)$")] = "zh-CN"


class PersonUpdate(Input):
    """Fields of a person that can change (omitted fields stay as they are)."""

    display_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    active: bool | None = None


class AssignmentOut(Output):
    """A role held by a person at a unit."""

    id: uuid.UUID
    person_id: uuid.UUID
    role_id: uuid.UUID
    unit_id: uuid.UUID
    created_at: datetime

    @classmethod
    def of(cls, a: RoleAssignment) -> AssignmentOut:
        """Render an assignment."""
        return cls(
            id=a.id,
            person_id=a.person_id,
            role_id=a.role_id,
            unit_id=a.unit_id,
            created_at=a.created_at,
        )


class PersonOut(Output):
    """A member of staff (never the password hash)."""

    id: uuid.UUID
    username: str
    display_name: str
    email: str | None
    phone: str | None
    locale: str
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, p: Person) -> PersonOut:
        """Render a person."""
        return cls(
            id=p.id,
            username=p.username,
            display_name=p.display_name,
            email=p.email,
            phone=p.phone,
            locale=p.locale,
            active=p.active,
            created_at=p.created_at,
        )


class RoleCreate(Input):
    """A tenant-defined role: a named set of permissions from the catalogue."""

    key: RoleKey
    name_zh: Name
    name_en: Name
    permissions: Annotated[list[str], msgspec.Meta(max_length=100)]


class RoleOut(Output):
    """A role and its permissions."""

    id: uuid.UUID
    key: str
    name_zh: str
    name_en: str
    permissions: list[str]
    builtin: bool

    @classmethod
    def of(cls, r: Role) -> RoleOut:
        """Render a role."""
        return cls(
            id=r.id,
            key=r.key,
            name_zh=r.name_zh,
            name_en=r.name_en,
            permissions=list(r.permissions),
            builtin=r.builtin,
        )


class AssignmentCreate(Input):
    """Give a person a role at a unit (and below)."""

    person_id: uuid.UUID
    role_id: uuid.UUID
    unit_id: uuid.UUID
