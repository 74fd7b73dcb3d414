"""The plugin API over HTTP (in process; the caller is set by the test authentication and
checked by the real guards). ``test_http_live.py`` covers the same endpoints end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.testing import TestClient

from core.db import Database
from core.plugins.host import PluginHost
from tests.factories import TenantWorld, make_tenant
from tests.plugins.conftest import as_person, build_api
from tests.plugins.testing_plugins import Raiser, registry_with

Client = TestClient[Any]
BASE = "/api/v1/plugin-settings"


def url(world: TenantWorld, plugin: str, key: str, action: str = "") -> str:
    """The URL of a plugin at one of the world's units."""
    return f"{BASE}/{plugin}/{world.units[key].id}" + (f"/{action}" if action else "")


def test_list_plugins_with_metadata_and_schemas(api: Client, world: TenantWorld) -> None:
    response = api.get("/api/v1/plugins", headers=as_person(world))
    assert response.status_code == 200
    plugins = {p["name"]: p for p in response.json()}
    assert {
        "statutory_cn",
        "service_rules_cn",
        "group_policy",
        "branch_policy",
        "agency_policy",
        "email_smtp",
        "webhook",
    } <= set(plugins)
    statutory = plugins["statutory_cn"]
    assert statutory["always_on"] and statutory["title"] == {
        "zh": "法定时限基线",
        "en": "Statutory baseline",
    }
    assert "2020-complaints/18" in statutory["citations"]
    assert plugins["service_rules_cn"]["on_by_default"]
    schema = plugins["group_policy"]["config_schema"]
    assert schema["properties"]["complaint_decision_days"]["type"] == "integer"
    one = api.get("/api/v1/plugins/webhook", headers=as_person(world)).json()
    assert one["config_schema"]["properties"]["secret"]["writeOnly"] is True
    missing = api.get("/api/v1/plugins/nope", headers=as_person(world))
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/unknown-plugin"


def test_set_read_history_and_rollback_over_http(api: Client, database: Database) -> None:
    world = make_tenant(database, "http")
    admin = as_person(world)
    assert (
        api.post(
            url(world, "agency_policy", "group", "enable"),
            headers=admin,
            json={"reason": "代理机构制度"},
        ).status_code
        == 200
    )
    first = api.put(
        url(world, "agency_policy", "group"),
        headers=admin,
        json={"settings": {"complaint_decision_days": 10}},
    )
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    second = api.put(
        url(world, "agency_policy", "group"),
        headers={**admin, "If-Match": '"2"'},
        json={"settings": {"complaint_decision_days": 8}, "reason": "tighter"},
    )
    assert second.json()["version"] == 3
    stale = api.put(
        url(world, "agency_policy", "group"),
        headers={**admin, "If-Match": '"2"'},
        json={"settings": {"complaint_decision_days": 5}},
    )
    assert stale.status_code == 412 and stale.json()["current_version"] == 3

    got = api.get(url(world, "agency_policy", "group"), headers=admin)
    assert got.json()["settings"] == {"complaint_decision_days": 8}
    assert got.headers["etag"] == '"3"'

    history = api.get(
        url(world, "agency_policy", "group", "history"), headers=admin, params={"limit": 2}
    ).json()
    assert [v["version"] for v in history["items"]] == [3, 2]
    assert history["items"][0]["changes"] == [
        {"path": "$.complaint_decision_days", "old": 10, "new": 8}
    ]
    assert history["items"][0]["changed_by"] == "person:admin"
    assert history["next_cursor"] == 2
    rest = api.get(
        url(world, "agency_policy", "group", "history"), headers=admin, params={"before": 2}
    ).json()
    assert [v["action"] for v in rest["items"]] == ["enable"] and rest["next_cursor"] is None

    back = api.post(
        url(world, "agency_policy", "group", "rollback"),
        headers=admin,
        json={"to_version": 2, "reason": "undo"},
    )
    assert back.status_code == 200
    assert back.json()["settings"] == {"complaint_decision_days": 10}
    assert back.json()["version"] == 4
    unknown = api.post(
        url(world, "agency_policy", "group", "rollback"), headers=admin, json={"to_version": 99}
    )
    assert unknown.status_code == 404


