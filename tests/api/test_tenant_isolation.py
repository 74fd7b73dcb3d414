"""Every API route with an id answers 404 for another tenant's id, with tenant A's token.

The routes are found by walking the application, so a new route with a new kind of id fails
``test_every_id_parameter_is_known`` until this suite knows which table its ids come from.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.app import create_app
from core.db import Base, Database
from core.settings import load_settings
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld

ID_TABLES: dict[str, str] = {
    "unit_id": "org_units",
    "person_id": "people",
    "customer_id": "customers",
    "policy_id": "policies",
    "case_id": "cases",
    "assignment_id": "role_assignments",
    "attachment_id": "case_attachments",
    "delivery_id": "deliveries",
    "template_id": "notification_templates",
    "view_id": "case_views",
    "webhook_id": "webhook_subscriptions",
    "category_id": "case_categories",
    "request_id": "privacy_requests",
    "agreement_id": "sharing_agreements",
    "hold_id": "legal_holds",
}
"""Path parameter → the table whose ids it takes."""

PARAM = re.compile(r"\{(\w+):uuid\}")


def _api_routes() -> list[tuple[str, str]]:
    app = create_app(load_settings(environ={}, database_url="sqlite://"))
    found = []
    for route in app.routes:
        if not route.path.startswith("/api/v1") or not PARAM.search(route.path):
            continue
        for method in sorted(getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}):
            found.append((method, route.path))
    return sorted(set(found))


ROUTES = _api_routes()


def test_every_id_parameter_is_known() -> None:
    unknown = {p for _, path in ROUTES for p in PARAM.findall(path) if p not in ID_TABLES}
    assert not unknown, f"add these path parameters to ID_TABLES: {sorted(unknown)}"


def _id_of(database: Database, table: str, tenant_id: uuid.UUID) -> uuid.UUID:
    t = Base.metadata.tables[table]
    with database.platform_session() as s:
        return uuid.UUID(
            str(s.execute(select(t.c.id).where(t.c.tenant_id == tenant_id).limit(1)).scalar_one())
        )


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_another_tenants_id_is_not_found(
    database: Database,
    api: httpx.Client,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
    method: str,
    path: str,
) -> None:
    params = PARAM.findall(path)
    if any(p not in ID_TABLES for p in params):
        pytest.fail(f"unknown path parameter in {path}")
    url = path
    for p in params:
        url = url.replace(f"{{{p}:uuid}}", str(_id_of(database, ID_TABLES[p], tenant_b.id)))
    body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
    answer = api.request(method, url, headers=auth(person_token(tenant_a, "admin")), json=body)
    # A write with an empty body may be refused for the body first; never with B's data.
    assert answer.status_code in ((404,) if method in ("GET", "DELETE") else (400, 404, 422)), (
        method,
        url,
        answer.status_code,
        answer.text,
    )
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert str(tenant_b.id) not in answer.text


@pytest.mark.parametrize(
    "params",
    [{}, {"open": "true"}, {"breached": "false"}, {"provisional": "false"}, {"sort": "-received"}],
)
def test_the_work_queue_lists_only_the_tenants_own_cases(
    database: Database,
    api: httpx.Client,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
    params: dict[str, str],
) -> None:
    """The queue reads plain rows below the ORM's automatic tenant filter (decision 0009): its
    own filters (the session's tenant, the caller's units) keep tenant B out, on SQLite (no
    row-level security) as on PostgreSQL, whatever the other filters."""
    cases = Base.metadata.tables["cases"]
    with database.platform_session() as s:
        own = {
            str(i) for i in s.scalars(select(cases.c.id).where(cases.c.tenant_id == tenant_a.id))
        }
        theirs = {
            str(i) for i in s.scalars(select(cases.c.id).where(cases.c.tenant_id == tenant_b.id))
        }
    assert own and theirs
    answer = api.get(
        "/api/v1/cases",
        params={**params, "limit": 200},
        headers=auth(person_token(tenant_a, "admin")),
    )
    assert answer.status_code == 200, answer.text
    listed = {c["id"] for c in answer.json()["items"]}
    assert listed and listed <= own
    assert not listed & theirs
    if not params:
        assert listed == own
    # The same page for tenant B's admin (the same filters, units of the same paths: the
    # statement kept for tenant A's page is not B's).
    answer = api.get(
        "/api/v1/cases",
        params={**params, "limit": 200},
        headers=auth(person_token(tenant_b, "admin")),
    )
    assert answer.status_code == 200, answer.text
    listed_b = {c["id"] for c in answer.json()["items"]}
    assert listed_b <= theirs
    if not params:
        assert listed_b == theirs
