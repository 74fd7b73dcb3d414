"""A case's free text at rest and through the API: ciphertext in the tables (SQLite and
PostgreSQL), identifiers masked unless the caller may read it in clear for a declared purpose
(audited), a whistle-blower's identity only with ``cases:whistleblower`` and a purpose, keys
that stay in their tenant, and rotation that rewrites case rows without changing their ETag."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from core.audit import AuditActor
from core.audit.models import AuditEntry
from core.cases.models import Case, CaseEvent
from core.customers.models import Customer
from core.db import Database
from core.people.services import assign_role, create_person, get_role_by_key
from core.privacy.crypto import DecryptionError
from core.privacy.fields import MASK_VERSION, record_of
from core.privacy.masking import mask_text
from core.privacy.rotation import _remasked, pending_rows, reencrypt_all, rotate
from tests.api.conftest import TokenFor, auth
from tests.factories import PASSWORD, TenantWorld, make_tenant

ACTOR = AuditActor("platform", "platform:test")
DESCRIPTION = (
    "客户张伟来电，手机13912345678，身份证11010519491231002X，住院诊断为乳腺癌，理赔被拒。"
)
NOTICE = "已电话告知张伟（13912345678）补充出院小结"
REASON = "客户张伟撤回：已与医院协商，联系邮箱zhang.wei@example.com"
PURPOSE = {"X-Purpose": "complaint_handling"}
SECRETS = ("13912345678", "11010519491231002X", "乳腺癌", "张伟", "出院小结", "zhang.wei@")


def _register(api: httpx.Client, token: str, world: TenantWorld, **extra: Any) -> dict[str, Any]:
    body = {
        "type": "complaint",
        "channel": "hotline",
        "subject": "张伟投诉理赔被拒 13912345678",
        "description": DESCRIPTION,
        "unit_id": str(world.units["bj"].id),
        "customer_id": str(world.customers["bj"].id),
        **extra,
    }
    made = api.post("/api/v1/cases", headers=auth(token), json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _row(database: Database, table: str, column: str, value: uuid.UUID) -> list[dict[str, Any]]:
    with database.platform_session() as s:
        return [
            dict(r)
            for r in s.execute(
                text(f"SELECT * FROM {table} WHERE {column} = :v"),
                {"v": value if database.is_postgres else value.hex},
            ).mappings()
        ]


@pytest.fixture(scope="module")
def case_with_history(
    api: httpx.Client, tenant_a: TenantWorld, person_token: TokenFor
) -> dict[str, Any]:
    """A complaint with a notice and a withdrawal: free text in the case and its timeline."""
    token = person_token(tenant_a, "agent_bj")
    made = _register(api, token, tenant_a)
    case_id = made["case"]["id"]
    etag = api.get(f"/api/v1/cases/{case_id}", headers=auth(token)).headers["etag"]
    noticed = api.post(
        f"/api/v1/cases/{case_id}/notices",
        headers={**auth(token), "If-Match": etag},
        json={"channel": "phone", "content": NOTICE},
    )
    assert noticed.status_code == 201, noticed.text
    etag = api.get(f"/api/v1/cases/{case_id}", headers=auth(token)).headers["etag"]
    withdrawn = api.post(
        f"/api/v1/cases/{case_id}/transitions",
        headers={**auth(token), "If-Match": etag},
        json={"action": "withdraw", "reason": REASON},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    return made["case"]


def test_raw_sql_sees_only_ciphertext_in_cases_and_timelines(
    database: Database, tenant_a: TenantWorld, case_with_history: dict[str, Any]
) -> None:
    case_id = uuid.UUID(case_with_history["id"])
    (row,) = _row(database, "cases", "id", case_id)
    events = _row(database, "case_events", "case_id", case_id)
    stored = " ".join(str(v) for r in [row, *events] for v in r.values())
    for secret in SECRETS:
        assert secret not in stored, secret
    assert str(row["sealed_enc"]).startswith("v1:") and row["key_version"] >= 1
    assert "description" not in row and "subject" not in row and "reason" not in events[0]
    assert sum(1 for e in events if e["sealed_enc"]) >= 3  # registered, notice, withdrawal
    with database.tenant_session(tenant_a.id) as s:  # the application reads it back
        case = s.get_one(Case, (tenant_a.id, case_id))
        assert case.description == DESCRIPTION and case.withdrawn_reason == REASON
        reasons = [
            e.reason for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id))
        ]
        assert REASON in reasons


def test_free_text_is_masked_unless_a_purpose_is_declared_and_clear_reads_are_audited(
    api: httpx.Client,
    database: Database,
    tenant_a: TenantWorld,
    person_token: TokenFor,
    case_with_history: dict[str, Any],
) -> None:
    agent = auth(person_token(tenant_a, "agent_bj"))
    case_id = case_with_history["id"]
    masked = api.get(f"/api/v1/cases/{case_id}", headers=agent).json()["case"]
    assert masked["masked"] is True
    assert "139****5678" in masked["description"] and "110***********002X" in masked["description"]
    assert "乳腺癌" in masked["description"] and "13912345678" not in masked["description"]
    assert "13912345678" not in masked["subject"]
    timeline = api.get(f"/api/v1/cases/{case_id}/timeline", headers=agent).text
    assert "13912345678" not in timeline and "zhang.wei@" not in timeline
    assert "z***@example.com" in timeline and "补充出院小结" in timeline

    clear = api.get(f"/api/v1/cases/{case_id}", headers={**agent, **PURPOSE}).json()["case"]
    assert clear["masked"] is False and clear["description"] == DESCRIPTION
    clear_timeline = api.get(f"/api/v1/cases/{case_id}/timeline", headers={**agent, **PURPOSE})
    assert NOTICE in clear_timeline.text and REASON in clear_timeline.text
    with database.tenant_session(tenant_a.id) as s:
        reads = list(
            s.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "case.read_clear", AuditEntry.target_id == case_id
                )
            )
        )
    assert {r.details["what"] for r in reads} == {"case", "timeline"}
    read = next(r for r in reads if r.details["what"] == "case")
    assert read.actor == "person:agent_bj" and read.details["purpose"] == "complaint_handling"
    assert "description" in read.details["fields"] and read.source == "127.0.0.1"
    assert not any(secret in str(r.details) for r in reads for secret in SECRETS)

    auditor = auth(person_token(tenant_a, "auditor"))  # no customers:read_clear
    refused = api.get(f"/api/v1/cases/{case_id}", headers={**auditor, **PURPOSE})
    assert refused.status_code == 403
    assert api.get(f"/api/v1/cases/{case_id}", headers=auditor).json()["case"]["masked"]
    unknown = api.get(f"/api/v1/cases/{case_id}", headers={**agent, "X-Purpose": "curiosity"})
    assert unknown.status_code == 422


def test_a_whistle_blowers_identity_needs_the_permission_and_a_purpose(
    api: httpx.Client, database: Database, tenant_a: TenantWorld, person_token: TokenFor
) -> None:
    with database.tenant_transaction(tenant_a.id) as s:
        username = f"director_{uuid.uuid4().hex[:6]}"
        person = create_person(s, username=username, display_name="运营负责人", password=PASSWORD)
        role = get_role_by_key(s, "service_director")
        assert role is not None
        assign_role(s, person_id=person.id, role_id=role.id, unit_id=tenant_a.units["group"].id)
    made = _register(
        api,
        person_token(tenant_a, "agent_bj"),
        tenant_a,
        type="whistleblowing",
        channel="online",
        subject="业务员虚构保险责任",
        description=None,
        customer_id=None,
        reporter_name="王某某",
        reporter_contact="13900139000",
    )
    case_id = made["case"]["id"]
    director = auth(person_token(tenant_a, username))
    hidden = api.get(f"/api/v1/cases/{case_id}", headers=director).json()["case"]["reporter"]
    assert hidden["masked"] and hidden["name"] == "***"
    seen = api.get(f"/api/v1/cases/{case_id}", headers={**director, **PURPOSE}).json()
    assert seen["case"]["reporter"]["name"] == "王某某" and not seen["case"]["reporter"]["masked"]
    with database.tenant_session(tenant_a.id) as s:
        (entry,) = s.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "case.read_clear", AuditEntry.target_id == case_id
            )
        )
    assert entry.actor == f"person:{username}"
    assert {"reporter_name", "reporter_contact"} <= set(entry.details["fields"])
    assert "王某某" not in str(entry.details) and "13900139000" not in str(entry.details)
    (row,) = _row(database, "cases", "id", uuid.UUID(case_id))
    assert "王某某" not in str(row.values()) and "13900139000" not in str(row.values())


def test_tenant_a_key_cannot_decrypt_tenant_b_case_texts(
    api: httpx.Client,
    database: Database,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
) -> None:
    a_case = _register(api, person_token(tenant_a, "agent_bj"), tenant_a)["case"]
    b_case = _register(api, person_token(tenant_b, "agent_bj"), tenant_b)["case"]
    a_id, b_id = uuid.UUID(a_case["id"]), uuid.UUID(b_case["id"])
    with database.platform_session() as s:
        b_token = s.get_one(Case, (tenant_b.id, b_id)).sealed_enc
    with database.platform_transaction() as s:  # B's record copied into A's row
        s.execute(
            update(Case)
            .where(Case.tenant_id == tenant_a.id, Case.id == a_id)
            .values(sealed_enc=b_token)
            .execution_options(synchronize_session=False)
        )
    with database.tenant_session(tenant_a.id) as s, pytest.raises(DecryptionError):
        _ = s.get_one(Case, (tenant_a.id, a_id)).description
    with database.tenant_session(tenant_b.id) as s:
        assert s.get_one(Case, (tenant_b.id, b_id)).description == DESCRIPTION


def test_rotation_rewrites_case_rows_keeps_their_etag_and_old_ciphertext_reads_meanwhile(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    world = make_tenant(database, "case-rot")
    token = person_token(world, "agent_bj")
    case_id = _register(api, token, world)["case"]["id"]
    etag = api.get(f"/api/v1/cases/{case_id}", headers=auth(token)).headers["etag"]
    with database.tenant_transaction(world.id) as s:
        old, new = rotate(s, world.id, actor=ACTOR)
    with database.tenant_session(world.id) as s:
        assert pending_rows(s, world.id)["cases"] >= 1
        assert pending_rows(s, world.id)["case_events"] >= 1
    during = api.get(f"/api/v1/cases/{case_id}", headers={**auth(token), **PURPOSE})
    assert during.json()["case"]["description"] == DESCRIPTION  # old key still decrypts
    report = reencrypt_all(database, world.id, actor=ACTOR, batch=2)
    assert report.destroyed == [f"data:{old}"]
    with database.tenant_session(world.id) as s:
        assert set(pending_rows(s, world.id).values()) == {0}
        case = s.get_one(Case, (world.id, uuid.UUID(case_id)))
        assert case.key_version == new and str(case.sealed_enc).startswith(f"v1:{new}:")
        events = s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)).all()
        assert {e.key_version for e in events if e.sealed_enc} == {new}
    after = api.get(f"/api/v1/cases/{case_id}", headers={**auth(token), **PURPOSE})
    assert after.headers["etag"] == etag  # re-encryption is not a change of the case
    assert after.json()["case"]["description"] == DESCRIPTION


def test_identifiers_in_free_text_are_masked_and_the_rest_kept() -> None:
    from core.privacy.masking import mask_text

    masked = mask_text(DESCRIPTION + " 卡号6222 0202 0011 2233 445，2025-03-01 10:00 赔款12000元")
    assert "139****5678" in masked and "110***********002X" in masked
    assert "622************3445" in masked
    assert "2025-03-01 10:00" in masked and "12000元" in masked and "乳腺癌" in masked
    assert mask_text("邮箱 zhang.wei@example.com，单号 DSR-20261126-918FA2") == (
        "邮箱 z***@example.com，单号 DSR-20261126-918FA2"
    )


def test_a_case_record_keeps_its_texts_masked_forms_where_they_differ(
    database: Database, tenant_a: TenantWorld, case_with_history: dict[str, Any]
) -> None:
    """What the work queue shows masked is computed once, when the texts are sealed: the
    record keeps ``#subject`` beside ``subject`` (inside the ciphertext), only where masking
    changes the text."""
    case_id = uuid.UUID(case_with_history["id"])
    with database.tenant_session(tenant_a.id) as s:
        record = record_of(s.get_one(Case, (tenant_a.id, case_id)))
    assert record["#"] == MASK_VERSION
    assert record["#description"] == mask_text(DESCRIPTION) != DESCRIPTION
    assert record["#withdrawn_reason"] == mask_text(REASON) != REASON
    assert "13912345678" not in record["#subject"]
    assert not any(k.startswith("#") and k[1:] not in record for k in record if k != "#")


def test_a_re_encryption_adds_the_masked_forms_to_a_record_sealed_before() -> None:
    before = {"subject": "致电 13800138000", "description": "服务态度差", "#": "1"}
    assert _remasked(Case, before) == {
        "subject": "致电 13800138000",
        "#subject": mask_text("致电 13800138000"),
        "description": "服务态度差",  # nothing to mask: no masked form
        "#": MASK_VERSION,
    }
    # a customer's phone too (re-encryption computed no masked forms at all before: the class
    # was asked for its sealed fields as if it were an instance)
    customer = _remasked(Customer, {"phone": "13800138000", "#": "1"})
    assert customer["#phone"] == "138****8000" and customer["#"] == MASK_VERSION
