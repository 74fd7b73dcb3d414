"""HTTP API of people, roles and role assignments."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.concurrency import (
    IfMatch,
    check_if_match,
    claim_unchanged,
    requires_if_match,
    timestamp_etag,
)
from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, paginate
from core.api.problems import Problem
from core.audit import actor_from, record
from core.audit.services import source_of
from core.auth.guards import Access
from core.orgs.services import get_unit
from core.people import services
from core.people.models import Person, Role, RoleAssignment
from core.people.schemas import (
    AssignmentCreate,
    AssignmentOut,
    PersonCreate,
    PersonOut,
    PersonUpdate,
    RoleCreate,
    RoleOut,
)


class PeopleController(Controller):
    """Staff of the caller's tenant. Reading needs ``people:read``; changing, ``people:write``."""

    path = "/api/v1/people"
    tags = ["people"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listPeople", summary="List people")
    @uses_database
    def list_people(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        username: FromQuery[str | None] = None,
        active: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[PersonOut]:
        """People of the tenant, by cursor."""
        access.require_anywhere("people:read")
        stmt = select(Person)
        if username:
            stmt = stmt.where(Person.username == username)
        if active is not None:
            stmt = stmt.where(Person.active.is_(active))
        return paginate(session, stmt, Person.id, cursor=cursor, limit=limit, to_item=PersonOut.of)

    @get("/{person_id:uuid}", operation_id="getPerson", summary="One person")
    @uses_database
    def get_person(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        person_id: FromPath[uuid.UUID],
    ) -> Response[PersonOut]:
        """A person by id, with its ``ETag``."""
        access.require_anywhere("people:read")
        return _with_etag(services.get_person(session, person_id))

    @post("/", operation_id="createPerson", summary="Create a person")
    @uses_database
    def create_person(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[PersonCreate],
    ) -> PersonOut:
        """Create a member of staff (the password is stored as an Argon2id hash only)."""
        access.require_anywhere("people:write")
        person = services.create_person(
            session,
            username=data.username,
            display_name=data.display_name,
            email=data.email,
            phone=data.phone,
            password=data.password,
            locale=data.locale,
        )
        session.commit()
        return PersonOut.of(person)

    @patch(
        "/{person_id:uuid}",
        operation_id="updatePerson",
        summary="Change a person",
    )
    @uses_database
    def update_person(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        person_id: FromPath[uuid.UUID],
        data: JSONBody[PersonUpdate],
        if_match: IfMatch = None,
    ) -> Response[PersonOut]:
        """Change display name, contact details or active flag (``If-Match`` required of
        integrators: 428 without it, 412 when stale)."""
        access.require_anywhere("people:write")
        person = services.get_person(session, person_id)
        check_if_match(
            if_match,
            timestamp_etag(person.id, person.updated_at),
            required=requires_if_match(access.principal),
            what="the person",
        )
        claim_unchanged(session, person, what="the person")
        for field in ("display_name", "email", "phone", "active"):
            value = getattr(data, field)
            if value is not None:
                setattr(person, field, value)
        session.commit()
        return _with_etag(person)


def _with_etag(person: Person) -> Response[PersonOut]:
    return Response(
        PersonOut.of(person), headers={"ETag": timestamp_etag(person.id, person.updated_at)}
    )


class RoleController(Controller):
    """Roles: the built-in ones from the source rules and the tenant's own."""

    path = "/api/v1/roles"
    tags = ["people"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listRoles", summary="List roles")
    @uses_database
    def list_roles(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[RoleOut]:
        """Every role of the tenant."""
        access.require_anywhere("roles:read")
        return paginate(
            session, select(Role), Role.id, cursor=cursor, limit=limit, to_item=RoleOut.of
        )

    @post("/", operation_id="createRole", summary="Define a role")
    @uses_database
    def create_role(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[RoleCreate],
    ) -> RoleOut:
        """Define a role; the caller must hold every permission it grants (no escalation)."""
        access.require_anywhere("roles:write")
        missing = [p for p in data.permissions if not access.has_anywhere(p)]
        if missing:
            raise Problem(
                403,
                f"you cannot grant permissions you do not hold: {missing}",
                slug="privilege-escalation",
            )
        role = services.create_role(
            session,
            key=data.key,
            name_zh=data.name_zh,
            name_en=data.name_en,
            permissions=data.permissions,
        )
        record(
            session,
            action="role.created",
            actor=actor_from(access.principal, session),
            target=("role", role.id),
            details={"key": role.key, "permissions": sorted(role.permissions)},
            source=source_of(request),
        )
        session.commit()
        return RoleOut.of(role)


class RoleAssignmentController(Controller):
    """Who holds which role at which unit."""

    path = "/api/v1/role-assignments"
    tags = ["people"]
    dependencies = API_DEPENDENCIES

    @get(
        "/",
        operation_id="listRoleAssignments",
        summary="List role assignments",
    )
    @uses_database
    def list_assignments(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        person_id: FromQuery[uuid.UUID | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[AssignmentOut]:
        """Assignments at units the caller may read roles of."""
        access.require_anywhere("roles:read")
        stmt = select(RoleAssignment).where(
            access.unit_clause("roles:read", RoleAssignment.unit_id)
        )
        if person_id is not None:
            stmt = stmt.where(RoleAssignment.person_id == person_id)
        if unit_id is not None:
            stmt = stmt.where(RoleAssignment.unit_id == unit_id)
        return paginate(
            session, stmt, RoleAssignment.id, cursor=cursor, limit=limit, to_item=AssignmentOut.of
        )

    @post("/", operation_id="createRoleAssignment", summary="Assign a role")
    @uses_database
    def assign(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[AssignmentCreate],
    ) -> AssignmentOut:
        """Assign a role at a unit; needs ``roles:write`` there and every permission granted."""
        unit = get_unit(session, data.unit_id)
        access.require("roles:write", unit)
        role = services.get_role(session, data.role_id)
        missing = [p for p in role.permissions if not access.can(p, unit.path)]
        if missing:
            raise Problem(
                403,
                f"you cannot grant permissions you do not hold here: {missing}",
                slug="privilege-escalation",
            )
        assignment = services.assign_role(
            session, person_id=data.person_id, role_id=data.role_id, unit_id=data.unit_id
        )
        record(
            session,
            action="role.assigned",
            actor=actor_from(access.principal, session),
            target=("role_assignment", assignment.id),
            details={
                "person_id": str(data.person_id),
                "role": role.key,
                "unit": unit.code,
                "permissions": sorted(role.permissions),
            },
            source=source_of(request),
        )
        session.commit()
        return AssignmentOut.of(assignment)

    @delete(
        "/{assignment_id:uuid}",
        operation_id="deleteRoleAssignment",
        summary="Remove a role assignment",
    )
    @uses_database
    def revoke(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        assignment_id: FromPath[uuid.UUID],
    ) -> None:
        """Remove an assignment; needs ``roles:write`` at its unit."""
        assignment = session.get(RoleAssignment, (session.info["tenant_id"], assignment_id))
        if assignment is None:
            raise Problem(404, f"role assignment {assignment_id} was not found")
        unit = get_unit(session, assignment.unit_id)
        access.require("roles:write", unit, hide=True)
        role = services.get_role(session, assignment.role_id)
        details = {"person_id": str(assignment.person_id), "role": role.key, "unit": unit.code}
        services.revoke_assignment(session, assignment_id)
        record(
            session,
            action="role.revoked",
            actor=actor_from(access.principal, session),
            target=("role_assignment", assignment_id),
            details=details,
            source=source_of(request),
        )
        session.commit()


ROUTES = [PeopleController, RoleController, RoleAssignmentController]
