"""``insurdesk login``: a person gets a working token from the command line."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from core.auth.login import DEFAULT_REDIRECT
from core.cli import build_cli
from core.db import Database
from tests.auth.helpers import register
from tests.conftest import LiveServer
from tests.factories import PASSWORD, TenantWorld, make_tenant


def _login(
    live_server: LiveServer, world: TenantWorld, username: str, password: str
) -> tuple[int, str]:
    result = CliRunner().invoke(
        build_cli(),
        [
            "login",
            "--tenant",
            world.tenant.slug,
            "--username",
            username,
            "--server",
            live_server.url,
        ],
        env={"INSURDESK_PASSWORD": password},
    )
    return result.exit_code, result.output.strip()


def test_login_prints_a_token_that_works(database: Database, live_server: LiveServer) -> None:
    world = make_tenant(database, "login")
    register(
        database,
        world,
        name="cli",
        auth_method="none",
        client_id=f"{world.tenant.slug}.console-cli",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(DEFAULT_REDIRECT,),
        scopes=["org:read", "cases:read"],
        unit_ids=[],
    )
    code, token = _login(live_server, world, "agent_bj", PASSWORD)
    assert code == 0, token
    me = httpx.get(f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["person_id"] == str(world.people["agent_bj"].id)

    code, output = _login(live_server, world, "agent_bj", "wrong password!")
    assert code == 2 and "refused" in output
