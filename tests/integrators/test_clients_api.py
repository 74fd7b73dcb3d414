"""Tenant-managed API clients through /api/v1/clients, used as an integrator would."""

from __future__ import annotations

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

from core.auth.hashing import hash_secret
from core.auth.models import OAuthClient
from core.db import Database
from tests.api.conftest import TokenFor, auth
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import problem, register_client


def test_register_read_rotate_disable(
    api: httpx.Client,
    admin: dict[str, str],
    world: TenantWorld,
    live_server: LiveServer,
    database: Database,
) -> None:
    created = api.post(
        "/api/v1/clients",
        headers=admin,
        json={
            "name": "核心系统",
            "scopes": ["cases:read", "cases:write"],
            "unit_ids": [str(world.units["bj"].id)],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    client_id, secret = body["client"]["client_id"], body["client_secret"]
    assert client_id.startswith(world.tenant.slug + ".") and len(secret) >= 40
    assert created.headers["location"] == f"/api/v1/clients/{client_id}"
    assert created.headers["etag"] == f'"{body["client"]["version"]}"'

    # the secret is shown once: never in a read, stored only as a digest
    got = api.get(f"/api/v1/clients/{client_id}", headers=admin)
    assert got.status_code == 200 and secret not in got.text
    assert "client_secret" not in got.json()
    assert got.json()["has_secret"] is True
    listed = api.get("/api/v1/clients", headers=admin, params={"active": True}).json()
    assert client_id in [c["client_id"] for c in listed["items"]]
    assert secret not in api.get("/api/v1/clients", headers=admin).text
    with database.tenant_session(world.id) as s:
        row = s.query(OAuthClient).filter_by(client_id=client_id).one()
        assert row.secret_hash == hash_secret(secret) and secret not in row.secret_hash

    token_url = f"{live_server.url}/oauth/token"
    with OAuth2Client(client_id, secret) as oauth:
        first = oauth.fetch_token(token_url, grant_type="client_credentials")
    assert first["scope"] == "cases:read cases:write"

    rotated = api.post(f"/api/v1/clients/{client_id}/secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != secret
    with OAuth2Client(client_id, secret) as oauth, pytest.raises(OAuthError) as err:
        oauth.fetch_token(token_url, grant_type="client_credentials")
    assert err.value.error == "invalid_client"
    with OAuth2Client(client_id, new_secret) as oauth:
        second = oauth.fetch_token(token_url, grant_type="client_credentials")
    # a token issued before the rotation stays valid until it expires
    assert api.get("/api/v1/me", headers=auth(first["access_token"])).status_code == 200

    disabled = api.post(f"/api/v1/clients/{client_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    # refused at once: the API, introspection, and the token endpoint
    for token in (first["access_token"], second["access_token"]):
        refused = problem(api.get("/api/v1/me", headers=auth(token)), 401)
        assert refused["detail"] == "client disabled"
    introspector = register_client(api, admin, live_server, scopes=["org:read"])
    with introspector.oauth() as oauth:
        seen = oauth.introspect_token(
            f"{live_server.url}/oauth/introspect", token=second["access_token"]
        ).json()
    assert seen == {"active": False}
    with OAuth2Client(client_id, new_secret) as oauth, pytest.raises(OAuthError):
        oauth.fetch_token(token_url, grant_type="client_credentials")
    assert api.post(f"/api/v1/clients/{client_id}/disable", headers=admin).status_code == 200


def test_nobody_grants_what_they_do_not_hold(
    api: httpx.Client,
    admin: dict[str, str],
    world: TenantWorld,
    person_token: TokenFor,
    live_server: LiveServer,
) -> None:
    agent = auth(person_token(world, "agent_bj"))
    body = {"name": "x", "scopes": ["cases:read"], "unit_ids": [str(world.units["bj"].id)]}
    assert problem(api.post("/api/v1/clients", headers=agent, json=body), 403)["permission"] == (
        "clients:admin"
    )
    # the tenant administrator's role lacks cases:whistleblower
    refused = problem(
        api.post(
            "/api/v1/clients", headers=admin, json={**body, "scopes": ["cases:whistleblower"]}
        ),
        403,
    )
    assert refused["type"] == "/problems/cannot-grant"

    # an integrator with clients:admin at BJ manages BJ's clients only
    manager = register_client(
        api,
        admin,
        live_server,
        scopes=["clients:admin", "cases:read"],
        unit_ids=[world.units["bj"].id],
    )
    own = api.post("/api/v1/clients", headers=manager.headers, json=body)
    assert own.status_code == 201, own.text
    for units in ([str(world.units["sh"].id)], []):
        problem(
            api.post("/api/v1/clients", headers=manager.headers, json={**body, "unit_ids": units}),
            403,
        )
    wide = register_client(api, admin, live_server, scopes=["org:read"])
    problem(api.get(f"/api/v1/clients/{wide.client_id}", headers=manager.headers), 404)
    visible = api.get("/api/v1/clients", headers=manager.headers).json()["items"]
    seen = {c["client_id"] for c in visible}
    assert {manager.client_id, own.json()["client"]["client_id"]} <= seen
    assert wide.client_id not in seen
    assert all(c["unit_ids"] == [str(world.units["bj"].id)] for c in visible)


def test_another_tenants_client_does_not_exist(
    api: httpx.Client,
    admin: dict[str, str],
    other: TenantWorld,
    person_token: TokenFor,
    live_server: LiveServer,
) -> None:
    mine = register_client(api, admin, live_server, scopes=["org:read"])
    theirs = auth(person_token(other, "admin"))
    cid = mine.client_id
    problem(api.get(f"/api/v1/clients/{cid}", headers=theirs), 404)
    problem(api.patch(f"/api/v1/clients/{cid}", headers=theirs, json={"name": "x"}), 404)
    problem(api.post(f"/api/v1/clients/{cid}/secret", headers=theirs), 404)
    problem(api.post(f"/api/v1/clients/{cid}/disable", headers=theirs), 404)
    assert cid not in api.get("/api/v1/clients", headers=theirs).text
    assert api.get("/api/v1/me", headers=mine.headers).status_code == 200  # untouched


def test_update_scopes_and_units_with_if_match(
    api: httpx.Client, admin: dict[str, str], world: TenantWorld, live_server: LiveServer
) -> None:
    manager = register_client(
        api, admin, live_server, scopes=["clients:admin", "cases:read", "org:read"]
    )
    target = register_client(api, admin, live_server, scopes=["org:read"])
    url = f"/api/v1/clients/{target.client_id}"
    etag = api.get(url, headers=manager.headers).headers["etag"]
    change = {"scopes": ["org:read", "cases:read"], "unit_ids": [str(world.units["sh"].id)]}
    # integrators must send If-Match; a stale one is refused
    problem(api.patch(url, headers=manager.headers, json=change), 428)
    stale = problem(
        api.patch(url, headers={**manager.headers, "If-Match": '"999"'}, json=change), 412
    )
    assert stale["type"] == "/problems/stale-version"
    changed = api.patch(url, headers={**manager.headers, "If-Match": etag}, json=change)
    assert changed.status_code == 200, changed.text
    assert changed.json()["scopes"] == ["cases:read", "org:read"]
    assert changed.json()["unit_ids"] == [str(world.units["sh"].id)]
    assert changed.headers["etag"] != etag
    problem(api.patch(url, headers={**manager.headers, "If-Match": etag}, json=change), 412)
    # the old token keeps its scopes; a new one has the new ones
    assert target.fresh_token() and OAuth2Client  # new token works
    with target.oauth() as oauth:
        fresh = oauth.fetch_token(f"{live_server.url}/oauth/token", grant_type="client_credentials")
    assert fresh["scope"] == "cases:read org:read"
    # people's tokens (the console) may omit If-Match
    renamed = api.patch(url, headers=admin, json={"name": "renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"


def test_bad_registrations_are_problems(
    api: httpx.Client, admin: dict[str, str], other: TenantWorld
) -> None:
    base = {"name": "x", "scopes": ["org:read"]}
    problem(api.post("/api/v1/clients", headers=admin, json={**base, "scopes": ["nope:x"]}), 400)
    unknown = problem(
        api.post(
            "/api/v1/clients", headers=admin, json={**base, "unit_ids": [str(other.units["bj"].id)]}
        ),
        422,
    )
    assert unknown["type"] == "/problems/unknown-unit"
    problem(api.post("/api/v1/clients", headers=admin, json={**base, "extra": 1}), 400)
    problem(
        api.post(
            "/api/v1/clients", headers=admin, json={**base, "grant_types": ["authorization_code"]}
        ),
        422,
    )
