"""People (staff), roles as named permission sets, and role assignments at units."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk


class Person(TenantScoped, Timestamped, Base):
    """A member of staff: agent, inspector, manager, tenant admin. Signs in with a password."""

    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("tenant_id", "username"),)

    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    active: Mapped[bool] = mapped_column(default=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(default=None)


class Role(TenantScoped, Timestamped, Base):
    """A named set of permissions. Built-in roles are seeded per tenant; tenants add their own."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    key: Mapped[str] = mapped_column(String(64))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    builtin: Mapped[bool] = mapped_column(default=False)


class RoleAssignment(TenantScoped, Timestamped, Base):
    """A person holds a role at a unit; it applies to that unit and every unit below it."""

    __tablename__ = "role_assignments"
    __table_args__ = (
        tenant_fk("person_id", "people"),
        tenant_fk("role_id", "roles"),
        tenant_fk("unit_id", "org_units"),
        UniqueConstraint("tenant_id", "person_id", "role_id", "unit_id"),
    )

    person_id: Mapped[uuid.UUID]
    role_id: Mapped[uuid.UUID]
    unit_id: Mapped[uuid.UUID]
