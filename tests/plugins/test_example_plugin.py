"""The third-party example plugin (``tests/plugins/example_plugin``), installed with pip and found
through its ``insurdesk.plugins`` entry point, works end to end.

CI installs it first: ``pip install ./tests/plugins/example_plugin``.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

import pytest
from litestar.testing import TestClient

from core.db import Database
from core.plugins.host import PluginHost
from core.plugins.registry import PluginRegistry
from tests.factories import make_tenant
from tests.plugins.conftest import as_person

INSTALL = "pip install ./tests/plugins/example_plugin"


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    found = [ep for ep in entry_points(group="insurdesk.plugins") if ep.name == "example_vip"]
    if not found:
        message = f"the example plugin is not installed; run: {INSTALL}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)


def test_it_is_discovered_through_its_entry_point(registry: PluginRegistry) -> None:
    plugin = registry.get("example_vip")
    assert not plugin.builtin and not plugin.on_by_default and not plugin.always_on
    assert plugin.distribution == "insurdesk-example-vip==0.3.0"
    assert plugin.version == "0.3.0"
    assert plugin.info.title_en == "Fast complaint handling for VIP and elderly customers"
    assert {"insurdesk_deadline_rules", "insurdesk_case_created"} <= plugin.hooks


def test_it_works_end_to_end_through_the_api(
    api: TestClient[Any], database: Database, host: PluginHost
) -> None:
    world = make_tenant(database, "vip")
    admin = as_person(world)
    unit = world.units["company"].id
    listed = {p["name"] for p in api.get("/api/v1/plugins", headers=admin).json()}
    assert "example_vip" in listed

    def preview(**customer: Any) -> dict[str, Any]:
        response = api.post(
            "/api/v1/plugins/preview",
            headers=admin,
            json={
                "unit_id": str(world.units["bj"].id),
                "case_type": "complaint",
                "received_at": "2026-03-02T10:00:00+08:00",
                "customer": customer,
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    before = preview(vip=True)
    assert "example_vip" not in before["plugins"]  # installed, not enabled: never called

    assert (
        api.post(f"/api/v1/plugin-settings/example_vip/{unit}/enable", headers=admin).status_code
        == 200
    )
    vip = preview(vip=True)
    clocks = {c["clock"]: c for c in vip["clocks"]}
    assert clocks["complaint.decision"]["rule"]["source"] == "example_vip"
    assert clocks["complaint.decision"]["due"] == "2026-03-10T00:00:00+08:00"  # 7 days
    assert clocks["complaint.first_contact"]["due"] == "2026-03-03T10:00:00+08:00"  # 24 hours
    assert {f["kind"] for f in vip["follow_ups"]} >= {"notification"}
    elderly = {c["clock"]: c for c in preview(age=72)["clocks"]}
    assert elderly["complaint.decision"]["rule"]["source"] == "example_vip"
    ordinary = {c["clock"]: c for c in preview(age=40)["clocks"]}
    assert ordinary["complaint.decision"]["rule"]["source"] == "statutory_cn"

    # its settings are validated against its schema, and a looser value never loosens the law
    bad = api.put(
        f"/api/v1/plugin-settings/example_vip/{unit}",
        headers=admin,
        json={"settings": {"elderly_age": 30}},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "$.elderly_age"
    api.put(
        f"/api/v1/plugin-settings/example_vip/{unit}",
        headers=admin,
        json={"settings": {"complaint_days": 20}},
    )
    loose = preview(vip=True)
    decision = next(c for c in loose["clocks"] if c["clock"] == "complaint.decision")
    assert decision["rule"]["source"] == "statutory_cn"
    assert "example_vip" in loose["warnings"][0]
