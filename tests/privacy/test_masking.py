"""Masking by role and purpose: masked by default, clear with ``customers:read_clear`` and a
declared purpose (and an audit entry naming who, which customer, which fields, why, which
client); changes audited with masked before/after."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.db import Database
from core.orgs.services import get_unit_by_code
from core.people.services import assign_role, create_person, get_role_by_key
from core.privacy.masking import (
    mask_address_text,
    mask_bank_account,
    mask_email,
    mask_id_number,
    mask_name,
    mask_phone,
)
from tests.api.conftest import TokenFor, auth, client_token
from tests.conftest import LiveServer
from tests.factories import PASSWORD, TenantWorld


def test_masking_formats() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_id_number("110105194912311234") == "110***********1234"
    assert mask_name("张三") == "张*" and mask_name("欧阳娜娜") == "欧***"
    assert mask_email("zhang.san@example.com") == "z***@example.com"
    assert mask_address_text("北京市朝阳区建国路88号") == "北京市朝阳区****"
    assert mask_bank_account("6222 0202 0011 2233 445") == "6222***********3445"


def _audit(database: Database, world: TenantWorld, action: str) -> list[AuditEntry]:
    with database.tenant_session(world.id) as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def _customer(api: httpx.Client, headers: dict[str, str], world: TenantWorld) -> dict[str, Any]:
    created = api.post(
        "/api/v1/customers",
        headers=headers,
        json={
            "kind": "insured",
            "name": "王小明",
            "unit_id": str(world.units["bj"].id),
            "id_type": "resident_id",
            "id_number": "110105194912311234",
            "phone": "13812345678",
            "email": "wang.xm@example.com",
            "address": "北京市朝阳区建国路88号",
            "bank_account": "6222020200112233445",
        },
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def test_masked_by_default_even_for_whoever_typed_it(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    body = _customer(api, auth(person_token(tenant_a, "agent_bj")), tenant_a)
    assert body["masked"] is True and body["purpose"] is None
    assert body["name"] == "王**"
    assert body["phone"] == "138****5678"
    assert body["id_number"] == "110***********1234"
    assert body["email"] == "w***@example.com"
    assert body["address"] == "北京市朝阳区****"
    assert body["bank_account"] == "6222***********3445"
    auditor = api.get(
        f"/api/v1/customers/{body['id']}", headers=auth(person_token(tenant_a, "auditor"))
    )
    assert auditor.status_code == 200 and auditor.json()["phone"] == "138****5678"


def test_clear_with_permission_and_purpose_leaves_an_audit_entry(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    body = _customer(api, agent, tenant_a)
    before = len(_audit(database, tenant_a, "customer.read_clear"))
    clear = api.get(
        f"/api/v1/customers/{body['id']}", headers={**agent, "X-Purpose": "claims_handling"}
    )
    assert clear.status_code == 200, clear.text
    out = clear.json()
    assert out["masked"] is False and out["purpose"] == "claims_handling"
    assert (out["name"], out["phone"], out["id_number"]) == (
        "王小明",
        "13812345678",
        "110105194912311234",
    )
    entries = _audit(database, tenant_a, "customer.read_clear")
    assert len(entries) == before + 1
    entry = entries[-1]
    assert entry.actor == "person:agent_bj"
    assert entry.actor_id == str(tenant_a.people["agent_bj"].id)
    assert entry.target_type == "customer" and entry.target_id == body["id"]
    assert entry.details["purpose"] == "claims_handling"
    assert entry.details["fields"] == [
        "name",
        "id_number",
        "phone",
        "email",
        "address",
        "bank_account",
    ]
    assert entry.client_id and entry.details["client_id"] == entry.client_id
    assert entry.source == "127.0.0.1"
    # The audit entry itself holds nothing in clear.
    assert "13812345678" not in json.dumps(entry.details, ensure_ascii=False)


def test_purpose_without_permission_and_unknown_purposes_are_refused(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    customer = tenant_a.customers["bj"].id
    auditor = auth(person_token(tenant_a, "auditor"))
    refused = api.get(f"/api/v1/customers/{customer}", headers={**auditor, "X-Purpose": "callback"})
    assert refused.status_code == 403
    assert refused.json()["permission"] == "customers:read_clear"
    listed = api.get("/api/v1/customers", headers={**auditor, "X-Purpose": "callback"})
    assert listed.status_code == 403
    agent = auth(person_token(tenant_a, "agent_bj"))
    unknown = api.get(f"/api/v1/customers/{customer}", headers={**agent, "X-Purpose": "curiosity"})
    assert unknown.status_code == 422 and unknown.json()["type"] == "/problems/unknown-purpose"
    assert "callback" in unknown.json()["purposes"]


def test_clear_only_where_the_permission_holds(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    # Reads every customer of the company (quality inspector), clear only at BJ (agent).
    with database.tenant_transaction(tenant_a.id) as s:
        person = create_person(s, username="qi.bj", display_name="质检", password=PASSWORD)
        for role, code in (("quality_inspector", "CO"), ("agent", "BJ")):
            found_role, unit = get_role_by_key(s, role), get_unit_by_code(s, code)
            assert found_role is not None and unit is not None
            assign_role(s, person_id=person.id, role_id=found_role.id, unit_id=unit.id)
    headers = {**auth(person_token(tenant_a, "qi.bj")), "X-Purpose": "complaint_handling"}
    items = api.get("/api/v1/customers", headers=headers, params={"limit": 200}).json()["items"]
    by_unit = {(c["unit_id"], c["masked"]) for c in items}
    assert (str(tenant_a.units["bj"].id), False) in by_unit
    assert (str(tenant_a.units["sh"].id), True) in by_unit
    assert (str(tenant_a.units["sh"].id), False) not in by_unit
    sh = api.get(f"/api/v1/customers/{tenant_a.customers['sh'].id}", headers=headers)
    assert sh.status_code == 403  # asked for clear where it does not hold


def test_an_integrator_needs_the_scope(
    api: httpx.Client, database: Database, live_server: LiveServer, tenant_a: TenantWorld
) -> None:
    customer = f"/api/v1/customers/{tenant_a.customers['sh'].id}"
    reader = client_token(database, live_server, tenant_a, ["customers:read"])
    assert api.get(customer, headers={**auth(reader), "X-Purpose": "callback"}).status_code == 403
    clear = client_token(
        database, live_server, tenant_a, ["customers:read", "customers:read_clear"]
    )
    out = api.get(customer, headers={**auth(clear), "X-Purpose": "callback"}).json()
    assert out["masked"] is False and out["name"] == "客户sh"


def test_changes_are_audited_with_masked_before_and_after(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    body = _customer(api, agent, tenant_a)
    changed = api.patch(
        f"/api/v1/customers/{body['id']}",
        headers=agent,
        json={"phone": "13900000000", "address": "北京市海淀区中关村大街1号"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == "139****0000"
    entry = _audit(database, tenant_a, "customer.changed")[-1]
    assert entry.target_id == body["id"]
    changes = entry.details["changes"]
    assert set(changes) == {"phone", "address"}
    assert changes["phone"]["before"]["masked"] == "138****5678"
    assert changes["phone"]["after"]["masked"] == "139****0000"
    assert changes["phone"]["after"]["fingerprint"].startswith("fp:")
    text = json.dumps(entry.details, ensure_ascii=False)
    for clear in ("13812345678", "13900000000", "中关村大街", "建国路"):
        assert clear not in text
    created = _audit(database, tenant_a, "customer.created")[-1]
    assert created.details["changes"]["name"]["after"]["masked"] == "王**"


@pytest.mark.parametrize("header", ["X-Purpose"])
def test_the_purpose_header_is_documented(api: httpx.Client, header: str) -> None:
    schema = api.get("/schema/openapi.json").json()
    params = schema["paths"]["/api/v1/customers/{customer_id}"]["get"]["parameters"]
    documented = [p for p in params if p["name"] == header and p["in"] == "header"]
    assert documented and "complaint_handling" in documented[0]["description"]
