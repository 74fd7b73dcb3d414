"""``insurdesk tenants apply|list`` through the real command line (Typer's CliRunner)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import build_cli
from core.db import Database
from core.settings import Settings
from tenants.demo import DemoRefusedError, apply_demo_tenants
from tests.tenants.conftest import DemoWriter, row_counts, unique_slug
from tests.tenants.samples import small

WriteManifest = Callable[[str, str], Path]


@pytest.fixture
def run(settings: Settings) -> Callable[..., tuple[int, str, str]]:
    """Run ``insurdesk <args>`` against this backend's test database."""
    env = {
        "INSURDESK_DATABASE_URL": settings.effective_database_url,
        "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        "INSURDESK_VAR_DIR": str(settings.var_dir),
        "INSURDESK_ENVIRONMENT": "development",
    }

    def invoke(*args: str, **extra_env: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(build_cli(), list(args), env=env | extra_env)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_apply_twice_then_list(
    run: Callable[..., tuple[int, str, str]], write_manifest: WriteManifest
) -> None:
    slug = unique_slug("cli")
    path = write_manifest("small.yaml", small(slug))
    code, out, err = run("tenants", "apply", str(path))
    assert code == 0, err
    assert f"{slug}: tenant created with 4 units" in out
    code, out, _ = run("tenants", "apply", str(path.parent))  # a directory works too
    assert code == 0
    assert f"{slug}: no changes" in out

    code, out, _ = run("tenants", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["SLUG", "NAME", "STATUS", "UNITS", "PEOPLE", "CASES"]
    assert [slug, "测试保险", "active", "4", "2", "1"] in [r.split() for r in rows]

    code, out, _ = run("tenants", "list", "--json")
    assert code == 0
    row = next(r for r in json.loads(out) if r["slug"] == slug)
    assert (row["units"], row["people"], row["cases"], row["status"]) == (4, 2, 1, "active")


def test_dry_run_writes_nothing(
    run: Callable[..., tuple[int, str, str]], write_manifest: WriteManifest, database: Database
) -> None:
    slug = unique_slug("clidry")
    path = write_manifest("small.yaml", small(slug))
    before = row_counts(database, slug)
    code, out, _ = run("tenants", "apply", "--dry-run", "--verbose", str(path))
    assert code == 0
    assert f"{slug} (dry run): unit BJ added (北京, branch, under CO)" in out
    assert row_counts(database, slug) == before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t.replace(
                "{code: SH, name: 上海分公司, kind: branch}",
                "{code: SH, name: 上海分公司, kind: branch, parent: XX}",
            ),
            ":13: units[0].children[0].children[1].parent: parent 'XX' contradicts",
        ),
        (
            lambda t: t.replace("{code: SH,", "{code: BJ,"),
            ":13: units[0].children[0].children[1].code: duplicate unit code 'BJ'",
        ),
        (
            lambda t: t.replace("role: agent, unit: BJ", "role: boss, unit: BJ"),
            ":25: people[1].roles[0].role: unknown role 'boss'",
        ),
        (
            lambda t: t.replace(
                "display_name: 管理员", "display_name: 管理员\n    password: hunter2hunter2"
            ),
            ":22: people[0].password: passwords are allowed only in demo manifests",
        ),
        (
            lambda t: t.replace("kind: group", "kind: [group"),
            ":7: bad YAML: expected ',' or ']', but got ':' (while parsing a flow sequence that "
            "starts on line 6)",
        ),
    ],
    ids=["contradicting-parent", "duplicate-unit-code", "unknown-role", "password", "bad-yaml"],
)
def test_bad_manifest_exits_2_and_writes_nothing(
    run: Callable[..., tuple[int, str, str]],
    write_manifest: WriteManifest,
    database: Database,
    edit: Callable[[str], str],
    expected: str,
) -> None:
    slug = unique_slug("clibad")
    good_slug = unique_slug("cligood")
    good = write_manifest("good.yaml", small(good_slug))
    bad = write_manifest("bad.yaml", edit(small(slug)))
    before = row_counts(database, slug, good_slug)
    code, out, err = run("tenants", "apply", str(good), str(bad))
    assert code == 2
    assert f"{bad}{expected}" in err
    assert out == ""
    # the good manifest was not applied either
    assert row_counts(database, slug, good_slug) == before


def test_duplicate_slug_exits_2(
    run: Callable[..., tuple[int, str, str]], write_manifest: WriteManifest
) -> None:
    slug = unique_slug("clidup")
    a = write_manifest("a.yaml", small(slug))
    b = write_manifest("b.yaml", small(slug))
    code, _, err = run("tenants", "apply", str(a), str(b))
    assert code == 2
    assert f"{b}:2: tenant.slug: duplicate slug '{slug}'" in err


def test_demo_manifests_refused_with_production_settings(
    run: Callable[..., tuple[int, str, str]],
    demo_as: Callable[[str], DemoWriter],
    settings: Settings,
) -> None:
    path, _slug = demo_as("anxin-agency")("prod")
    code, _, err = run("tenants", "apply", str(path), INSURDESK_ENVIRONMENT="production")
    assert code == 2
    assert "demo manifests are refused with production settings" in err
    with pytest.raises(DemoRefusedError):
        apply_demo_tenants(replace(settings, environment="production"))
