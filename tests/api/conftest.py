"""Fixtures for API tests: the live server, two tenants, and real tokens from /oauth/token."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from core.db import Database
from core.people.permissions import ALL_PERMISSIONS
from tests.auth.helpers import register
from tests.conftest import LiveServer
from tests.factories import PASSWORD, TenantWorld, make_tenant

REDIRECT = "https://console.example/callback"
TokenFor = Callable[[TenantWorld, str], str]


@pytest.fixture(scope="module")
def tenant_a(database: Database) -> TenantWorld:
    """Tenant A: group → company → {BJ, SH}, people in roles, customers, policies, cases."""
    return make_tenant(database, "api-a")


@pytest.fixture(scope="module")
def tenant_b(database: Database) -> TenantWorld:
    """Tenant B, the same shape, to prove A never sees it."""
    return make_tenant(database, "api-b")


@pytest.fixture(scope="module")
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client against the live server."""
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def person_token(database: Database, live_server: LiveServer) -> TokenFor:
    """A person's access token through the authorization-code flow with PKCE (all scopes)."""
    cache: dict[tuple[str, str], str] = {}
    consoles: dict[str, str] = {}

    def token_for(world: TenantWorld, username: str) -> str:
        key = (str(world.id), username)
        if key in cache:
            return cache[key]
        if str(world.id) not in consoles:
            consoles[str(world.id)], _ = register(
                database,
                world,
                name="console",
                auth_method="none",
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=(REDIRECT,),
                scopes=sorted(ALL_PERMISSIONS),
                unit_ids=[],
            )
        oauth = OAuth2Client(
            consoles[str(world.id)],
            None,
            redirect_uri=REDIRECT,
            scope=" ".join(sorted(ALL_PERMISSIONS)),
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        )
        verifier = secrets.token_urlsafe(48)
        url, _ = oauth.create_authorization_url(
            f"{live_server.url}/oauth/authorize", code_verifier=verifier
        )
        with httpx.Client(timeout=10) as http:
            answer = http.post(
                url, data={"username": username, "password": PASSWORD, "action": "allow"}
            )
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        token = oauth.fetch_token(
            f"{live_server.url}/oauth/token", code=code, code_verifier=verifier
        )
        cache[key] = str(token["access_token"])
        return cache[key]

    return token_for


def client_token(
    database: Database,
    live_server: LiveServer,
    world: TenantWorld,
    scopes: list[str],
    unit_ids: list[object] | None = None,
) -> str:
    """An integrator's token through client credentials."""
    client_id, secret = register(
        database, world, scopes=scopes, unit_ids=unit_ids if unit_ids is not None else []
    )
    oauth = OAuth2Client(client_id, secret, scope=" ".join(scopes))
    token = oauth.fetch_token(f"{live_server.url}/oauth/token", grant_type="client_credentials")
    return str(token["access_token"])


def auth(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}
