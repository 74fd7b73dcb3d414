"""Sign-ins in the tenant audit log: success and failure on the login page, refused token
requests and refused bearer tokens, each with the caller's address."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.db import Database
from tests.auth.helpers import Endpoints, bearer, register
from tests.factories import PASSWORD, TenantWorld

REDIRECT = "https://portal.example/callback"


@pytest.fixture(scope="module")
def public_client(database: Database, world: TenantWorld) -> str:
    client_id, _ = register(
        database,
        world,
        auth_method="none",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(REDIRECT,),
        scopes=["cases:read"],
    )
    return client_id


def _entries(database: Database, world: TenantWorld, action: str) -> list[AuditEntry]:
    with database.tenant_session(world.id) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def _post_login(
    http: httpx.Client, urls: Endpoints, client_id: str, username: str, password: str
) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "cases:read",
        "state": "s1",
        "code_challenge": create_s256_code_challenge(secrets.token_urlsafe(48)),
        "code_challenge_method": "S256",
    }
    return http.post(
        urls.authorize,
        params=params,
        data={"username": username, "password": password, "action": "allow"},
    )


def test_sign_in_success_and_failures_are_in_the_tenant_log_with_the_address(
    database: Database, world: TenantWorld, urls: Endpoints, public_client: str
) -> None:
    with httpx.Client(timeout=10) as http:
        assert _post_login(http, urls, public_client, "agent_bj", PASSWORD).status_code == 302
        assert _post_login(http, urls, public_client, "agent_bj", "wrong").status_code == 401
        typed = "my-Secret-passw0rd"  # a password typed into the username field
        assert _post_login(http, urls, public_client, typed, PASSWORD).status_code == 401

    ok = [e for e in _entries(database, world, "auth.sign_in") if e.actor == "person:agent_bj"]
    assert ok and ok[-1].source == "127.0.0.1"
    failed = _entries(database, world, "auth.sign_in_failed")
    wrong = [e for e in failed if e.details.get("reason") == "wrong_password"]
    assert wrong and wrong[-1].source == "127.0.0.1"
    assert wrong[-1].target_id == str(world.people["agent_bj"].id)
    assert wrong[-1].details["client_id"] == public_client
    unknown = [e for e in failed if e.details.get("reason") == "unknown_user"]
    assert unknown and unknown[-1].source == "127.0.0.1"
    assert unknown[-1].details["username_fingerprint"].startswith("fp:")
    assert typed not in str(unknown[-1].details) and PASSWORD not in str(unknown[-1].details)


def test_refused_token_requests_and_bearer_tokens_are_recorded(
    database: Database, world: TenantWorld, urls: Endpoints
) -> None:
    client_id, secret = register(database, world)
    with httpx.Client(timeout=10) as http:
        refused_request = http.post(
            urls.token,
            data={"grant_type": "client_credentials"},
            auth=(client_id, "wrong" * 10),
        )
        assert refused_request.status_code == 401
    with OAuth2Client(client_id, secret) as oauth:
        access = oauth.fetch_token(urls.token, grant_type="client_credentials")["access_token"]
        assert oauth.revoke_token(urls.revoke, token=access).status_code == 200
    with httpx.Client(timeout=10) as http:
        for _ in range(3):  # retries with the same token: recorded once
            assert http.get(urls.me, headers=bearer(access)).status_code == 401

    token_refused = [
        e for e in _entries(database, world, "oauth.token_refused") if e.target_id == client_id
    ]
    assert token_refused and token_refused[-1].source == "127.0.0.1"
    refused: list[Any] = [
        e for e in _entries(database, world, "auth.token_refused") if e.target_id == client_id
    ]
    assert len(refused) == 1
    assert refused[0].details["reason"] == "token revoked"
    assert refused[0].source == "127.0.0.1"
    assert refused[0].actor == f"client:{client_id}"
