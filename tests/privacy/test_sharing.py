"""Sharing agreements: the register, exports masked by default, an export under an agreement
sends only its fields, and an expired agreement blocks it."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import httpx
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.db import Database
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld, make_tenant


def _agreement(api: httpx.Client, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    today = dt.date.today()
    body = {
        "third_party": "中再寿险",
        "third_party_kind": "reinsurer",
        "purpose": "再保险分出核保",
        "fields": ["name", "id_number"],
        "legal_basis": "contract",
        "reference": f"RI-{today:%Y}-{abs(hash(str(overrides))) % 100000:05d}",
        "starts_on": (today - dt.timedelta(days=30)).isoformat(),
        "expires_on": (today + dt.timedelta(days=365)).isoformat(),
        **overrides,
    }
    answer = api.post("/api/v1/privacy/sharing-agreements", headers=headers, json=body)
    assert answer.status_code == 201, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_exports_are_masked_by_default(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    answer = api.get("/api/v1/customers/export", headers=agent, params={"format": "csv"})
    assert answer.status_code == 200, answer.text
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["id"] for r in rows] == [str(tenant_a.customers["bj"].id)]
    assert rows[0]["name"] == "客***" and rows[0]["phone"] == "138****8000"


def test_an_export_under_an_agreement_sends_only_its_fields_in_clear(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "share")
    admin = auth(person_token(world, "admin"))
    agreement = _agreement(api, admin)
    assert agreement["status"] == "active"
    answer = api.get(
        "/api/v1/customers/export",
        headers=admin,
        params={"format": "json", "agreement_id": agreement["id"]},
    )
    assert answer.status_code == 200, answer.text
    customers = answer.json()["customers"]
    assert {c["name"] for c in customers} == {"客户bj", "客户sh"}
    assert all("phone" not in c and "email" not in c for c in customers)
    with database.tenant_session(world.id) as s:
        entry = s.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "customer.exported")
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert entry is not None
    assert entry.details["agreement"] == agreement["reference"]
    assert entry.details["clear_fields"] == ["id_number", "name"]
    assert entry.details["customers"] == 2


def test_an_expired_agreement_blocks_the_export(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "share-exp")
    admin = auth(person_token(world, "admin"))
    today = dt.date.today()
    expired = _agreement(
        api,
        admin,
        reference="CA-2024-001",
        third_party="公估公司",
        third_party_kind="claims_assessor",
        starts_on=(today - dt.timedelta(days=400)).isoformat(),
        expires_on=(today - dt.timedelta(days=1)).isoformat(),
    )
    assert expired["status"] == "expired"
    blocked = api.get(
        "/api/v1/customers/export", headers=admin, params={"agreement_id": expired["id"]}
    )
    assert blocked.status_code == 409
    assert blocked.json()["type"] == "/problems/agreement-expired"
    assert "CA-2024-001" in blocked.json()["detail"]
    renewed = api.patch(
        f"/api/v1/privacy/sharing-agreements/{expired['id']}",
        headers=admin,
        json={"expires_on": (today + dt.timedelta(days=90)).isoformat()},
    )
    assert renewed.json()["status"] == "active"
    assert (
        api.get(
            "/api/v1/customers/export", headers=admin, params={"agreement_id": expired["id"]}
        ).status_code
        == 200
    )
    terminated = api.patch(
        f"/api/v1/privacy/sharing-agreements/{expired['id']}", headers=admin, json={"active": False}
    )
    assert terminated.json()["status"] == "terminated"
    again = api.get(
        "/api/v1/customers/export", headers=admin, params={"agreement_id": expired["id"]}
    )
    assert again.status_code == 409 and again.json()["type"] == "/problems/agreement-inactive"


def test_the_register_needs_privacy_admin_and_stays_in_its_tenant(
    api: httpx.Client, tenant_a: TenantWorld, tenant_b: TenantWorld, person_token: TokenFor
) -> None:
    admin_a = auth(person_token(tenant_a, "admin"))
    agreement = _agreement(
        api,
        admin_a,
        reference="CC-A-1",
        third_party="外包呼叫中心",
        third_party_kind="call_centre",
        fields=["name", "phone"],
    )
    agent = auth(person_token(tenant_a, "agent_bj"))
    assert api.get("/api/v1/privacy/sharing-agreements", headers=agent).status_code == 403
    bad = api.post(
        "/api/v1/privacy/sharing-agreements",
        headers=admin_a,
        json={
            "third_party": "x",
            "third_party_kind": "reinsurer",
            "purpose": "x",
            "fields": ["salary"],
            "legal_basis": "contract",
            "reference": "BAD-1",
            "starts_on": "2026-01-01",
            "expires_on": "2027-01-01",
        },
    )
    assert bad.status_code == 422
    admin_b = auth(person_token(tenant_b, "admin"))
    assert (
        api.patch(
            f"/api/v1/privacy/sharing-agreements/{agreement['id']}",
            headers=admin_b,
            json={"active": False},
        ).status_code
        == 404
    )
    assert (
        api.get(
            "/api/v1/customers/export", headers=admin_b, params={"agreement_id": agreement["id"]}
        ).status_code
        == 404
    )
    listed = api.get("/api/v1/privacy/sharing-agreements", headers=admin_b).json()
    assert agreement["id"] not in {a["id"] for a in listed}
