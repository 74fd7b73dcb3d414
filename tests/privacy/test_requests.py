"""Data-subject requests over HTTP: a deadline of 15 working days on the tenant calendar (or
the tenant's policy), a complete export, corrections with before/after in the audit log, and a
deletion that anonymizes the person and keeps the case records with their timelines."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from core.audit.models import AuditEntry
from core.calendars.services import tenant_calendar
from core.cases.models import Case, CaseEvent
from core.customers.models import Customer, CustomerKind
from core.db import Database
from core.deadlines import compute_due
from core.privacy.models import Consent
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld, make_tenant

SH = ZoneInfo("Asia/Shanghai")


def _entries(database: Database, world: TenantWorld, action: str) -> list[AuditEntry]:
    with database.tenant_session(world.id) as s:
        return list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def _register(
    api: httpx.Client, headers: dict[str, str], customer_id: uuid.UUID, kind: str, **extra: Any
) -> dict[str, Any]:
    answer = api.post(
        "/api/v1/privacy/requests",
        headers=headers,
        json={"customer_id": str(customer_id), "kind": kind, "channel": "letter", **extra},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _new_customer(database: Database, world: TenantWorld, **fields: Any) -> uuid.UUID:
    with database.tenant_transaction(world.id) as s:
        c = Customer(
            kind=CustomerKind.POLICYHOLDER,
            unit_id=world.units["bj"].id,
            **{
                "name": "李四",
                "phone": "13611112222",
                "email": "li.si@example.com",
                "id_number": "310101198001011234",
                "address": "上海市黄浦区南京东路1号",
                **fields,
            },
        )
        s.add(c)
        s.flush()
        return c.id


def test_the_deadline_is_15_working_days_on_the_tenant_calendar(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    admin = auth(person_token(tenant_a, "admin"))
    received = dt.datetime(2026, 9, 29, 10, 0, tzinfo=SH)  # National Day follows
    body = _register(
        api, admin, tenant_a.customers["bj"].id, "access", received_at=received.isoformat()
    )
    assert body["working_days"] == 15 and body["state"] == "received"
    with database.tenant_session(tenant_a.id) as s:
        expected = compute_due(received, 15, "working_days", tenant_calendar(s, "Asia/Shanghai"))
    assert body["last_day"] == expected.last_day.isoformat()
    weekdays, day = 0, received.date()
    while weekdays < 15:
        day += dt.timedelta(days=1)
        weekdays += day.weekday() < 5
    assert expected.last_day > day  # the holidays were not counted as working days
    assert body["overdue"] is True  # received in 2026, long before "now" in the test clock
    received_entries = _entries(database, tenant_a, "privacy.request_received")
    assert received_entries[-1].details["working_days"] == 15


def test_the_deadline_follows_the_tenant_policy(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "dsr-policy")
    admin = auth(person_token(world, "admin"))
    group = world.units["group"].id
    changed = api.put(
        f"/api/v1/plugin-settings/privacy_cn/{group}",
        headers=admin,
        json={"settings": {"dsr_working_days": 5}},
    )
    assert changed.status_code == 200, changed.text
    enabled = api.post(f"/api/v1/plugin-settings/privacy_cn/{group}/enable", headers=admin)
    assert enabled.status_code == 200, enabled.text
    body = _register(api, admin, world.customers["bj"].id, "copy")
    assert body["working_days"] == 5


def test_an_access_request_produces_a_complete_export(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    customer = tenant_a.customers["bj"].id
    consent = api.post(
        f"/api/v1/customers/{customer}/consents",
        headers=agent,
        json={"purpose": "marketing", "given": True, "channel": "phone", "notice_version": "v3"},
    )
    assert consent.status_code == 201
    api.get(f"/api/v1/customers/{customer}", headers={**agent, "X-Purpose": "callback"})
    body = _register(
        api, agent, customer, "copy", note="客户来电要求复制个人信息"
    )  # agents register
    admin = auth(person_token(tenant_a, "admin"))
    assert (
        api.post(f"/api/v1/privacy/requests/{body['id']}/start", headers=admin).json()["state"]
        == "in_progress"
    )
    done = api.post(f"/api/v1/privacy/requests/{body['id']}/fulfil", headers=admin, json={})
    assert done.status_code == 200, done.text
    export = done.json()["export"]
    assert export["customer"]["name"] == "客户bj" and export["customer"]["phone"] == "13800138000"
    assert [p["number"] for p in export["policies"]] == [tenant_a.policies["bj"].number]
    assert tenant_a.cases["bj"].number in [c["number"] for c in export["cases"]]
    (case,) = [c for c in export["cases"] if c["number"] == tenant_a.cases["bj"].number]
    assert case["timeline"] and case["timeline"][0]["kind"] == "registered"
    assert [(c["purpose"], c["given"]) for c in export["consents"]][-1] == ("marketing", True)
    assert body["number"] in [r["number"] for r in export["requests"]]
    assert any(
        a["action"] == "customer.read_clear" and a["purpose"] == "callback"
        for a in export["accesses"]
    )
    request = done.json()["request"]
    assert request["state"] == "completed" and len(request["result"]["export_sha256"]) == 64
    assert request["note"] == "客户来电要求复制个人信息"
    again = api.get(f"/api/v1/privacy/requests/{body['id']}/export", headers=admin)
    assert again.status_code == 200 and again.json()["customer"]["id"] == str(customer)
    exported = _entries(database, tenant_a, "customer.exported")[-1]
    assert exported.details["purpose"] == "data_subject_request"
    assert "13800138000" not in json.dumps(exported.details)
    # the request note is stored encrypted
    with database.platform_session() as s:
        from core.privacy.models import DataSubjectRequest

        row = s.get_one(DataSubjectRequest, (tenant_a.id, uuid.UUID(body["id"])))
        assert row.sealed_enc is not None and "客户来电" not in row.sealed_enc


def test_a_correction_leaves_before_and_after_in_the_audit_log(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    customer = _new_customer(database, tenant_a)
    admin = auth(person_token(tenant_a, "admin"))
    body = _register(api, admin, customer, "correction")
    bad = api.post(
        f"/api/v1/privacy/requests/{body['id']}/fulfil",
        headers=admin,
        json={"changes": {"kind": "prospect"}},
    )
    assert bad.status_code == 422
    done = api.post(
        f"/api/v1/privacy/requests/{body['id']}/fulfil",
        headers=admin,
        json={"changes": {"phone": "13699998888", "address": "上海市徐汇区漕溪北路2号"}},
    )
    assert done.status_code == 200, done.text
    assert done.json()["request"]["result"] == {"fields_corrected": ["address", "phone"]}
    entry = _entries(database, tenant_a, "customer.corrected")[-1]
    assert entry.details["request"] == body["number"]
    phone = entry.details["changes"]["phone"]
    assert (phone["before"]["masked"], phone["after"]["masked"]) == ("136****2222", "136****8888")
    assert "13699998888" not in json.dumps(entry.details)
    with database.tenant_session(tenant_a.id) as s:
        assert s.get_one(Customer, (tenant_a.id, customer)).phone == "13699998888"


def test_a_deletion_anonymizes_the_person_and_keeps_the_cases(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    customer = _new_customer(database, tenant_a)
    admin = auth(person_token(tenant_a, "admin"))
    case = api.post(
        "/api/v1/cases",
        headers=admin,
        json={
            "type": "consultation",
            "channel": "hotline",
            "subject": "咨询保单",
            "unit_id": str(tenant_a.units["bj"].id),
            "customer_id": str(customer),
        },
    ).json()["case"]
    api.post(
        f"/api/v1/customers/{customer}/consents",
        headers=admin,
        json={"purpose": "marketing", "given": True, "channel": "phone", "notice_version": "v3"},
    )
    body = _register(api, admin, customer, "deletion")
    held = api.post(f"/api/v1/privacy/requests/{body['id']}/fulfil", headers=admin, json={})
    assert held.status_code == 409 and held.json()["type"] == "/problems/legal-hold"
    assert any(case["number"] in h for h in held.json()["holds"])
    with database.tenant_transaction(tenant_a.id) as s:  # the case is closed long ago
        row = s.get_one(Case, (tenant_a.id, uuid.UUID(case["id"])))
        row.state, row.closed_at = "closed", dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    done = api.post(f"/api/v1/privacy/requests/{body['id']}/fulfil", headers=admin, json={})
    assert done.status_code == 200, done.text
    token = done.json()["request"]["result"]["anonymous_token"]
    assert token.startswith("ANON-")
    with database.tenant_session(tenant_a.id) as s:
        person = s.get_one(Customer, (tenant_a.id, customer))
        assert person.name == f"匿名客户 {token}" and person.anonymous_token == token
        assert (person.phone, person.email, person.id_number, person.address) == (None,) * 4
        assert person.anonymized_at is not None
        kept = s.get_one(Case, (tenant_a.id, uuid.UUID(case["id"])))
        assert kept.customer_id == customer
        assert s.scalars(select(CaseEvent).where(CaseEvent.case_id == kept.id)).all()
        assert not s.scalars(select(Consent).where(Consent.customer_id == customer)).all()
        assert (
            s.scalars(
                select(Customer.id).where(Customer.phone_bidx.isnot(None), Customer.id == customer)
            ).first()
            is None
        )
    shown = api.get(f"/api/v1/customers/{customer}", headers=admin).json()
    assert shown["anonymized"] is True and shown["name"] == f"匿名客户 {token}"
    clear = api.get(
        f"/api/v1/customers/{customer}", headers={**admin, "X-Purpose": "complaint_handling"}
    ).json()
    assert clear["name"] == f"匿名客户 {token}" and clear["phone"] is None
    entry = _entries(database, tenant_a, "customer.anonymized")[-1]
    assert entry.details["fields_removed"] == ["name", "id_number", "phone", "email", "address"]
    assert "13611112222" not in json.dumps(entry.details)
    assert (
        api.patch(
            f"/api/v1/customers/{customer}", headers=admin, json={"phone": "13600000000"}
        ).status_code
        == 409
    )


def test_refusals_state_a_reason_and_requests_stay_in_their_tenant_and_units(
    api: httpx.Client, tenant_a: TenantWorld, tenant_b: TenantWorld, person_token: TokenFor
) -> None:
    admin = auth(person_token(tenant_a, "admin"))
    body = _register(api, admin, tenant_a.customers["bj"].id, "deletion")
    url = f"/api/v1/privacy/requests/{body['id']}"
    assert api.post(url + "/refuse", headers=admin, json={}).status_code == 400
    refused = api.post(
        url + "/refuse", headers=admin, json={"reason": "保单仍在有效期内，依法需保留"}
    )
    assert refused.json()["state"] == "refused"
    assert refused.json()["refusal_reason"] == "保单仍在有效期内，依法需保留"
    assert api.post(url + "/fulfil", headers=admin, json={}).status_code == 409
    assert api.get(url, headers=auth(person_token(tenant_b, "admin"))).status_code == 404
    assert api.get(url, headers=auth(person_token(tenant_a, "agent_bj"))).status_code == 403
    listed = api.get("/api/v1/privacy/requests", headers=auth(person_token(tenant_b, "admin")))
    assert body["id"] not in {r["id"] for r in listed.json()["items"]}
    sh_agent = auth(person_token(tenant_a, "agent_sh"))
    refused_register = api.post(
        "/api/v1/privacy/requests",
        headers=sh_agent,
        json={
            "customer_id": str(tenant_a.customers["bj"].id),
            "kind": "access",
            "channel": "letter",
        },
    )
    assert refused_register.status_code == 404
