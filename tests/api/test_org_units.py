"""The organization tree over HTTP: read, create, move, deactivate, with authorization."""

from __future__ import annotations

import httpx

from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld


def test_admin_reads_the_tree_nested(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    tree = api.get("/api/v1/org-units/tree", headers=auth(person_token(tenant_a, "admin")))
    assert tree.status_code == 200, tree.text
    [root] = tree.json()
    assert root["code"] == "GRP"
    [company] = root["children"]
    assert sorted(c["code"] for c in company["children"]) == ["BJ", "SH"]


def test_an_agent_sees_only_its_branch(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    headers = auth(person_token(tenant_a, "agent_bj"))
    listing = api.get("/api/v1/org-units", headers=headers)
    assert [u["code"] for u in listing.json()["items"]] == ["BJ"]
    sh = api.get(f"/api/v1/org-units/{tenant_a.units['sh'].id}", headers=headers)
    assert sh.status_code == 404
    assert sh.headers["content-type"].startswith("application/problem+json")


def test_cursor_pagination_walks_every_unit_once(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    headers = auth(person_token(tenant_a, "admin"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/org-units", params=params, headers=headers).json()
        seen += [u["code"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({*seen}) and {"GRP", "CO", "BJ", "SH"} <= set(seen)


def test_create_move_and_deactivate(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    headers = auth(person_token(tenant_a, "admin"))
    bj, sh = tenant_a.units["bj"], tenant_a.units["sh"]
    created = api.post(
        "/api/v1/org-units",
        headers=headers,
        json={
            "code": "BJ-HD",
            "name": "海淀中心支公司",
            "kind": "sub_branch",
            "parent_id": str(bj.id),
        },
    )
    assert created.status_code == 201, created.text
    unit = created.json()
    assert unit["depth"] == bj.depth + 1

    again = api.post(
        "/api/v1/org-units",
        headers=headers,
        json={"code": "BJ-HD", "name": "重复", "kind": "sub_branch", "parent_id": str(bj.id)},
    )
    assert again.status_code == 409

    moved = api.post(
        f"/api/v1/org-units/{unit['id']}/move", headers=headers, json={"parent_id": str(sh.id)}
    )
    assert moved.status_code == 200 and moved.json()["parent_id"] == str(sh.id)
    under_sh = api.get("/api/v1/org-units", params={"under": str(sh.id)}, headers=headers)
    assert "BJ-HD" in [u["code"] for u in under_sh.json()["items"]]

    cycle = api.post(
        f"/api/v1/org-units/{sh.id}/move", headers=headers, json={"parent_id": unit["id"]}
    )
    assert cycle.status_code == 422 and cycle.json()["type"] == "/problems/cycle"

    busy = api.post(f"/api/v1/org-units/{sh.id}/deactivate", headers=headers)
    assert busy.status_code == 409
    done = api.post(f"/api/v1/org-units/{unit['id']}/deactivate", headers=headers)
    assert done.status_code == 200 and done.json()["active"] is False


def test_an_agent_cannot_create_units(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    answer = api.post(
        "/api/v1/org-units",
        headers=auth(person_token(tenant_a, "agent_bj")),
        json={
            "code": "X1",
            "name": "x",
            "kind": "department",
            "parent_id": str(tenant_a.units["bj"].id),
        },
    )
    assert answer.status_code == 403
    assert answer.json()["permission"] == "org:write"
