"""Every plugin endpoint through the real server: OAuth client-credentials tokens, the real
authentication middleware, the app factory's plugin host."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.db import Database
from tests.conftest import LiveServer
from tests.factories import TenantWorld, make_tenant

auth_services = pytest.importorskip("core.auth.services")


def token_for(database: Database, server: LiveServer, world: TenantWorld, scopes: list[str]) -> str:
    """A client-credentials access token of a new client of ``world`` (whole tenant)."""
    with database.tenant_transaction(world.id) as session:
        client, secret = auth_services.create_client(
            session, name="plugin admin", scopes=scopes, unit_ids=[world.units["group"].id]
        )
        client_id = client.client_id
    response = httpx.post(
        f"{server.url}/oauth/token",
        auth=(client_id, secret or ""),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def tenant(database: Database) -> TenantWorld:
    """A tenant of this module."""
    return make_tenant(database, "plive")


@pytest.fixture(scope="module")
def http(
    database: Database, live_server: LiveServer, tenant: TenantWorld
) -> Iterator[httpx.Client]:
    """An HTTP client of the live server with a plugin admin's token."""
    token = token_for(database, live_server, tenant, ["plugins:read", "plugins:admin"])
    with httpx.Client(
        base_url=live_server.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def test_plugins_catalogue_and_preview(http: httpx.Client, tenant: TenantWorld) -> None:
    listed = http.get("/api/v1/plugins")
    assert listed.status_code == 200, listed.text
    assert "statutory_cn" in {p["name"] for p in listed.json()}
    assert http.get("/api/v1/plugins/group_policy").json()["kind"] == "policy"
    preview = http.post(
        "/api/v1/plugins/preview",
        json={
            "unit_id": str(tenant.units["bj"].id),
            "case_type": "complaint",
            "received_at": "2026-03-02T10:00:00+08:00",
        },
    )
    assert preview.status_code == 200, preview.text
    assert {c["clock"] for c in preview.json()["clocks"]} >= {"complaint.decision"}


def test_plugin_settings_lifecycle(http: httpx.Client, tenant: TenantWorld) -> None:
    base = f"/api/v1/plugin-settings/agency_policy/{tenant.units['group'].id}"
    assert http.post(f"{base}/enable").status_code == 200
    put = http.put(
        base, json={"settings": {"complaint_decision_days": 9}}, headers={"If-Match": '"1"'}
    )
    assert put.status_code == 200, put.text
    assert http.get(base).json()["settings"] == {"complaint_decision_days": 9}
    assert http.post(f"{base}/disable").json()["enabled"] is False
    assert http.post(f"{base}/inherit").json()["enabled"] is None
    history = http.get(f"{base}/history").json()
    assert [v["action"] for v in history["items"]] == ["inherit", "disable", "set", "enable"]
    assert history["items"][0]["changed_by"].startswith("client:")
    assert http.post(f"{base}/rollback", json={"to_version": 2}).json()["enabled"] is True
    effective = http.get(
        "/api/v1/plugin-settings/effective", params={"unit_id": str(tenant.units["sh"].id)}
    ).json()
    agency = next(p for p in effective["plugins"] if p["plugin"] == "agency_policy")
    assert agency["settings"]["complaint_decision_days"] == 9 and agency["enabled"]
    rows = http.get("/api/v1/plugin-settings", params={"plugin": "agency_policy"}).json()
    assert [r["unit_code"] for r in rows] == ["GRP"]


def test_another_tenants_token_sees_nothing(
    database: Database, live_server: LiveServer, tenant: TenantWorld
) -> None:
    stranger = make_tenant(database, "plive-x")
    token = token_for(database, live_server, stranger, ["plugins:read", "plugins:admin"])
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{live_server.url}/api/v1/plugin-settings/group_policy/{tenant.units['group'].id}"
    assert httpx.get(base, headers=headers).status_code == 404
    assert httpx.put(base, headers=headers, json={"settings": {}}).status_code == 404
    assert httpx.get(f"{live_server.url}/api/v1/plugins").status_code == 401