def test_invalid_settings_are_a_422_naming_the_json_path(api: Client, world: TenantWorld) -> None:
    response = api.put(
        url(world, "branch_policy", "bj"),
        headers=as_person(world),
        json={"settings": {"working_hours": {"open": "8:30", "close": "17:30"}, "extra": True}},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "/problems/invalid-settings" and body["plugin"] == "branch_policy"
    assert {e["path"] for e in body["errors"]} == {"$", "$.working_hours.open"}
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (
        api.get(url(world, "branch_policy", "bj"), headers=as_person(world)).json()["version"] == 0
    )
    bad_body = api.put(
        url(world, "branch_policy", "bj"),
        headers=as_person(world),
        json={"settings": {}, "surprise": 1},
    )
    assert bad_body.status_code == 400


def test_effective_settings_show_where_each_value_comes_from(
    api: Client, database: Database
) -> None:
    world = make_tenant(database, "eff")
    admin = as_person(world)
    api.post(url(world, "group_policy", "group", "enable"), headers=admin)
    api.put(
        url(world, "group_policy", "group"),
        headers=admin,
        json={"settings": {"complaint_decision_days": 10, "complaint_callback_days": 2}},
    )
    api.put(
        url(world, "group_policy", "bj"),
        headers=admin,
        json={"settings": {"complaint_decision_days": 7}},
    )
    response = api.get(
        f"{BASE}/effective", headers=admin, params={"unit_id": str(world.units["bj"].id)}
    )
    assert response.status_code == 200
    plugins = {p["plugin"]: p for p in response.json()["plugins"]}
    group = plugins["group_policy"]
    assert group["enabled"] and group["enabled_by"]["unit_code"] == "GRP"
    assert group["settings"]["complaint_decision_days"] == 7
    assert group["provenance"]["complaint_decision_days"]["unit_code"] == "BJ"
    assert group["provenance"]["complaint_callback_days"]["unit_code"] == "GRP"
    assert group["provenance"]["policy_reference"] == {
        "source": "default",
        "unit_id": None,
        "unit_code": None,
    }
    assert plugins["statutory_cn"]["enabled_by"]["source"] == "always_on"
    assert plugins["service_rules_cn"]["enabled_by"]["source"] == "default"
    assert not plugins["agency_policy"]["enabled"]

    listed = api.get(BASE, headers=admin, params={"plugin": "group_policy"}).json()
    assert sorted(r["unit_code"] for r in listed) == ["BJ", "GRP"]


def test_enable_disable_inherit_and_the_statutory_baseline_stays_on(
    api: Client, world: TenantWorld
) -> None:
    admin = as_person(world)
    off = api.post(url(world, "service_rules_cn", "sh", "disable"), headers=admin)
    assert off.status_code == 200 and off.json()["enabled"] is False
    again = api.post(url(world, "service_rules_cn", "sh", "inherit"), headers=admin)
    assert again.json()["enabled"] is None
    refused = api.post(url(world, "statutory_cn", "group", "disable"), headers=admin)
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/plugin-always-on"
    assert api.post(url(world, "nope", "group", "enable"), headers=admin).status_code == 404


def test_only_plugin_admins_change_settings_and_reads_are_limited_to_ones_units(
    api: Client, world: TenantWorld
) -> None:
    auditor, agent = as_person(world, "auditor"), as_person(world, "agent_bj")
    assert api.get(url(world, "group_policy", "bj"), headers=auditor).status_code == 200
    denied = api.put(
        url(world, "group_policy", "bj"),
        headers=auditor,
        json={"settings": {"complaint_decision_days": 9}},
    )
    assert denied.status_code == 403 and denied.json()["permission"] == "plugins:admin"
    assert api.get("/api/v1/plugins", headers=agent).status_code == 403
    # a token without the scope cannot change settings even for a tenant admin
    narrow = as_person(world, **{"x-test-scopes": "plugins:read"})
    assert api.post(url(world, "agency_policy", "bj", "enable"), headers=narrow).status_code == 403


def test_another_tenant_gets_404_for_a_tenants_units(
    api: Client, world: TenantWorld, other: TenantWorld
) -> None:
    intruder = as_person(other)
    assert api.get(url(world, "group_policy", "bj"), headers=intruder).status_code == 404
    assert (
        api.put(
            url(world, "group_policy", "bj"), headers=intruder, json={"settings": {}}
        ).status_code
        == 404
    )
    assert api.get(url(world, "group_policy", "bj", "history"), headers=intruder).status_code == 404
    effective = api.get(
        f"{BASE}/effective", headers=intruder, params={"unit_id": str(world.units["bj"].id)}
    )
    assert effective.status_code == 404
    theirs = {str(u.id) for u in world.units.values()}
    assert not [r for r in api.get(BASE, headers=intruder).json() if r["unit_id"] in theirs]


def test_preview_shows_deadlines_warnings_and_follow_ups(api: Client, database: Database) -> None:
    world = make_tenant(database, "preview")
    admin = as_person(world)
    api.post(url(world, "group_policy", "group", "enable"), headers=admin)
    api.put(
        url(world, "group_policy", "group"),
        headers=admin,
        json={"settings": {"complaint_decision_days": 20}},
    )
    response = api.post(
        "/api/v1/plugins/preview",
        headers=admin,
        json={
            "unit_id": str(world.units["bj"].id),
            "case_type": "complaint",
            "received_at": "2026-03-02T10:00:00+08:00",
            "channel": "regulator",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    decision = next(c for c in body["clocks"] if c["clock"] == "complaint.decision")
    assert decision["rule"]["source"] == "statutory_cn"
    assert decision["due"] == "2026-03-18T00:00:00+08:00"
    assert [c["source"] for c in decision["candidates"]] == ["group_policy"]
    assert len(body["warnings"]) == 1 and "group_policy" in body["warnings"][0]
    assert {f["kind"] for f in body["follow_ups"]} == {"adhoc_inspection", "regulator_report"}
    naive = api.post(
        "/api/v1/plugins/preview",
        headers=admin,
        json={
            "unit_id": str(world.units["bj"].id),
            "case_type": "complaint",
            "received_at": "2026-03-02T10:00:00",
        },
    )
    assert naive.status_code == 422
    unknown = api.post(
        "/api/v1/plugins/preview",
        headers=admin,
        json={
            "unit_id": str(world.units["bj"].id),
            "case_type": "complaint",
            "received_at": "2026-03-02T10:00:00+08:00",
            "trigger": "moon.full",
        },
    )
    assert unknown.status_code == 422 and "unknown trigger" in unknown.json()["detail"]
    decided = api.post(
        "/api/v1/plugins/preview",
        headers=admin,
        json={
            "unit_id": str(world.units["bj"].id),
            "case_type": "complaint",
            "received_at": "2026-03-20T10:00:00+08:00",
            "trigger": "complaint.decided",
        },
    )
    assert [c["clock"] for c in decided.json()["clocks"]] == ["complaint.review_request_window"]


def test_a_raising_plugin_is_a_502_problem_naming_it(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    registry = registry_with(raiser=Raiser())
    host = make_host(registry)
    world = make_tenant(database, "raise-http")
    with TestClient(build_api(database, host)) as client:
        admin = as_person(world)
        assert (
            client.post(url(world, "raiser", "company", "enable"), headers=admin).status_code == 200
        )
        response = client.post(
            "/api/v1/plugins/preview",
            headers=admin,
            json={
                "unit_id": str(world.units["bj"].id),
                "case_type": "complaint",
                "received_at": "2026-03-02T10:00:00+08:00",
            },
        )
        assert response.status_code == 502
        body = response.json()
        assert body["type"] == "/problems/plugin-failed"
        assert (body["plugin"], body["hook"]) == ("raiser", "insurdesk_deadline_rules")
        # disabling it (no restart) makes the same request work again
        client.post(url(world, "raiser", "company", "disable"), headers=admin)
        ok = client.post(
            "/api/v1/plugins/preview",
            headers=admin,
            json={
                "unit_id": str(world.units["bj"].id),
                "case_type": "complaint",
                "received_at": "2026-03-02T10:00:00+08:00",
            },
        )
        assert ok.status_code == 200 and "raiser" not in ok.json()["plugins"]
