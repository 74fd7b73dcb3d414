"""docs/integrators.md: its worked example runs against the live server as written, and the
settings it lists are the platform's."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import LiveServer
from tests.factories import TenantWorld

pytestmark = pytest.mark.usefixtures("quiet_webhooks")

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrators.md"


def worked_example() -> str:
    """The Python of the worked example, in order."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("<!-- worked-example:start -->")[1].split("<!-- worked-example:end -->")[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_the_worked_example_runs(
    live_server: LiveServer, admin: dict[str, str], world: TenantWorld, capsys: object
) -> None:
    namespace = {
        "__name__": "worked_example",
        "BASE_URL": live_server.url,
        "ADMIN_TOKEN": admin["Authorization"].removeprefix("Bearer "),
        "UNIT_ID": str(world.units["bj"].id),
    }
    exec(compile(worked_example(), str(DOC), "exec"), namespace)
    event, moved = namespace["event"], namespace["moved"]
    assert event["type"] == "case.created"  # type: ignore[index]
    assert moved.json()["case"]["state"] == "awaiting_materials"  # type: ignore[attr-defined]


def test_the_settings_table_lists_the_integrator_settings() -> None:
    text = DOC.read_text(encoding="utf-8")
    ours = [
        f.name
        for f in fields(Settings)
        if f.name.startswith(("rate_limit_", "webhook_", "idempotency_")) or f.name == "redis_url"
    ]
    assert len(ours) == 7
    for name in ours:
        assert f"`INSURDESK_{name.upper()}`" in text, name
