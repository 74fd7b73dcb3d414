"""People, roles, assignments, customers and policies over HTTP, as an admin and an agent."""

from __future__ import annotations

import httpx

from core.db import Database
from tests.api.conftest import TokenFor, auth
from tests.conftest import LiveServer
from tests.factories import PASSWORD, TenantWorld


def test_create_person_never_returns_the_password(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    headers = auth(person_token(tenant_a, "admin"))
    created = api.post(
        "/api/v1/people",
        headers=headers,
        json={
            "username": "wang.fang",
            "display_name": "王芳",
            "password": PASSWORD,
            "email": "wang.fang@example.com",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert "password" not in body and "password_hash" not in body
    duplicate = api.post(
        "/api/v1/people", headers=headers, json={"username": "wang.fang", "display_name": "又一个"}
    )
    assert duplicate.status_code == 409


def test_role_assignment_and_no_privilege_escalation(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    admin = auth(person_token(tenant_a, "admin"))
    roles = {
        r["key"]: r
        for r in api.get("/api/v1/roles", params={"limit": 100}, headers=admin).json()["items"]
    }
    assert {
        "tenant_admin",
        "general_manager",
        "service_director",
        "cs_division",
        "agent",
        "quality_inspector",
        "branch_manager",
        "auditor",
    } <= set(roles)
    person = api.post(
        "/api/v1/people", headers=admin, json={"username": "li.lei", "display_name": "李雷"}
    ).json()
    granted = api.post(
        "/api/v1/role-assignments",
        headers=admin,
        json={
            "person_id": person["id"],
            "role_id": roles["quality_inspector"]["id"],
            "unit_id": str(tenant_a.units["sh"].id),
        },
    )
    assert granted.status_code == 201, granted.text
    listed = api.get(
        "/api/v1/role-assignments", params={"person_id": person["id"]}, headers=admin
    ).json()["items"]
    assert [a["role_id"] for a in listed] == [roles["quality_inspector"]["id"]]

    own = api.post(
        "/api/v1/roles",
        headers=admin,
        json={
            "key": "claims_desk",
            "name_zh": "理赔服务岗",
            "name_en": "Claims desk",
            "permissions": ["cases:read", "cases:write"],
        },
    )
    assert own.status_code == 201
    unknown = api.post(
        "/api/v1/roles",
        headers=admin,
        json={"key": "bogus", "name_zh": "x", "name_en": "x", "permissions": ["cases:fly"]},
    )
    assert unknown.status_code in (403, 422)

    auditor = auth(person_token(tenant_a, "auditor"))
    refused = api.post(
        "/api/v1/role-assignments",
        headers=auditor,
        json={
            "person_id": person["id"],
            "role_id": roles["tenant_admin"]["id"],
            "unit_id": str(tenant_a.units["group"].id),
        },
    )
    assert refused.status_code == 403


def test_a_role_granted_or_taken_away_counts_from_the_next_request(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    """The caller's roles are read with the token's state on every request: a role given or
    removed changes what the same, unexpired token may do from its next request on."""
    admin = auth(person_token(tenant_a, "admin"))
    agent_sh = auth(person_token(tenant_a, "agent_sh"))
    customer = f"/api/v1/customers/{tenant_a.customers['bj'].id}"
    assert api.get(customer, headers=agent_sh).status_code == 404  # Beijing is not its branch
    roles = api.get("/api/v1/roles", params={"limit": 100}, headers=admin).json()["items"]
    granted = api.post(
        "/api/v1/role-assignments",
        headers=admin,
        json={
            "person_id": str(tenant_a.people["agent_sh"].id),
            "role_id": next(r["id"] for r in roles if r["key"] == "agent"),
            "unit_id": str(tenant_a.units["bj"].id),
        },
    )
    assert granted.status_code == 201, granted.text
    assert api.get(customer, headers=agent_sh).status_code == 200
    removed = api.delete(f"/api/v1/role-assignments/{granted.json()['id']}", headers=admin)
    assert removed.status_code == 204, removed.text
    assert api.get(customer, headers=agent_sh).status_code == 404


def test_agent_reads_only_its_branchs_customers(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    headers = auth(person_token(tenant_a, "agent_bj"))
    names = [c["name"] for c in api.get("/api/v1/customers", headers=headers).json()["items"]]
    assert names == ["客***"]  # masked without a declared purpose
    clear = api.get("/api/v1/customers", headers={**headers, "X-Purpose": "callback"})
    assert [c["name"] for c in clear.json()["items"]] == ["客户bj"]
    other = api.get(f"/api/v1/customers/{tenant_a.customers['sh'].id}", headers=headers)
    assert other.status_code == 404
    mine = api.get(f"/api/v1/customers/{tenant_a.customers['bj'].id}", headers=headers)
    assert mine.status_code == 200
    policies = api.get("/api/v1/policies", headers=headers).json()["items"]
    assert [p["id"] for p in policies] == [str(tenant_a.policies["bj"].id)]
    cases = api.get("/api/v1/cases", headers=headers).json()["items"]
    assert [c["id"] for c in cases] == [str(tenant_a.cases["bj"].id)]


def test_customer_and_policy_creation(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    admin = auth(person_token(tenant_a, "admin"))
    bj = str(tenant_a.units["bj"].id)
    customer = api.post(
        "/api/v1/customers",
        headers=admin,
        json={"kind": "policyholder", "name": "赵敏", "unit_id": bj, "phone": "13900001111"},
    )
    assert customer.status_code == 201, customer.text
    found = api.get("/api/v1/customers", params={"phone": "13900001111"}, headers=admin)
    assert [c["name"] for c in found.json()["items"]] == ["赵*"]
    assert [c["phone"] for c in found.json()["items"]] == ["139****1111"]
    policy = api.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "number": "HX-L-0001",
            "product_code": "L02",
            "product_name": "终身寿险",
            "line_of_business": "life",
            "term_months": 240,
            "start_date": "2026-03-01",
            "unit_id": bj,
            "policyholder_id": customer.json()["id"],
        },
    )
    assert policy.status_code == 201, policy.text
    assert policy.json()["cooling_off_end"] == "2026-03-16"
    twice = api.post(
        "/api/v1/policies",
        headers=admin,
        json={
            "number": "HX-L-0001",
            "product_code": "L02",
            "product_name": "终身寿险",
            "line_of_business": "life",
            "start_date": "2026-03-01",
            "unit_id": bj,
            "policyholder_id": customer.json()["id"],
        },
    )
    assert twice.status_code == 409
    changed = api.patch(
        f"/api/v1/customers/{customer.json()['id']}",
        headers=admin,
        json={"address": "北京市海淀区"},
    )
    assert changed.status_code == 200 and changed.json()["address"] == "北京市海淀区"


def test_a_client_acts_only_for_its_units(
    database: Database, live_server: LiveServer, api: httpx.Client, tenant_a: TenantWorld
) -> None:
    from tests.api.conftest import client_token

    token = client_token(
        database, live_server, tenant_a, ["customers:read"], [tenant_a.units["sh"].id]
    )
    items = api.get("/api/v1/customers", headers=auth(token)).json()["items"]
    assert [c["id"] for c in items] == [str(tenant_a.customers["sh"].id)]
    assert [c["name"] for c in items] == ["客***"]  # no customers:read_clear scope: masked
    no_scope = api.get("/api/v1/cases", headers=auth(token))
    assert no_scope.status_code == 403
