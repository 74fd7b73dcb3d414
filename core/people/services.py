"""People, roles and role assignments."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.auth.passwords import hash_password
from core.orgs.services import get_unit
from core.people.models import Person, Role, RoleAssignment
from core.people.permissions import BUILTIN_ROLES, unknown_permissions


def seed_builtin_roles(session: Session, tenant_id: uuid.UUID) -> list[Role]:
    """Create the built-in roles missing from ``tenant_id``; return those created.

    Works in a tenant session and in the platform session (provisioning).
    """
    existing = set(session.scalars(select(Role.key).where(Role.tenant_id == tenant_id)).all())
    created = []
    for spec in BUILTIN_ROLES:
        if spec.key in existing:
            continue
        role = Role(
            tenant_id=tenant_id,
            key=spec.key,
            name_zh=spec.name_zh,
            name_en=spec.name_en,
            permissions=sorted(spec.permissions),
            builtin=True,
        )
        session.add(role)
        created.append(role)
    session.flush()
    return created


def get_person(session: Session, person_id: uuid.UUID) -> Person:
    """The person ``person_id`` of the session's tenant, or a 404 problem."""
    person = session.get(Person, (session.info["tenant_id"], person_id))
    if person is None:
        raise not_found("person", person_id)
    return person


def get_person_by_username(session: Session, username: str) -> Person | None:
    """The person with ``username`` in the session's tenant, or None."""
    return session.scalars(select(Person).where(Person.username == username)).one_or_none()


def create_person(
    session: Session,
    *,
    username: str,
    display_name: str,
    email: str | None = None,
    phone: str | None = None,
    password: str | None = None,
    locale: str = "zh-CN",
) -> Person:
    """Create a person; the password, if given, is stored as an Argon2id hash only."""
    if get_person_by_username(session, username) is not None:
        raise Problem(409, f"username {username!r} is taken", slug="duplicate")
    person = Person(
        username=username,
        display_name=display_name,
        email=email,
        phone=phone,
        locale=locale,
        password_hash=hash_password(password) if password else None,
    )
    session.add(person)
    session.flush()
    return person


def get_role(session: Session, role_id: uuid.UUID) -> Role:
    """The role ``role_id`` of the session's tenant, or a 404 problem."""
    role = session.get(Role, (session.info["tenant_id"], role_id))
    if role is None:
        raise not_found("role", role_id)
    return role


def get_role_by_key(session: Session, key: str) -> Role | None:
    """The role with ``key`` in the session's tenant, or None."""
    return session.scalars(select(Role).where(Role.key == key)).one_or_none()


def create_role(
    session: Session, *, key: str, name_zh: str, name_en: str, permissions: list[str]
) -> Role:
    """Define a tenant's own role; every permission must be in the catalogue."""
    bad = unknown_permissions(permissions)
    if bad:
        raise Problem(422, f"unknown permissions: {', '.join(bad)}", slug="unknown-permission")
    if get_role_by_key(session, key) is not None:
        raise Problem(409, f"role {key!r} already exists", slug="duplicate")
    role = Role(key=key, name_zh=name_zh, name_en=name_en, permissions=sorted(set(permissions)))
    session.add(role)
    session.flush()
    return role


def assign_role(
    session: Session, *, person_id: uuid.UUID, role_id: uuid.UUID, unit_id: uuid.UUID
) -> RoleAssignment:
    """Give ``person_id`` the role at ``unit_id`` (and below). Idempotent."""
    get_person(session, person_id)
    get_role(session, role_id)
    get_unit(session, unit_id)
    existing = session.scalars(
        select(RoleAssignment).where(
            RoleAssignment.person_id == person_id,
            RoleAssignment.role_id == role_id,
            RoleAssignment.unit_id == unit_id,
        )
    ).one_or_none()
    if existing is not None:
        return existing
    assignment = RoleAssignment(person_id=person_id, role_id=role_id, unit_id=unit_id)
    session.add(assignment)
    session.flush()
    return assignment


def revoke_assignment(session: Session, assignment_id: uuid.UUID) -> None:
    """Remove a role assignment."""
    assignment = session.get(RoleAssignment, (session.info["tenant_id"], assignment_id))
    if assignment is None:
        raise not_found("role assignment", assignment_id)
    session.delete(assignment)
    session.flush()
