"""``insurdesk clients`` commands."""

from __future__ import annotations

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from typer.testing import CliRunner

from core.auth.cli import cli
from core.settings import Settings
from tests.auth.helpers import Endpoints
from tests.factories import TenantWorld


def _env(settings: Settings) -> dict[str, str]:
    return {
        "INSURDESK_DATABASE_URL": settings.effective_database_url,
        "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        "INSURDESK_VAR_DIR": str(settings.var_dir),
    }


def test_create_prints_a_working_client_once_then_disable(
    settings: Settings, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    runner = CliRunner()
    env = _env(settings)
    result = runner.invoke(
        cli,
        [
            "create",
            "--tenant",
            world.tenant.slug,
            "--name",
            "ERP",
            "--scope",
            "org:read",
            "--unit",
            "BJ",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.output.splitlines() if ":" in line)
    client_id, secret = lines["client_id"].strip(), lines["client_secret"].strip()
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(urls.token, grant_type="client_credentials")
    me = http.get(urls.me, headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert me["client_unit_ids"] == [str(world.units["bj"].id)]

    listed = runner.invoke(cli, ["list", "--tenant", world.tenant.slug], env=env)
    assert client_id in listed.output and secret not in listed.output
    assert runner.invoke(cli, ["disable", client_id], env=env).exit_code == 0
    refused = http.get(urls.me, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert refused.status_code == 401


def test_errors_exit_2_with_a_message(settings: Settings, world: TenantWorld) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["create", "--tenant", world.tenant.slug, "--name", "x", "--scope", "nope:nope"],
        env=_env(settings),
    )
    assert result.exit_code == 2
    assert "unknown scopes: nope:nope" in result.output
    missing = runner.invoke(
        cli,
        ["create", "--tenant", "no-such-tenant", "--name", "x", "--scope", "org:read"],
        env=_env(settings),
    )
    assert missing.exit_code == 2


def test_keys_ensure_and_list(settings: Settings) -> None:
    runner = CliRunner()
    ensured = runner.invoke(cli, ["keys", "ensure"], env=_env(settings))
    assert ensured.exit_code == 0, ensured.output
    kid = ensured.output.split(":")[-1].strip()
    assert kid in runner.invoke(cli, ["keys", "list"], env=_env(settings)).output
