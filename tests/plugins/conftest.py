"""Fixtures of the plugin tests: registries, hosts, tenants, case facts, and an API client.

The API client serves the plugin controllers in process with a stand-in for the OAuth
middleware (the caller is given by ``X-Test-*`` headers and checked by the real guards);
``test_http_live.py`` runs the same endpoints through the real server and real tokens.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.testing import TestClient

from core.api.problems import EXCEPTION_HANDLERS
from core.auth.principal import Principal
from core.db import Database
from core.deadlines import TenantCalendar
from core.people.permissions import ALL_PERMISSIONS
from core.plugins.controllers import ROUTES
from core.plugins.host import PluginHost
from core.plugins.registry import PluginRegistry, build_registry
from core.plugins.types import CaseFacts, CustomerFacts, PolicyFacts, UnitFacts
from tests.factories import TenantWorld, make_tenant

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALENDAR = TenantCalendar(tz=SHANGHAI)


@pytest.fixture(scope="session")
def registry() -> Iterator[PluginRegistry]:
    """The plugins of this installation: built-ins and entry points."""
    reg = build_registry()
    yield reg
    reg.close()


@pytest.fixture
def make_host(database: Database) -> Iterator[Callable[..., PluginHost]]:
    """Build plugin hosts on the test database; they are closed at the end of the test."""
    hosts: list[PluginHost] = []

    def make(
        registry: PluginRegistry | None = None, db: Database | None = None, **kwargs: Any
    ) -> PluginHost:
        host = PluginHost(registry or build_registry(), db or database, **kwargs)
        hosts.append(host.start())
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def host(make_host: Callable[..., PluginHost], registry: PluginRegistry) -> PluginHost:
    """A host with the installation's plugins."""
    return make_host(registry)


@pytest.fixture(scope="module")
def world(database: Database) -> TenantWorld:
    """A tenant of this module: group → company → {BJ, SH}."""
    return make_tenant(database, "plg")


@pytest.fixture(scope="module")
def other(database: Database) -> TenantWorld:
    """A second tenant of this module."""
    return make_tenant(database, "plg2")


def unit_facts(world: TenantWorld, key: str) -> UnitFacts:
    """The facts of one of the world's units."""
    unit = world.units[key]
    return UnitFacts(id=unit.id, code=unit.code, kind=str(unit.kind), path=unit.path)


def complaint(
    world: TenantWorld,
    key: str = "bj",
    *,
    received: dt.datetime | None = None,
    vip: bool = False,
    age: int | None = None,
    policy: PolicyFacts | None = None,
    case_type: str = "complaint",
    **kwargs: Any,
) -> CaseFacts:
    """A complaint (or another case type) received at a unit of ``world``."""
    return CaseFacts(
        case_type=case_type,  # type: ignore[arg-type]
        channel=kwargs.pop("channel", "hotline"),
        unit=unit_facts(world, key),
        received_at=received or dt.datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI),
        customer=CustomerFacts(vip=vip, age=age),
        policy=policy,
        **kwargs,
    )


class _TestAuth(AbstractAuthenticationMiddleware):
    """Stand-in for the OAuth middleware: the caller comes from ``X-Test-*`` headers."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        tenant = connection.headers.get("x-test-tenant")
        if not tenant:
            raise NotAuthorizedException("no test principal")
        person = connection.headers.get("x-test-person")
        client = connection.headers.get("x-test-client")
        scopes = connection.headers.get("x-test-scopes")
        principal = Principal(
            tenant_id=uuid.UUID(tenant),
            subject=connection.headers.get("x-test-subject", "tester"),
            kind="client" if client else "person",
            scopes=frozenset(scopes.split()) if scopes else ALL_PERMISSIONS,
            person_id=uuid.UUID(person) if person else None,
            client_id=client,
            client_unit_ids=tuple(
                uuid.UUID(u) for u in connection.headers.get("x-test-units", "").split() if u
            ),
        )
        return AuthenticationResult(user=principal, auth=None)


def build_api(database: Database, host: PluginHost) -> Litestar:
    """The plugin controllers, served in process, with the test authentication."""
    return Litestar(
        route_handlers=ROUTES,
        state=State({"db": database, "plugins": host}),  # as create_app: deps read app.state
        dependencies={
            "db": Provide(lambda: database, use_cache=True, sync_to_thread=False),
            "plugins": Provide(lambda: host, use_cache=True, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(_TestAuth)],
        exception_handlers=EXCEPTION_HANDLERS,
    )


@pytest.fixture
def api(database: Database, host: PluginHost) -> Iterator[TestClient[Litestar]]:
    """An HTTP client of the plugin API (in process)."""
    with TestClient(build_api(database, host)) as client:
        yield client


def as_person(world: TenantWorld, username: str = "admin", **extra: str) -> dict[str, str]:
    """Headers that make the request come from ``username`` of ``world``."""
    return {
        "x-test-tenant": str(world.id),
        "x-test-person": str(world.people[username].id),
        "x-test-subject": str(world.people[username].id),  # as in real tokens: the id
        **extra,
    }
