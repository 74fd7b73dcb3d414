"""Who gets a notification: people found by role along the organization tree, and customers.

Audiences (the names used by :mod:`core.notifications.routing`):

* ``handler`` — the case's assignee (经办人);
* ``manager`` — holders of :data:`MANAGER_ROLES` at the case's unit or, if nobody holds them
  there, at the nearest unit above it (the unit's manager, then up the tree);
* ``cs_division`` — holders of ``cs_division`` at the top of the case's tree (the group's
  customer-service division, 客服处), else at the highest unit above the case that has one;
* ``customer`` — the case's customer, through their preferred contact channel.

Every lookup is one query on indexed keys; ancestors come from the unit's materialized path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.customers.models import Customer
from core.notifications.templates import normalize_language
from core.orgs.models import OrgUnit
from core.people.models import Person, Role, RoleAssignment

MANAGER_ROLES: tuple[str, ...] = ("branch_manager",)
CS_DIVISION_ROLE = "cs_division"


@dataclass(frozen=True)
class Contact:
    """Someone to notify and how they can be reached.

    :param ref: ``person:<id>`` or ``customer:<id>``.
    :param preferred: a customer's preferred channel (``email``, ``sms``, ``phone``,
        ``letter``, ``wechat``); None for staff (reached by e-mail).
    """

    ref: str
    audience: str
    name: str
    language: str
    email: str | None = None
    phone: str | None = None
    preferred: str | None = None


def person_contact(person: Person, audience: str) -> Contact:
    """A staff member as a :class:`Contact`."""
    return Contact(
        ref=f"person:{person.id}",
        audience=audience,
        name=person.display_name,
        language=normalize_language(person.locale),
        email=person.email,
        phone=person.phone,
    )


def customer_contact(customer: Customer) -> Contact:
    """A customer as a :class:`Contact` (their preferred channel decides how)."""
    preferred = getattr(customer.preferred_channel, "value", customer.preferred_channel)
    return Contact(
        ref=f"customer:{customer.id}",
        audience="customer",
        name=customer.name,
        language=normalize_language(customer.preferred_language),
        email=customer.email,
        phone=customer.phone,
        preferred=str(preferred) if preferred else None,
    )


def handler(session: Session, assignee_id: uuid.UUID | None) -> list[Contact]:
    """The case's handler, if assigned and active."""
    if assignee_id is None:
        return []
    person = session.get(Person, (session.info["tenant_id"], assignee_id))
    if person is None or not person.active:
        return []
    return [person_contact(person, "handler")]


def _holders(
    session: Session, role_keys: Sequence[str], unit_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[Person]]:
    """Active people holding one of ``role_keys`` at each of ``unit_ids``."""
    ids = list(unit_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(RoleAssignment.unit_id, Person)
        .join(Role, Role.id == RoleAssignment.role_id)
        .join(Person, Person.id == RoleAssignment.person_id)
        .where(
            Role.key.in_(role_keys),
            RoleAssignment.unit_id.in_(ids),
            Person.active.is_(True),
        )
        .order_by(Person.username)
    ).all()
    found: dict[uuid.UUID, list[Person]] = {}
    for unit_id, person in rows:
        found.setdefault(unit_id, []).append(person)
    return found


def managers(session: Session, unit: OrgUnit, audience: str = "manager") -> list[Contact]:
    """Managers at ``unit``, else at the nearest unit above it that has any."""
    ancestors = unit.ancestor_ids()
    found = _holders(session, MANAGER_ROLES, ancestors)
    for unit_id in reversed(ancestors):
        if unit_id in found:
            return [person_contact(p, audience) for p in found[unit_id]]
    return []


def cs_division(session: Session, unit: OrgUnit) -> list[Contact]:
    """The customer-service division at the top of ``unit``'s tree (highest holder first)."""
    ancestors = unit.ancestor_ids()
    found = _holders(session, (CS_DIVISION_ROLE,), ancestors)
    for unit_id in ancestors:
        if unit_id in found:
            return [person_contact(p, "cs_division") for p in found[unit_id]]
    return []


def customer(session: Session, customer_id: uuid.UUID | None) -> list[Contact]:
    """The case's customer, if any."""
    if customer_id is None:
        return []
    row = session.get(Customer, (session.info["tenant_id"], customer_id))
    return [customer_contact(row)] if row is not None else []
