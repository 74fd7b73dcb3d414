"""The audit API over HTTP, and the sensitive actions that write to the log: sign-in, role
changes, plugin settings, case registration and transitions."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.db import Database
from tests.api.conftest import TokenFor, auth, client_token
from tests.conftest import LiveServer
from tests.factories import TenantWorld


def _entries(api: httpx.Client, token: str, **params: Any) -> list[dict[str, Any]]:
    answer = api.get("/api/v1/audit", headers=auth(token), params={"limit": 200, **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_sign_in_is_recorded_with_the_client(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    token = person_token(tenant_a, "auditor")
    sign_ins = _entries(api, token, action="auth.sign_in")
    mine = [e for e in sign_ins if e["actor"] == "person:auditor"]
    assert mine, sign_ins
    assert mine[0]["actor_id"] == str(tenant_a.people["auditor"].id)
    assert str(mine[0]["client_id"]).startswith(tenant_a.tenant.slug + ".")
    assert mine[0]["target_type"] == "person"


def test_role_changes_plugin_settings_and_cases_are_recorded(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    admin = auth(person_token(tenant_a, "admin"))
    roles = {r["key"]: r for r in api.get("/api/v1/roles", headers=admin).json()["items"]}
    person = api.post(
        "/api/v1/people", headers=admin, json={"username": "zhao.lu", "display_name": "赵路"}
    ).json()
    assigned = api.post(
        "/api/v1/role-assignments",
        headers=admin,
        json={
            "person_id": person["id"],
            "role_id": roles["agent"]["id"],
            "unit_id": str(tenant_a.units["bj"].id),
        },
    )
    assert assigned.status_code == 201, assigned.text
    assert (
        api.delete(f"/api/v1/role-assignments/{assigned.json()['id']}", headers=admin).status_code
        == 204
    )
    case = api.post(
        "/api/v1/cases",
        headers=admin,
        json={
            "type": "consultation",
            "channel": "hotline",
            "subject": "保单查询",
            "unit_id": str(tenant_a.units["bj"].id),
            "customer_id": str(tenant_a.customers["bj"].id),
        },
    )
    assert case.status_code == 201, case.text
    created = case.json()["case"]
    started = api.post(
        f"/api/v1/cases/{created['id']}/transitions",
        headers={**admin, "If-Match": case.headers["ETag"]},
        json={"action": "start"},
    )
    assert started.status_code == 200, started.text
    token = person_token(tenant_a, "auditor")
    by_action: dict[str, dict[str, Any]] = {}
    for e in _entries(api, token):
        by_action.setdefault(e["action"], e)
    assigned_entry = by_action["role.assigned"]
    assert assigned_entry["details"] == {
        "person_id": person["id"],
        "role": "agent",
        "unit": "BJ",
        "permissions": sorted(roles["agent"]["permissions"]),
    }
    assert assigned_entry["actor"] == "person:admin"
    assert assigned_entry["source"] == "127.0.0.1"
    assert by_action["role.revoked"]["target_id"] == assigned.json()["id"]
    registered = by_action["case.registered"]
    assert registered["target_id"] == created["id"]
    assert registered["details"]["number"] == created["number"]
    moved = by_action["case.transitioned"]["details"]
    assert moved["action"] == "start" and moved["to_state"] == "in_progress"
    # The factory enabled group_policy at the group: the settings change is in the log.
    plugin = [
        e
        for e in _entries(api, token, action="plugin.")
        if e["details"]["plugin"] == "group_policy"
    ]
    assert plugin and plugin[-1]["details"]["unit"] == "GRP"


def test_cursor_order_and_filters(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    token = person_token(tenant_a, "auditor")
    page = api.get("/api/v1/audit", headers=auth(token), params={"limit": 1, "order": "asc"})
    first = page.json()
    assert first["items"][0]["seq"] == 1 and first["next_cursor"]
    second = api.get(
        "/api/v1/audit",
        headers=auth(token),
        params={"limit": 1, "order": "asc", "cursor": first["next_cursor"]},
    ).json()
    assert second["items"][0]["seq"] == 2
    assert second["items"][0]["prev_hash"] == first["items"][0]["hash"]
    wrong = api.get("/api/v1/audit", headers=auth(token), params={"cursor": first["next_cursor"]})
    assert wrong.status_code == 400 and wrong.json()["type"] == "/problems/invalid-cursor"
    newest = _entries(api, token, limit=5)
    assert [e["seq"] for e in newest] == sorted((e["seq"] for e in newest), reverse=True)


def test_export_csv_and_json_is_itself_recorded(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    token = auth(person_token(tenant_a, "auditor"))
    as_csv = api.get("/api/v1/audit/export", headers=token, params={"format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows and rows[0]["seq"] == "1" and len(rows[0]["hash"]) == 64
    as_json = api.get("/api/v1/audit/export", headers=token, params={"action": "auth."}).json()
    assert {e["action"] for e in as_json["entries"]} == {"auth.sign_in"}
    exported = _entries(api, token["Authorization"].split()[1], action="audit.exported")
    assert exported[0]["details"]["format"] == "json"
    assert exported[0]["details"]["filters"] == {"action": "auth."}
    check = api.get("/api/v1/audit/verify", headers=token).json()
    assert check["ok"] is True and check["first_broken"] is None


def test_only_tenant_wide_auditors_read_the_log(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    agent = api.get("/api/v1/audit", headers=auth(person_token(tenant_a, "agent_bj")))
    assert agent.status_code == 403 and agent.json()["type"] == "/problems/forbidden"


def test_another_tenant_never_sees_the_log(
    api: httpx.Client,
    database: Database,
    live_server: LiveServer,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
) -> None:
    b_token = client_token(database, live_server, tenant_b, ["audit:read"])
    seen = _entries(api, b_token)
    with database.platform_session() as s:
        a_ids = {
            str(i)
            for i in s.scalars(select(AuditEntry.id).where(AuditEntry.tenant_id == tenant_a.id))
        }
    assert a_ids and not a_ids & {str(e["id"]) for e in seen}
    assert all(e["target_id"] != str(tenant_a.people["admin"].id) for e in seen)


def test_control_characters_in_filters_are_a_bad_request(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    token = auth(person_token(tenant_a, "auditor"))
    answer = api.get("/api/v1/audit", headers=token, params={"action": "auth.\x00"})
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/problem+json")
