"""Fixtures of the integrator's-side tests: the live server, tenants, an admin's token, and
integrator clients registered through the API and authenticated with authlib's client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from sqlalchemy import update

from core.db import Database
from core.webhooks.models import WebhookSubscription
from tests.api import conftest as api_fixtures
from tests.api.conftest import TokenFor, auth
from tests.conftest import LiveServer
from tests.factories import TenantWorld, make_tenant

api = api_fixtures.api
"""An HTTP client against the live server (the API tests' fixture)."""
person_token = api_fixtures.person_token
"""People's tokens through the authorization-code flow (the API tests' fixture)."""


@pytest.fixture(scope="module")
def quiet_webhooks(database: Database) -> Iterator[None]:
    """After the module, pause every subscription it left behind: their receivers are gone,
    and the live server's worker would keep retrying (outbox rows other tests count)."""
    yield
    with database.platform_transaction() as session:
        session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.active.is_(True))
            .values(active=False)
            .execution_options(synchronize_session=False)
        )


@pytest.fixture(scope="module")
def world(database: Database) -> TenantWorld:
    """The integrator's tenant."""
    return make_tenant(database, "int")


@pytest.fixture(scope="module")
def other(database: Database) -> TenantWorld:
    """Another tenant, which the integrator must never reach."""
    return make_tenant(database, "int-b")


@pytest.fixture(scope="module")
def admin(person_token: TokenFor, world: TenantWorld) -> dict[str, str]:
    """The tenant administrator's Authorization header (authorization code + PKCE)."""
    return auth(person_token(world, "admin"))


@dataclass
class Integrator:
    """A client registered through the API, with a client-credentials token."""

    client_id: str
    secret: str
    token: str
    base: str

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return auth(self.token)

    def oauth(self, **kwargs: Any) -> OAuth2Client:
        """authlib's OAuth 2.0 client for this client."""
        return OAuth2Client(self.client_id, self.secret, **kwargs)

    def fresh_token(self, **params: Any) -> str:
        """A new access token (client credentials)."""
        with self.oauth() as oauth:
            token = oauth.fetch_token(
                f"{self.base}/oauth/token", grant_type="client_credentials", **params
            )
        return str(token["access_token"])


def register_client(
    api: httpx.Client,
    admin: dict[str, str],
    live_server: LiveServer,
    *,
    scopes: list[str],
    unit_ids: list[uuid.UUID] | None = None,
    name: str | None = None,
) -> Integrator:
    """Register a client through ``POST /api/v1/clients`` and fetch its first token."""
    answer = api.post(
        "/api/v1/clients",
        headers=admin,
        json={
            "name": name or f"integrator {uuid.uuid4().hex[:6]}",
            "scopes": scopes,
            "unit_ids": [str(u) for u in unit_ids or []],
        },
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    integrator = Integrator(body["client"]["client_id"], body["client_secret"], "", live_server.url)
    integrator.token = integrator.fresh_token()
    return integrator


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 answer with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return dict(body)
