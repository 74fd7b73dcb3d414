"""Per-tenant enablement and settings along the organization tree: merge, validation,
versions, rollback, tenant isolation. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select, text

from core.api.problems import Problem
from core.db import Database
from core.orgs.services import get_unit
from core.plugins import services
from core.plugins.host import PluginHost
from core.plugins.models import PluginSetting, PluginSettingVersion
from core.plugins.registry import PluginRegistry
from core.plugins.services import Actor
from tests.factories import TenantWorld, make_tenant
from tests.plugins.testing_plugins import Spy, registry_with

ADMIN = Actor("person:admin")


def _set(
    db: Database,
    world: TenantWorld,
    registry: PluginRegistry,
    plugin: str,
    key: str,
    settings: dict[str, object],
    **kwargs: object,
) -> PluginSetting:
    with db.tenant_transaction(world.id) as s:
        unit = get_unit(s, world.units[key].id)
        return services.set_settings(
            s, registry, plugin=plugin, unit=unit, settings=settings, actor=ADMIN, **kwargs
        )  # type: ignore[arg-type]


def _switch(
    db: Database,
    world: TenantWorld,
    registry: PluginRegistry,
    plugin: str,
    key: str,
    on: bool | None,
) -> PluginSetting:
    change = {
        True: services.enable_plugin,
        False: services.disable_plugin,
        None: services.inherit_enablement,
    }[on]
    with db.tenant_transaction(world.id) as s:
        unit = get_unit(s, world.units[key].id)
        return change(s, registry, plugin=plugin, unit=unit, actor=ADMIN)


def test_branch_inherits_the_groups_settings_and_overrides_one_key(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "merge")
    _switch(database, world, registry, "group_policy", "group", True)
    _set(
        database,
        world,
        registry,
        "group_policy",
        "group",
        {
            "complaint_decision_days": 10,
            "complaint_callback_days": 2,
            "escalation": {"division": "集团客服处", "email": "cs@group.example.com"},
        },
    )
    _set(database, world, registry, "group_policy", "bj", {"complaint_decision_days": 7})

    bj = host.for_unit(world.id, world.units["bj"].path)
    sh = host.for_unit(world.id, world.units["sh"].path)
    assert bj.settings["group_policy"]["complaint_decision_days"] == 7
    assert bj.settings["group_policy"]["complaint_callback_days"] == 2  # inherited
    assert bj.settings["group_policy"]["escalation"]["division"] == "集团客服处"
    assert sh.settings["group_policy"]["complaint_decision_days"] == 10

    effective = {e.name: e for e in bj.effective}["group_policy"]
    group_id, bj_id = str(world.units["group"].id), str(world.units["bj"].id)
    assert effective.enabled_by == group_id
    assert effective.provenance["complaint_decision_days"] == bj_id
    assert effective.provenance["complaint_callback_days"] == group_id
    assert effective.provenance["mandatory_complaint_callback"] == "default"


def test_most_specific_unit_decides_enablement(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "enable")
    assert not host.for_unit(world.id, world.units["bj"].path).is_enabled("agency_policy")
    _switch(database, world, registry, "agency_policy", "company", True)
    _switch(database, world, registry, "agency_policy", "sh", False)
    assert host.for_unit(world.id, world.units["bj"].path).is_enabled("agency_policy")
    assert not host.for_unit(world.id, world.units["sh"].path).is_enabled("agency_policy")
    assert not host.for_unit(world.id, world.units["group"].path).is_enabled("agency_policy")
    _switch(database, world, registry, "agency_policy", "sh", None)  # inherit again
    assert host.for_unit(world.id, world.units["sh"].path).is_enabled("agency_policy")


def test_statutory_baseline_is_always_on_and_service_rules_on_by_default(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "defaults")
    tp = host.for_unit(world.id, world.units["bj"].path)
    assert tp.enabled[:2] == ("statutory_cn", "service_rules_cn")
    with pytest.raises(Problem) as exc:
        _switch(database, world, registry, "statutory_cn", "group", False)
    assert exc.value.status == 409 and exc.value.slug == "plugin-always-on"
    _switch(database, world, registry, "service_rules_cn", "bj", False)
    assert not host.for_unit(world.id, world.units["bj"].path).is_enabled("service_rules_cn")
    assert host.for_unit(world.id, world.units["sh"].path).is_enabled("service_rules_cn")


def test_invalid_setting_is_rejected_with_its_json_path_and_nothing_is_saved(
    database: Database, registry: PluginRegistry
) -> None:
    world = make_tenant(database, "invalid")
    with pytest.raises(Problem) as exc:
        _set(
            database,
            world,
            registry,
            "branch_policy",
            "bj",
            {
                "visit_quotas": [{"kind": "periodic", "population": "customers", "share": 1.5}],
            },
        )
    problem = exc.value
    assert problem.status == 422 and problem.slug == "invalid-settings"
    assert problem.extra["errors"] == [
        {
            "path": "$.visit_quotas[0].share",
            "reason": "1.5 is greater than the maximum of 1",
            "unit": "BJ",
        }
    ]
    assert "$.visit_quotas[0].share" in problem.detail
    with database.tenant_session(world.id) as s:
        mine = PluginSetting.plugin == "branch_policy"
        assert s.scalars(select(PluginSetting).where(mine)).all() == []
        assert (
            s.scalars(
                select(PluginSettingVersion).where(PluginSettingVersion.plugin == "branch_policy")
            ).all()
            == []
        )


def test_a_parent_change_that_breaks_a_childs_settings_is_refused(
    database: Database, registry: PluginRegistry
) -> None:
    world = make_tenant(database, "subtree")
    _set(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {"working_hours": {"open": "09:00", "close": "17:00"}},
    )
    with pytest.raises(Problem) as exc:
        _set(database, world, registry, "branch_policy", "company", {"unknown_key": 1})
    assert {e["unit"] for e in exc.value.extra["errors"]} == {"CO", "BJ"}


def test_every_change_is_a_version_and_rollback_restores_an_earlier_one(
    database: Database, registry: PluginRegistry, host: PluginHost
) -> None:
    world = make_tenant(database, "versions")
    path = world.units["group"].path
    _switch(database, world, registry, "agency_policy", "group", True)
    _set(database, world, registry, "agency_policy", "group", {"complaint_decision_days": 12})
    first = host.for_unit(world.id, path).settings["agency_policy"]["complaint_decision_days"]
    row = _set(
        database,
        world,
        registry,
        "agency_policy",
        "group",
        {"complaint_decision_days": 8},
        reason="faster",
        expected_version=2,
    )
    assert row.version == 3
    # visible on the next call, no restart, no manual invalidation
    assert host.for_unit(world.id, path).settings["agency_policy"]["complaint_decision_days"] == 8
    assert first == 12

    with database.tenant_session(world.id) as s:
        versions = services.history(s, plugin="agency_policy", unit_id=world.units["group"].id)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.action for v in versions] == ["set", "set", "enable"]
    assert versions[0].changes == [{"path": "$.complaint_decision_days", "old": 12, "new": 8}]
    assert versions[0].changed_by == "person:admin" and versions[0].reason == "faster"

    with database.tenant_transaction(world.id) as s:
        unit = get_unit(s, world.units["group"].id)
        restored = services.rollback(
            s, registry, plugin="agency_policy", unit=unit, to_version=2, actor=ADMIN
        )
    assert restored.version == 4 and restored.settings == {"complaint_decision_days": 12}
    assert host.for_unit(world.id, path).settings["agency_policy"]["complaint_decision_days"] == 12
    with database.tenant_session(world.id) as s:
        latest = services.history(s, plugin="agency_policy", unit_id=unit.id, limit=1)[0]
    assert (latest.action, latest.restored_version) == ("rollback", 2)

    with pytest.raises(Problem) as exc:  # a stale If-Match
        _set(database, world, registry, "agency_policy", "group", {}, expected_version=3)
    assert exc.value.status == 412


def test_an_unchanged_setting_makes_no_version(
    database: Database, registry: PluginRegistry
) -> None:
    world = make_tenant(database, "same")
    _set(database, world, registry, "branch_policy", "bj", {"escalation_contacts": ["a@b.cn"]})
    again = _set(
        database, world, registry, "branch_policy", "bj", {"escalation_contacts": ["a@b.cn"]}
    )
    assert again.version == 1


def test_secrets_are_masked_in_history(database: Database, registry: PluginRegistry) -> None:
    world = make_tenant(database, "secret")
    _set(
        database,
        world,
        registry,
        "webhook",
        "group",
        {
            "url": "https://hooks.example.com/in",
            "secret": "whsec_" + "A" * 32,
        },
    )
    with database.tenant_session(world.id) as s:
        version = services.history(s, plugin="webhook", unit_id=world.units["group"].id)[0]
    secret_change = next(c for c in version.changes if c["path"] == "$.secret")
    assert secret_change["new"] == services.SECRET_MASK
    assert services.mask(registry.get("webhook"), version.settings)["secret"] == "********"


def test_another_tenant_cannot_read_or_change_the_settings(
    database: Database, registry: PluginRegistry, world: TenantWorld, other: TenantWorld
) -> None:
    _set(database, world, registry, "branch_policy", "bj", {"escalation_contacts": ["x@y.cn"]})
    with database.tenant_session(other.id) as s:
        assert {r.tenant_id for r in services.list_settings(s)} <= {other.id}
        assert services.list_settings(s, unit_ids=list(u.id for u in world.units.values())) == []
        assert services.get_setting(s, plugin="branch_policy", unit_id=world.units["bj"].id) is None
        if database.is_postgres:  # RLS stops raw SQL too
            raw = s.execute(
                text("SELECT count(*) FROM plugin_settings WHERE tenant_id = :t"), {"t": world.id}
            ).scalar()
            assert raw == 0
    # another tenant's unit does not exist for this tenant: nothing to change
    with pytest.raises(Problem) as exc, database.tenant_transaction(other.id) as s:
        get_unit(s, world.units["bj"].id)
    assert exc.value.status == 404
    with database.tenant_session(world.id) as s:
        assert len(services.list_settings(s, plugin="branch_policy")) == 1


def test_a_plugin_installed_but_not_enabled_for_a_tenant_is_never_called(
    database: Database, make_host: Callable[..., PluginHost]
) -> None:
    spy = Spy()
    registry = registry_with(spy=spy)
    host = make_host(registry)
    a, b = make_tenant(database, "spy-a"), make_tenant(database, "spy-b")
    _switch(database, b, registry, "spy", "group", True)
    _set(database, b, registry, "spy", "bj", {"label": "b-bj"})

    from core.plugins.flows import deadline_rules
    from tests.plugins.conftest import complaint

    for key in ("group", "company", "bj", "sh"):
        deadline_rules(host.for_unit(a.id, a.units[key].path), complaint(a, key), "received")
    assert spy.calls == []
    assert "spy" not in host.for_unit(a.id, a.units["bj"].path).enabled

    deadline_rules(host.for_unit(b.id, b.units["bj"].path), complaint(b, "bj"), "received")
    assert [dict(s) for _, s in spy.calls] == [{"label": "b-bj"}]  # its own settings only


def test_a_settings_change_is_an_outbox_event_in_the_same_transaction(
    database: Database, registry: PluginRegistry
) -> None:
    import json

    from core.outbox.models import OutboxEvent

    world = make_tenant(database, "emit")

    def events() -> list[dict[str, object]]:
        with database.tenant_session(world.id) as s:
            return [
                e.payload
                for e in s.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.event_type == services.SETTINGS_CHANGED_EVENT)
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                )
            ]

    before = len(events())
    _set(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {"working_hours": {"open": "08:30", "close": "17:30"}},
    )
    after = events()
    assert len(after) == before + 1
    change = after[-1]
    assert change["plugin"] == "branch_policy" and change["unit"] == "BJ"
    assert change["unit_id"] == str(world.units["bj"].id) and change["change"] == "set"
    assert change["changed"] == ["$.working_hours"]
    assert "08:30" not in json.dumps(change)  # which keys changed, never their values

    with pytest.raises(RuntimeError), database.tenant_transaction(world.id) as s:
        services.set_settings(
            s,
            registry,
            plugin="branch_policy",
            unit=get_unit(s, world.units["sh"].id),
            settings={"working_hours": {"open": "09:00", "close": "18:00"}},
            actor=ADMIN,
        )
        raise RuntimeError("the request fails after the change")
    assert len(events()) == before + 1  # rolled back with the change: nothing to send

    _set(
        database,
        world,
        registry,
        "branch_policy",
        "bj",
        {"working_hours": {"open": "08:30", "close": "17:30"}},
    )
    assert len(events()) == before + 1  # nothing changed: no event
