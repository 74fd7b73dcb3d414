"""``insurdesk plugins list`` and ``insurdesk plugins effective``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.db import Database
from core.orgs.services import get_unit
from core.plugins import services
from core.plugins.cli import cli
from core.plugins.registry import PluginRegistry
from core.settings import Settings
from tests.factories import make_tenant

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI's settings at the test database."""
    monkeypatch.setenv("INSURDESK_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("INSURDESK_ADMIN_DATABASE_URL", settings.effective_admin_database_url)


def test_list_shows_the_installed_plugins() -> None:
    result = runner.invoke(cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["statutory_cn"]["default"] == "always on"
    assert rows["service_rules_cn"]["default"] == "on by default"
    assert rows["group_policy"]["title_zh"] == "集团客户服务政策"
    table = runner.invoke(cli, ["list"])
    assert "Statutory baseline / 法定时限基线" in table.output


def test_effective_shows_settings_and_where_they_come_from(
    env: None, database: Database, registry: PluginRegistry
) -> None:
    world = make_tenant(database, "cli")
    with database.tenant_transaction(world.id) as s:
        for key, settings in (
            ("group", {"complaint_decision_days": 10}),
            ("bj", {"complaint_decision_days": 6}),
        ):
            services.apply_config(
                s,
                registry,
                plugin="group_policy",
                unit=get_unit(s, world.units[key].id),
                enabled=True if key == "group" else None,
                settings=settings,
                actor=services.Actor("cli"),
            )
    result = runner.invoke(
        cli, ["effective", "--tenant", world.tenant.slug, "--unit", "BJ", "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    group = next(p for p in body["plugins"] if p["plugin"] == "group_policy")
    assert group["enabled"] and group["enabled_by"] == "GRP"
    assert group["settings"]["complaint_decision_days"] == 6
    assert group["provenance"]["complaint_decision_days"] == "BJ"
    assert group["provenance"]["complaint_callback_days"] == "default"
    text = runner.invoke(cli, ["effective", "--tenant", world.tenant.slug, "--unit", "SH"])
    assert "complaint_decision_days = 10   <- GRP" in text.output

    unknown = runner.invoke(cli, ["effective", "--tenant", "no-such", "--unit", "BJ"])
    assert unknown.exit_code == 2
    no_unit = runner.invoke(cli, ["effective", "--tenant", world.tenant.slug, "--unit", "XX"])
    assert no_unit.exit_code == 2
