"""The tenant's audit log records every token issued, refused, introspected and revoked, and
every change to a client or webhook, with the client id, the scopes and the source address."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.audit.services import verify
from core.db import Database
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import register_client

pytestmark = pytest.mark.usefixtures("quiet_webhooks")


def entries(database: Database, world: TenantWorld, action: str) -> list[AuditEntry]:
    """The tenant's entries of ``action``, oldest first."""
    with database.tenant_session(world.id) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def last(database: Database, world: TenantWorld, action: str, **details: Any) -> AuditEntry:
    """The newest entry of ``action`` whose details include ``details``."""
    found = [
        e
        for e in entries(database, world, action)
        if all(e.details.get(k) == v for k, v in details.items())
    ]
    assert found, f"no {action} entry with {details}"
    return found[-1]


def test_tokens_issued_refused_introspected_and_revoked(
    api: httpx.Client,
    admin: dict[str, str],
    world: TenantWorld,
    database: Database,
    live_server: LiveServer,
) -> None:
    client = register_client(api, admin, live_server, scopes=["cases:read", "org:read"])
    issued = last(database, world, "oauth.token_issued", client_id=client.client_id)
    assert issued.actor == f"client:{client.client_id}" and issued.client_id == client.client_id
    assert issued.details["scopes"] == ["cases:read", "org:read"]
    assert issued.details["grant_type"] == "client_credentials"
    assert issued.source == "127.0.0.1"
    assert issued.details["jti"] and "access_token" not in str(issued.details)

    with OAuth2Client(client.client_id, "wrong-secret") as oauth, pytest.raises(OAuthError):
        oauth.fetch_token(
            f"{live_server.url}/oauth/token", grant_type="client_credentials", scope="cases:read"
        )
    refused = last(database, world, "oauth.token_refused", client_id=client.client_id)
    assert refused.details["error"] == "invalid_client"
    assert refused.details["scopes"] == ["cases:read"] and refused.source == "127.0.0.1"

    token = client.fresh_token(scope="org:read")
    with client.oauth() as oauth:
        oauth.introspect_token(f"{live_server.url}/oauth/introspect", token=token)
        oauth.revoke_token(f"{live_server.url}/oauth/revoke", token=token)
    seen = last(database, world, "oauth.token_introspected", client_id=client.client_id)
    assert seen.details["active"] is True and seen.details["scopes"] == ["org:read"]
    revoked = last(database, world, "oauth.token_revoked", client_id=client.client_id)
    assert revoked.details["token_type"] == "access_token"
    assert revoked.details["jti"] == seen.details["jti"]


def test_client_and_webhook_changes(
    api: httpx.Client,
    admin: dict[str, str],
    world: TenantWorld,
    database: Database,
    live_server: LiveServer,
) -> None:
    client = register_client(api, admin, live_server, scopes=["org:read"])
    url = f"/api/v1/clients/{client.client_id}"
    api.patch(url, headers=admin, json={"scopes": ["org:read", "cases:read"]})
    api.post(f"{url}/secret", headers=admin)
    api.post(f"{url}/disable", headers=admin)
    actions = [
        e.action
        for e in entries(database, world, "client.registered")
        + entries(database, world, "client.updated")
        + entries(database, world, "client.secret_rotated")
        + entries(database, world, "client.disabled")
        if e.details.get("client_id") == client.client_id
    ]
    assert actions == [
        "client.registered",
        "client.updated",
        "client.secret_rotated",
        "client.disabled",
    ]
    updated = last(database, world, "client.updated", client_id=client.client_id)
    assert updated.actor == "person:admin" and updated.source == "127.0.0.1"
    assert updated.details["scopes"] == ["cases:read", "org:read"]
    assert updated.details["before"]["scopes"] == ["org:read"]
    rotated = last(database, world, "client.secret_rotated", client_id=client.client_id)
    assert "secret" not in {k.lower() for k in rotated.details}

    hook = api.post(
        "/api/v1/webhooks",
        headers=admin,
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["case.created"]},
    )
    assert hook.status_code == 201
    subscribed = entries(database, world, "webhook.subscribed")[-1]
    assert subscribed.target_id == hook.json()["webhook"]["id"]
    assert subscribed.details["event_types"] == ["case.created"]
    with database.tenant_session(world.id) as session:
        assert verify(session).ok  # the chain is intact
