"""HTTP helpers of the case tests: real person tokens from the live authorization server.

People sign in through the authorization-code flow with PKCE (the login form, then the token
endpoint), exactly as the agents' workbench does; nothing is minted behind the server's back.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx
from authlib.integrations.httpx_client import OAuth2Client

from core.auth.services import create_client
from core.db import Database
from tests.factories import PASSWORD, TenantWorld

REDIRECT = "https://workbench.example/callback"
CASE_SCOPES = (
    "cases:read",
    "cases:write",
    "cases:assign",
    "cases:approve",
    "cases:whistleblower",
    "org:read",
    "org:write",
    "stats:read",
)

_CLIENTS: dict[uuid.UUID, str] = {}


def workbench_client(database: Database, world: TenantWorld) -> str:
    """The tenant's public client for people (registered once per tenant)."""
    if world.id not in _CLIENTS:
        with database.tenant_transaction(world.id) as session:
            client, _ = create_client(
                session,
                name="客服工作台",
                scopes=list(CASE_SCOPES),
                unit_ids=[world.units["group"].id],
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=(REDIRECT,),
                auth_method="none",
            )
            _CLIENTS[world.id] = client.client_id
    return _CLIENTS[world.id]


def person_token(
    database: Database,
    world: TenantWorld,
    base: str,
    username: str,
    scopes: tuple[str, ...] = CASE_SCOPES,
) -> str:
    """An access token for ``username`` of ``world``, through the login form."""
    client_id = workbench_client(database, world)
    verifier = secrets.token_urlsafe(48)
    with (
        OAuth2Client(
            client_id,
            None,
            redirect_uri=REDIRECT,
            scope=" ".join(scopes),
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        ) as oauth,
        httpx.Client(timeout=10) as http,
    ):
        url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier)
        assert http.get(url).status_code == 200
        answer = http.post(
            url, data={"username": username, "password": PASSWORD, "action": "allow"}
        )
        assert answer.status_code == 302, answer.text
        token = oauth.fetch_token(
            f"{base}/oauth/token",
            authorization_response=answer.headers["location"],
            code_verifier=verifier,
        )
    return str(token["access_token"])


class Api:
    """A signed-in person's view of the API (JSON in, JSON out)."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET ``path``."""
        return self.http.get(path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        """POST ``json`` to ``path``."""
        return self.http.post(path, json=json, **kwargs)

    def act(self, case_id: str, body: dict[str, Any], etag: str | None = None) -> httpx.Response:
        """POST a transition with ``If-Match`` (read first when ``etag`` is None)."""
        if etag is None:
            etag = self.get(f"/api/v1/cases/{case_id}").headers["etag"]
        return self.post(f"/api/v1/cases/{case_id}/transitions", body, headers={"If-Match": etag})

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of ``response``, checked to have ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].startswith("/problems/")
    return body
