"""Fixtures of the OAuth tests: a tenant of their own and the live server's endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.db import Database
from tests.auth.helpers import Endpoints
from tests.conftest import LiveServer
from tests.factories import TenantWorld, make_tenant


@pytest.fixture(scope="module")
def urls(live_server: LiveServer) -> Endpoints:
    """The live server's OAuth URLs."""
    return Endpoints(live_server.url)


@pytest.fixture(scope="module")
def world(database: Database) -> TenantWorld:
    """A tenant of its own for the module."""
    return make_tenant(database, "oauth")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client (no redirects followed)."""
    with httpx.Client(timeout=10) as client:
        yield client
