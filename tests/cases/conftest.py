"""Fixtures of the case tests: a tenant with case roles, the real plugin host, acting people."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.auth.guards import load_access
from core.auth.principal import Principal
from core.cases.flows import CaseContext, make_context
from core.cases.schemas import CaseCreate
from core.cases.storage import LocalStorage
from core.db import Database, utcnow
from core.people.permissions import ALL_PERMISSIONS
from core.people.services import assign_role, create_person, get_role_by_key
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from tests.factories import PASSWORD, TenantWorld, make_tenant
from tests.s3server import S3Server

EXTRA_PEOPLE = (
    # username, built-in role, unit
    ("cs_co", "cs_division", "company"),  # 客服处: cases:assign
    ("manager_co", "branch_manager", "company"),  # senior manager of BJ's superior unit
    ("manager_bj", "branch_manager", "bj"),  # approves at BJ, not at its superior unit
    ("director", "service_director", "group"),  # sees whistle-blowers
    ("agent_bj2", "agent", "bj"),
)


def add_case_people(database: Database, world: TenantWorld) -> None:
    """People in the roles the lifecycle needs, besides the factory's."""
    with database.tenant_transaction(world.id) as s:
        for username, role_key, unit_key in EXTRA_PEOPLE:
            person = create_person(s, username=username, display_name=username, password=PASSWORD)
            role = get_role_by_key(s, role_key)
            assert role is not None
            assign_role(s, person_id=person.id, role_id=role.id, unit_id=world.units[unit_key].id)
            world.people[username] = person


@pytest.fixture(scope="module")
def world(database: Database) -> TenantWorld:
    """A tenant of the module's own, with the case roles."""
    w = make_tenant(database, "cases")
    add_case_people(database, w)
    return w


@pytest.fixture(scope="module")
def other(database: Database) -> TenantWorld:
    """Another tenant, to check that it sees nothing."""
    w = make_tenant(database, "cases-other")
    add_case_people(database, w)
    return w


@pytest.fixture(scope="module")
def host(database: Database) -> Iterator[PluginHost]:
    """The real plugins (built-ins: statutory_cn always on, service_rules_cn on by default)."""
    h = PluginHost(build_registry(), database, listen=False)
    yield h
    h.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    """A local attachment store in a temporary directory."""
    return LocalStorage(tmp_path_factory.mktemp("attachments"))


Acting = Callable[..., Any]


@pytest.fixture(scope="module")
def acting(database: Database, host: PluginHost, store: LocalStorage) -> Callable[..., Any]:
    """``with acting(world, "agent_bj", now=...) as ctx:`` a flow context in one transaction."""

    @contextmanager
    def _acting(
        w: TenantWorld,
        username: str,
        *,
        now: dt.datetime | None = None,
        plugins: PluginHost | None = None,
        **kwargs: Any,
    ) -> Iterator[CaseContext]:
        person = w.people[username]
        with database.tenant_transaction(w.id) as s:
            principal = Principal(
                tenant_id=w.id,
                subject=str(person.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=person.id,
            )
            ctx = make_context(
                s,
                load_access(s, principal),
                plugins=plugins or host,
                storage=store,
                now=(lambda: now) if now is not None else utcnow,
                **kwargs,
            )
            yield ctx

    return _acting


def complaint(
    world: TenantWorld, unit: str = "bj", case_type: str = "complaint", **kwargs: Any
) -> CaseCreate:
    """A case (a complaint by default) about the unit's fixture customer and policy."""
    values: dict[str, Any] = {
        "type": case_type,
        "channel": "hotline",
        "subject": "理赔进度慢 / slow claim",
        "unit_id": world.units[unit].id,
        "customer_id": world.customers[unit].id,
        "policy_id": world.policies[unit].id,
        "category": "claims",
    }
    values = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in values.items()}
    values.update({k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in kwargs.items()})
    return msgspec.convert(values, CaseCreate, str_keys=True)


def ids(items: Any) -> list[uuid.UUID]:
    """The ``id`` of each item."""
    return [i.id for i in items]


DATA = Path(__file__).parent.parent / "deadlines" / "data"
"""The schedule files of the deadline tests (2026 notice, invented 2027 fixture)."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto's, a separate process) for the session."""
    server = S3Server()
    yield server
    server.stop()
