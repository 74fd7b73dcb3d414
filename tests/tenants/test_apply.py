"""Applying manifests on both backends: creation, idempotence, reported changes, atomicity."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from core.auth.hashing import verify_secret
from core.auth.models import OAuthClient
from core.auth.passwords import verify_password
from core.cases.models import Case
from core.customers.models import Customer, CustomerKind
from core.db import Database
from core.orgs.models import OrgUnit
from core.orgs.services import create_unit
from core.people.models import Person, Role, RoleAssignment
from core.people.permissions import BUILTIN_ROLES
from core.tenancy.models import PlatformAuditEntry, Tenant
from tenants import apply as apply_module
from tenants.apply import CASE_STATE, apply_manifest, customer_id
from tenants.manifests import Manifest, load_manifest, parse_manifest
from tenants.provisioning import get_tenant_by_slug
from tenants.schema import ManifestError
from tests.tenants.conftest import DemoWriter, row_counts, unique_slug
from tests.tenants.samples import small


def _tenant(db: Database, slug: str) -> Tenant:
    with db.platform_session() as s:
        tenant = get_tenant_by_slug(s, slug)
    assert tenant is not None
    return tenant


def _apply(db: Database, text: str, name: str = "m.yaml") -> list[str]:
    return apply_manifest(db, parse_manifest(text, name)).lines()


def test_demo_group_applied_twice(database: Database, demo_as: Callable[[str], DemoWriter]) -> None:
    path, slug = demo_as("huaxia-group")("hx")
    manifest = load_manifest(path)

    first = apply_manifest(database, manifest)
    assert first.created
    assert first.lines()[0].startswith(
        f"{slug}: tenant created with 23 units, 2 roles, "
        "16 people, 18 role grants, 20 customers, 20 policies, "
        "10 cases"
    )
    counts = row_counts(database, slug)

    second = apply_manifest(database, load_manifest(path))
    assert second.lines() == [f"{slug}: no changes"]
    assert not second.changes
    assert row_counts(database, slug) == counts

    tenant = _tenant(database, slug)
    assert tenant.manifest_digest == manifest.digest
    assert tenant.case_number_format == "HX-{prefix}-{year}-{seq:06d}"
    with database.tenant_transaction(tenant.id) as s:
        held = set(
            s.scalars(select(Role.key).join(RoleAssignment, RoleAssignment.role_id == Role.id))
        )
        assert {r.key for r in BUILTIN_ROLES} <= held
        agent = s.scalars(select(Person).where(Person.username == "li.na")).one()
        assert verify_password(agent.password_hash, "demo-agent-2026")
        hx_bj_hd = s.scalars(select(OrgUnit).where(OrgUnit.code == "HXL-BJ-HD")).one()
        assert hx_bj_hd.depth == 3
        ancestors = s.scalars(
            select(OrgUnit.code).where(OrgUnit.id.in_(hx_bj_hd.ancestor_ids()))
        ).all()
        assert set(ancestors) == {"HX", "HXL", "HXL-BJ", "HXL-BJ-HD"}


def test_demo_group_client_and_plugin_settings(
    database: Database, demo_as: Callable[[str], DemoWriter]
) -> None:
    path, slug = demo_as("huaxia-group")("hxc")
    report = apply_manifest(database, load_manifest(path))
    lines = "\n".join(report.lines(verbose=True))
    tenant = _tenant(database, slug)
    assert f"client {slug}.demo-portal registered" in lines
    assert f"client {slug}.console-cli registered" in lines
    with database.platform_session() as s:
        clients = {
            c.client_id: c
            for c in s.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id))
        }
        assert set(clients) == {f"{slug}.demo-portal", f"{slug}.console-cli"}
        client = clients[f"{slug}.demo-portal"]
        assert client.scopes == ["cases:read", "cases:write", "customers:read", "org:read"]
        assert verify_secret(client.secret_hash, "huaxia-demo-secret-2026-local-only")
        console = clients[f"{slug}.console-cli"]
        assert console.token_endpoint_auth_method == "none"
        assert console.secret_hash is None
        assert console.redirect_uris == ["http://127.0.0.1/insurdesk/callback"]
    assert "plugin group_policy at HX: enabled, settings stored (version 1)" in lines
    assert "plugin branch_policy at HXL-GD: enabled, settings stored (version 1)" in lines


def test_changed_manifest_reports_exactly_the_changes(
    database: Database, write_manifest: Callable[[str, str], Path]
) -> None:
    slug = unique_slug("chg")
    _apply(database, small(slug))
    changed = (
        small(slug)
        .replace("{code: BJ, name: 北京,", "{code: BJ, name: 北京分公司,")
        .replace(
            "    roles: [{role: agent, unit: BJ}]\n",
            "    roles: [{role: agent, unit: BJ}, {role: visitor, unit: CO}]\n"
            "  - username: li.na\n    display_name: 李娜\n    roles: [{role: agent, unit: SH}]\n",
        )
    )
    before = row_counts(database, slug)
    lines = _apply(database, changed)
    assert lines == [
        f"{slug}: unit BJ renamed: '北京' → '北京分公司'",
        f"{slug}: person li.na added",
        f"{slug}: person agent.bj: role visitor at CO granted",
        f"{slug}: person li.na: role agent at SH granted",
    ]
    after = row_counts(database, slug)
    assert after["people"] == before["people"] + 1
    assert after["role_assignments"] == before["role_assignments"] + 2
    assert after["platform_audit"] == before["platform_audit"] + 1
    assert _apply(database, changed) == [f"{slug}: no changes"]


def test_dry_run_reports_and_writes_nothing(database: Database) -> None:
    slug = unique_slug("dry")
    before = row_counts(database, slug)
    report = apply_manifest(database, parse_manifest(small(slug), "m.yaml"), dry_run=True)
    assert report.lines()[0].startswith(f"{slug} (dry run): tenant created with 4 units")
    assert row_counts(database, slug) == before


def test_nothing_is_deleted_and_what_is_kept_is_reported(database: Database) -> None:
    slug = unique_slug("kept")
    _apply(database, small(slug))
    tenant = _tenant(database, slug)
    with database.tenant_transaction(tenant.id) as s:
        bj = s.scalars(select(OrgUnit).where(OrgUnit.code == "BJ")).one()
        create_unit(s, code="BJ-HD", name="海淀", kind=bj.kind, parent_id=bj.id)
        s.add(Customer(kind=CustomerKind.PROSPECT, name="访客", unit_id=bj.id))
    lines = _apply(database, small(slug))
    assert lines == [
        f"{slug}: no changes",
        f"{slug}: unit BJ-HD (海淀) not in manifest, kept",
        f"{slug}: 1 customers not in manifest, kept",
    ]


def test_changes_made_through_the_api_are_restored_and_reported(database: Database) -> None:
    slug = unique_slug("drift")
    _apply(database, small(slug))
    tenant = _tenant(database, slug)
    with database.tenant_transaction(tenant.id) as s:
        s.scalars(select(OrgUnit).where(OrgUnit.code == "SH")).one().name = "沪"
        s.get_one(Customer, (tenant.id, customer_id(tenant.id, "c1"))).phone = "13800009999"
        case = s.scalars(select(Case).where(Case.number == "CS-DEMO-1")).one()
        setattr(case, CASE_STATE, "closed")
    lines = _apply(database, small(slug))
    assert lines == [
        f"{slug}: manifest unchanged since the last apply, but the database differed from it:",
        f"{slug}: unit SH renamed: '沪' → '上海分公司'",
        f"{slug}: customer c1 changed: phone",  # field names only: no personal data
        f"{slug}: case CS-DEMO-1 differs from the manifest ({CASE_STATE}), kept: cases change "
        "through their workflow",
    ]
    with database.tenant_transaction(tenant.id) as s:
        case = s.scalars(select(Case).where(Case.number == "CS-DEMO-1")).one()
        assert getattr(case, CASE_STATE) == "closed"


def test_moving_a_unit_moves_its_subtree(database: Database) -> None:
    slug = unique_slug("move")
    _apply(database, small(slug))
    tenant = _tenant(database, slug)
    with database.tenant_transaction(tenant.id) as s:
        bj = s.scalars(select(OrgUnit).where(OrgUnit.code == "BJ")).one()
        create_unit(s, code="BJ-HD", name="海淀", kind=bj.kind, parent_id=bj.id)
    moved = (
        small(slug)
        .replace("          - {code: BJ, name: 北京, kind: branch}\n", "")
        .replace("roles:\n", "  - {code: BJ, name: 北京, kind: branch, parent: G}\nroles:\n", 1)
    )
    lines = _apply(database, moved)
    assert f"{slug}: unit BJ moved: under CO → under G" in lines
    with database.tenant_transaction(tenant.id) as s:
        units = {u.code: u for u in s.scalars(select(OrgUnit))}
        assert units["BJ"].path == f"{units['G'].path}{units['BJ'].id}/"
        assert units["BJ-HD"].path == f"{units['BJ'].path}{units['BJ-HD'].id}/"
        assert (units["BJ"].depth, units["BJ-HD"].depth) == (1, 2)


def test_passwords_are_set_only_on_create(database: Database) -> None:
    slug = unique_slug("pw")
    demo = "demo: true\n" + small(slug).replace(
        "    display_name: 管理员\n", "    display_name: 管理员\n    password: first-password\n"
    )
    _apply(database, demo)
    tenant = _tenant(database, slug)
    with database.tenant_transaction(tenant.id) as s:
        stored = s.scalars(select(Person.password_hash).where(Person.username == "admin")).one()
    assert _apply(database, demo.replace("first-password", "other-password")) == [
        f"{slug}: no changes"
    ]
    with database.tenant_transaction(tenant.id) as s:
        assert (
            s.scalars(select(Person.password_hash).where(Person.username == "admin")).one()
            == stored
        )
        agent = s.scalars(select(Person).where(Person.username == "agent.bj")).one()
        assert agent.password_hash is None  # production-style: sets it later


def test_a_failure_mid_apply_leaves_nothing(
    database: Database, demo_as: Callable[[str], DemoWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, slug = demo_as("anxin-agency")("mid")
    manifest = load_manifest(path)

    def fail(self: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(apply_module._Applier, "_cases", fail)
    before = row_counts(database, slug)
    with pytest.raises(RuntimeError, match="disk on fire"):
        apply_manifest(database, manifest)
    assert row_counts(database, slug) == before
    with database.platform_session() as s:
        assert get_tenant_by_slug(s, slug) is None


def test_a_failure_mid_apply_of_an_existing_tenant_changes_nothing(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = unique_slug("mid2")
    _apply(database, small(slug))
    changed = small(slug).replace("name: 北京,", "name: 北京分公司,")

    def fail(self: object) -> None:
        raise RuntimeError("lost connection")

    monkeypatch.setattr(apply_module._Applier, "_policies", fail)
    before = row_counts(database, slug)
    with pytest.raises(RuntimeError):
        _apply(database, changed)
    assert row_counts(database, slug) == before
    tenant = _tenant(database, slug)
    with database.tenant_transaction(tenant.id) as s:
        assert s.scalars(select(OrgUnit.name).where(OrgUnit.code == "BJ")).one() == "北京"


def test_plugin_settings_refused_by_the_plugin_roll_back_everything(database: Database) -> None:
    from tenants.integrations import plugin_registry

    registry, why = plugin_registry()
    assert registry is not None, why
    slug = unique_slug("plg")
    text = small(slug) + (
        "plugins:\n"
        "  - plugin: service_rules_cn\n    unit: G\n    settings: {inspection_interval_months: 6}\n"
        "  - plugin: agency_policy\n    unit: BJ\n    settings: {complaint_decision_days: 99}\n"
    )
    manifest = parse_manifest(text, "plg.yaml")
    before = row_counts(database, slug)
    with pytest.raises(ManifestError) as info:
        apply_manifest(database, manifest, plugin_registry=registry)
    assert str(info.value).startswith("plg.yaml:")
    assert "plugins[1].settings: invalid settings for plugin agency_policy" in str(info.value)
    assert row_counts(database, slug) == before

    unknown = parse_manifest(text.replace("agency_policy", "no_such_plugin"), "plg.yaml")
    with pytest.raises(ManifestError, match=r"plugins\[1\]\.plugin: no plugin named"):
        apply_manifest(database, unknown, plugin_registry=registry)
    assert row_counts(database, slug) == before
    registry.close()


def test_production_clients_get_a_generated_secret_shown_once(database: Database) -> None:
    pytest.importorskip("core.auth.services")
    slug = unique_slug("cli")
    text = small(slug) + (
        "clients:\n  - {key: crm-sync01, name: CRM, scopes: [cases:read], units: [BJ]}\n"
    )
    manifest: Manifest = parse_manifest(text, "c.yaml")
    lines = apply_manifest(database, manifest).lines(verbose=True)
    assert f"{slug}: client {slug}.crm-sync01 registered" in lines
    assert any(
        line.startswith(f"{slug}: client {slug}.crm-sync01: its secret, shown once: ")
        for line in lines
    )
    assert apply_manifest(database, manifest).lines() == [f"{slug}: no changes"]
    audit_detail = _audit(database, slug)
    assert all("shown once" not in str(d) for d in audit_detail)


def _audit(db: Database, slug: str) -> list[dict[str, object]]:
    with db.platform_session() as s:
        rows = s.scalars(
            select(PlatformAuditEntry).where(PlatformAuditEntry.action == "tenant.manifest.apply")
        ).all()
        return [r.detail for r in rows if r.detail.get("slug") == slug]


def test_apply_is_audited(database: Database) -> None:
    slug = unique_slug("aud")
    _apply(database, small(slug), "aud.yaml")
    (detail,) = _audit(database, slug)
    assert detail["source"] == "aud.yaml" and detail["created"] is True
    _apply(database, small(slug), "aud.yaml")
    assert len(_audit(database, slug)) == 1  # no change, no entry
