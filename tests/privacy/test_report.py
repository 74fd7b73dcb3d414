"""The privacy report, over HTTP for tenant admins and from ``insurdesk privacy report``."""

from __future__ import annotations

import datetime as dt
import json

import httpx
from typer.testing import CliRunner

from core.cli import build_cli
from core.db import Database
from core.settings import Settings
from tests.api.conftest import TokenFor, auth
from tests.factories import make_tenant


def test_the_report_says_where_data_is_who_reads_it_and_what_is_due(
    api: httpx.Client, database: Database, settings: Settings, person_token: TokenFor
) -> None:
    world = make_tenant(database, "report")
    admin = auth(person_token(world, "admin"))
    agent = auth(person_token(world, "agent_bj"))
    for purpose in ("callback", "callback", "claims_handling"):
        api.get(
            f"/api/v1/customers/{world.customers['bj'].id}", headers={**agent, "X-Purpose": purpose}
        )
    soon = dt.date.today() + dt.timedelta(days=10)
    api.post(
        "/api/v1/privacy/sharing-agreements",
        headers=admin,
        json={
            "third_party": "公估机构",
            "third_party_kind": "claims_assessor",
            "purpose": "理赔查勘",
            "fields": ["name", "phone", "address"],
            "legal_basis": "contract",
            "reference": "CA-2026-7",
            "starts_on": "2026-01-01",
            "expires_on": soon.isoformat(),
        },
    )
    api.post(
        "/api/v1/privacy/requests",
        headers=agent,
        json={"customer_id": str(world.customers["bj"].id), "kind": "access", "channel": "hotline"},
    )
    answer = api.get("/api/v1/privacy/report", headers=admin)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    customers = next(p for p in report["storage"] if p["table"] == "customers")
    assert set(customers["fields"]) == {
        "name",
        "id_number",
        "phone",
        "email",
        "address",
        "bank_account",
    }
    assert customers["exact_match_search"] == ["id_number", "name", "phone"]
    assert "AES-256-GCM" in customers["protection"]
    cases = next(p for p in report["storage"] if p["table"] == "cases")
    assert "AES-256-GCM" in cases["protection"]
    assert {"description", "reporter_name", "decision"} <= set(cases["fields"])
    assert any(p["table"] == "case_events" for p in report["storage"])
    assert any("not encrypted" in p["protection"] for p in report["storage"])  # stated plainly
    files = next(p for p in report["storage"] if p["table"] == "case_attachments (files)")
    assert "AES-256-GCM" in files["protection"] and "not encrypted" not in files["protection"]
    assert files["rows"] >= 2 and files["in_clear"] == 0  # the factory's records have no file
    readers = report["clear_readers"]
    assert {"agent", "cs_division", "tenant_admin"} <= set(readers["roles"])
    assert {"username": "agent_bj", "role": "agent", "unit": "BJ"} in readers["people"]
    assert report["access"]["unmasked_reads"] == 3
    assert report["access"]["by_purpose"] == {"callback": 2, "claims_handling": 1}
    assert report["access"]["by_actor"] == {"person:agent_bj": 3}
    (agreement,) = [a for a in report["sharing_agreements"] if a["reference"] == "CA-2026-7"]
    assert agreement["status"] == "expiring" and agreement["expires_on"] == soon.isoformat()
    assert report["requests"]["open"] >= 1
    assert set(report["retention_backlog"]) == {
        "prospect",
        "former_customer",
        "request_note",
        "closed_case_text",
        "case_attachment",
        "delivery_recipient",
    }
    assert {(k["purpose"], k["status"]) for k in report["keys"]} >= {("data", "active")}
    assert (
        api.get("/api/v1/privacy/report", headers=auth(person_token(world, "auditor"))).status_code
        == 403
    )

    result = CliRunner().invoke(
        build_cli(),
        ["privacy", "report", "--tenant", world.tenant.slug, "--json"],
        env={
            "INSURDESK_DATABASE_URL": settings.effective_database_url,
            "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        },
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["access"]["unmasked_reads"] == 3
    text = CliRunner().invoke(
        build_cli(),
        ["privacy", "report", "--tenant", world.tenant.slug],
        env={
            "INSURDESK_DATABASE_URL": settings.effective_database_url,
            "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        },
    )
    assert "Unmasked reads: 3" in text.output and "CA-2026-7" in text.output


def test_the_report_period_at_the_edges_of_the_calendar(
    api: httpx.Client, database: Database, person_token: TokenFor
) -> None:
    """Found by the schema fuzzing: ``until`` on the first representable day was a 500 (the
    default 30 days before it do not exist)."""
    world = make_tenant(database, "report-edges")
    admin = auth(person_token(world, "admin"))
    for query in (
        "until=0001-01-01T08:17:00Z",
        "since=0001-01-01T00:00:00Z&until=0001-01-02T00:00:00Z",
        "until=9999-12-31T23:59:59Z",
    ):
        answer = api.get(f"/api/v1/privacy/report?{query}", headers=admin)
        assert answer.status_code == 200, (query, answer.text)
    refused = api.get(
        "/api/v1/privacy/report?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        headers=admin,
    )
    assert refused.status_code == 422
    assert refused.json()["type"] == "/problems/invalid-period"
