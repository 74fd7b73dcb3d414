"""HTTP API of the plugin framework.

* ``GET /api/v1/plugins`` — installed plugins with their metadata and settings schemas;
  ``GET /api/v1/plugins/{name}``; ``POST /api/v1/plugins/preview`` — what the plugins enabled
  at a unit would decide for a hypothetical case (nothing is stored).
* ``/api/v1/plugin-settings`` — per unit: read, ``PUT`` settings (``If-Match`` optional),
  ``enable`` / ``disable`` / ``inherit``, ``history``, ``rollback``; and ``effective`` settings
  at a unit with the provenance of every value.

Reading needs ``plugins:read`` at the unit, changing ``plugins:admin`` (tenant admins have
both). A unit of another tenant, or outside the caller's units, is a 404 like a missing one.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, Parameter
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.problems import Problem
from core.auth.guards import Access
from core.auth.principal import Principal
from core.hookspecs import TRIGGERS
from core.orgs.models import OrgUnit
from core.orgs.services import ancestors, get_unit
from core.plugins import services
from core.plugins.flows import compute_deadlines, plan_case_opening, unit_calendar
from core.plugins.freeze import thaw
from core.plugins.host import PluginHost
from core.plugins.models import PluginSetting, PluginSettingVersion
from core.plugins.registry import InstalledPlugin
from core.plugins.resolution import ALWAYS_ON, DEFAULT, effective_plugins
from core.plugins.schemas import (
    ChangeIn,
    ClockOut,
    EffectiveOut,
    EffectivePluginOut,
    FollowUpOut,
    HistoryOut,
    PluginOut,
    PreviewIn,
    PreviewOut,
    RollbackIn,
    RuleOut,
    SettingOut,
    SettingsIn,
    SourceOut,
    Texts,
    VersionOut,
)
from core.plugins.types import CaseFacts, CustomerFacts, PolicyFacts, UnitFacts

READ = "plugins:read"
ADMIN = "plugins:admin"


def plugin_out(installed: InstalledPlugin) -> PluginOut:
    """The API view of an installed plugin."""
    info = installed.info
    return PluginOut(
        name=installed.name,
        version=installed.version,
        kind=info.kind,
        title=Texts(zh=info.title_zh, en=info.title_en),
        description=Texts(zh=info.description_zh, en=info.description_en),
        builtin=installed.builtin,
        always_on=installed.always_on,
        on_by_default=installed.on_by_default,
        hooks=sorted(installed.hooks),
        citations=list(info.citations),
        config_schema=thaw(installed.schema),
        distribution=installed.distribution,
    )


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header asks for (None: no precondition)."""
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if tag == "*":
        return None
    if not tag.isdigit():
        raise Problem(
            412, f"If-Match {value!r} is not a version this API issued", slug="precondition-failed"
        )
    return int(tag)


def _setting_out(
    registry_plugin: InstalledPlugin | None, unit: OrgUnit, row: PluginSetting
) -> SettingOut:
    return SettingOut(
        plugin=row.plugin,
        unit_id=unit.id,
        unit_code=unit.code,
        enabled=row.enabled,
        settings=services.mask(registry_plugin, row.settings or {}),
        version=row.version,
        updated_at=row.updated_at,
    )


def _version_out(installed: InstalledPlugin | None, v: PluginSettingVersion) -> VersionOut:
    return VersionOut(
        version=v.version,
        action=v.action,
        enabled=v.enabled,
        settings=services.mask(installed, v.settings or {}),
        changes=list(v.changes or []),
        changed_by=v.changed_by,
        changed_at=v.changed_at,
        reason=v.reason,
        restored_version=v.restored_version,
    )


def _unit(session: Session, access: Access, unit_id: uuid.UUID, permission: str) -> OrgUnit:
    unit = get_unit(session, unit_id)
    access.require(permission, unit, hide=permission == READ)
    return unit


class PluginsController(Controller):
    """Installed plugins."""

    path = "/api/v1/plugins"
    tags = ["plugins"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listPlugins", summary="Installed plugins", sync_to_thread=False)
    def list_plugins(
        self, access: NamedDependency[Access], plugins: NamedDependency[PluginHost]
    ) -> list[PluginOut]:
        """Every plugin installed in this deployment, with its settings schema."""
        access.require_anywhere(READ)
        return [plugin_out(p) for p in plugins.registry.plugins.values()]

    @get(
        "/{name:str}",
        operation_id="getPlugin",
        summary="One installed plugin",
        sync_to_thread=False,
    )
    def get_plugin(
        self,
        name: FromPath[str],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
    ) -> PluginOut:
        """One installed plugin."""
        access.require_anywhere(READ)
        return plugin_out(services.installed_plugin(plugins.registry, name))

    @post(
        "/preview",
        operation_id="previewPlugins",
        status_code=200,
        summary="What the plugins enabled at a unit decide for a hypothetical case",
    )
    @uses_database
    def preview(
        self,
        data: JSONBody[PreviewIn],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
    ) -> PreviewOut:
        """Deadlines (with the statute as outer bound and the warnings) and follow-ups that the
        plugins enabled at ``unit_id`` give a case like this one. Nothing is stored."""
        unit = _unit(session, access, data.unit_id, READ)
        if data.received_at.tzinfo is None:
            raise Problem(422, "received_at needs a time zone offset", slug="invalid-request")
        if data.trigger not in TRIGGERS:
            raise Problem(
                422,
                f"unknown trigger {data.trigger!r}; one of: {', '.join(TRIGGERS)}",
                slug="invalid-request",
            )
        unit_facts = UnitFacts(id=unit.id, code=unit.code, kind=str(unit.kind), path=unit.path)
        case = CaseFacts(
            case_type=data.case_type,
            channel=data.channel,
            unit=unit_facts,
            received_at=data.received_at,
            customer=CustomerFacts(**_fields(data.customer)) if data.customer else CustomerFacts(),
            policy=PolicyFacts(**_fields(data.policy)) if data.policy else None,
            service_kind=data.service_kind,
            complexity=frozenset(data.complexity),
        )
        tp = plugins.for_unit(request.user.tenant_id, unit.path)
        base = services.tenant_calendar(session)
        if data.trigger == "received":
            plan = plan_case_opening(tp, case, base)
            deadlines, follow_ups = plan.deadlines, plan.follow_ups
        else:
            deadlines = compute_deadlines(
                tp, case, unit_calendar(tp, unit_facts, base), trigger=data.trigger
            )
            follow_ups = []
        return PreviewOut(
            unit_code=unit.code,
            revision=tp.revision,
            plugins=list(tp.enabled),
            clocks=[
                ClockOut(
                    clock=c.clock,
                    due=c.due,
                    last_day=c.last_day,
                    provisional=c.provisional,
                    rule=_rule_out(c.rule),
                    candidates=[_rule_out(x.rule) for x in c.candidates if x.rule is not c.rule],
                )
                for c in deadlines.clocks
            ],
            warnings=deadlines.messages,
            follow_ups=[
                FollowUpOut(
                    kind=f.kind,
                    due=f.due,
                    recipients=list(f.recipients),
                    sources=list(f.sources),
                    notes=list(f.notes),
                )
                for f in follow_ups
            ],
        )


def _fields(struct: Any) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


def _rule_out(rule: Any) -> RuleOut:
    return RuleOut(
        clock=rule.clock,
        amount=rule.amount,
        unit=rule.unit,
        citation=rule.citation,
        source=rule.source,
        statutory=rule.statutory,
        description=rule.description,
    )


UnitPath = "/{plugin:str}/{unit_id:uuid}"
IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False)]


class PluginSettingsController(Controller):
    """Per-tenant plugin enablement and settings by organization unit."""

    path = "/api/v1/plugin-settings"
    tags = ["plugins"]
    dependencies = API_DEPENDENCIES

    @get(
        "/",
        operation_id="listPluginSettings",
        summary="Plugin states set at units the caller may read",
    )
    @uses_database
    def list_settings(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        plugin: FromQuery[str | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
    ) -> list[SettingOut]:
        """The states set at units (each unit's own, not merged), filtered by plugin or unit."""
        access.require_anywhere(READ)
        if unit_id is not None:
            _unit(session, access, unit_id, READ)
        rows = services.list_settings(
            session,
            plugin=plugin,
            unit_ids=[unit_id] if unit_id else None,
            visible=access.unit_clause(READ, PluginSetting.unit_id),
        )
        units = services.units_by_id(session, {r.unit_id for r in rows})
        return [
            _setting_out(plugins.registry.plugins.get(r.plugin), units[r.unit_id], r) for r in rows
        ]

    @get(
        "/effective",
        operation_id="effectivePluginSettings",
        summary="Effective plugins and settings at a unit, with provenance",
    )
    @uses_database
    def effective(
        self,
        unit_id: FromQuery[uuid.UUID],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
    ) -> EffectiveOut:
        """Every installed plugin at the unit: enabled or not (and which unit decided), its
        settings merged along the unit's ancestors, and which unit each value comes from."""
        unit = _unit(session, access, unit_id, READ)
        codes = {str(u.id): u.code for u in [*ancestors(session, unit), unit]}

        def source(value: str | None) -> SourceOut:
            if value is None:
                return SourceOut(source="none")
            if value in (DEFAULT, ALWAYS_ON):
                return SourceOut(source=value)  # type: ignore[arg-type]
            return SourceOut(source="unit", unit_id=uuid.UUID(value), unit_code=codes.get(value))

        config = plugins.config(request.user.tenant_id)
        return EffectiveOut(
            unit_id=unit.id,
            unit_code=unit.code,
            revision=config.revision,
            plugins=[
                EffectivePluginOut(
                    plugin=e.name,
                    enabled=e.enabled,
                    enabled_by=source(e.enabled_by),
                    settings=services.mask(plugins.registry.plugins[e.name], e.settings),
                    provenance={k: source(v) for k, v in e.provenance.items()},
                )
                for e in effective_plugins(plugins.registry, config, unit.path)
            ],
        )

    @get(
        UnitPath,
        operation_id="getPluginSetting",
        summary="A plugin's own state at a unit",
    )
    @uses_database
    def get_setting(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
    ) -> Response[SettingOut]:
        """The unit's own state (version 0 when nothing was set there); ``ETag`` = version."""
        unit = _unit(session, access, unit_id, READ)
        installed = services.installed_plugin(plugins.registry, plugin)
        row = services.get_setting(session, plugin=plugin, unit_id=unit.id) or PluginSetting(
            plugin=plugin, unit_id=unit.id, enabled=None, settings={}, version=0
        )
        return Response(_setting_out(installed, unit, row), headers=_etag(row.version))

    @put(
        UnitPath,
        operation_id="setPluginSettings",
        summary="Set a plugin's settings at a unit",
    )
    @uses_database
    def set_settings(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        data: JSONBody[SettingsIn],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        if_match: IfMatch = None,
    ) -> Response[SettingOut]:
        """Replace the unit's own settings (validated against the plugin's schema: 422 with the
        JSON path of each error, nothing saved). ``If-Match: "<version>"`` guards against
        overwriting a change you have not seen (412)."""
        unit = _unit(session, access, unit_id, ADMIN)
        row = services.set_settings(
            session,
            plugins.registry,
            plugin=plugin,
            unit=unit,
            settings=data.settings,
            actor=services.Actor.from_principal(request.user, session),
            reason=data.reason,
            expected_version=_if_match(if_match),
        )
        session.commit()
        out = _setting_out(plugins.registry.get(plugin), unit, row)
        return Response(out, headers=_etag(row.version))

    def _switch(
        self,
        action: str,
        plugin: str,
        unit_id: uuid.UUID,
        data: ChangeIn | None,
        request: Request[Principal, Any, Any],
        session: Session,
        access: Access,
        plugins: PluginHost,
        if_match: str | None,
    ) -> Response[SettingOut]:
        unit = _unit(session, access, unit_id, ADMIN)
        change = {
            "enable": services.enable_plugin,
            "disable": services.disable_plugin,
            "inherit": services.inherit_enablement,
        }[action]
        row = change(
            session,
            plugins.registry,
            plugin=plugin,
            unit=unit,
            actor=services.Actor.from_principal(request.user, session),
            reason=data.reason if data else None,
            expected_version=_if_match(if_match),
        )
        session.commit()
        out = _setting_out(plugins.registry.get(plugin), unit, row)
        return Response(out, headers=_etag(row.version), status_code=200)

    @post(
        UnitPath + "/enable",
        operation_id="enablePlugin",
        status_code=200,
        summary="Enable a plugin at a unit and below",
    )
    @uses_database
    def enable(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        data: JSONBody[ChangeIn | None] = None,
        if_match: IfMatch = None,
    ) -> Response[SettingOut]:
        """Enable the plugin at the unit (its effective settings must be valid: 422 if not)."""
        return self._switch(
            "enable", plugin, unit_id, data, request, session, access, plugins, if_match
        )

    @post(
        UnitPath + "/disable",
        operation_id="disablePlugin",
        status_code=200,
        summary="Disable a plugin at a unit and below",
    )
    @uses_database
    def disable(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        data: JSONBody[ChangeIn | None] = None,
        if_match: IfMatch = None,
    ) -> Response[SettingOut]:
        """Disable the plugin at the unit; the statutory baseline cannot be disabled (409)."""
        return self._switch(
            "disable", plugin, unit_id, data, request, session, access, plugins, if_match
        )

    @post(
        UnitPath + "/inherit",
        operation_id="inheritPluginEnablement",
        status_code=200,
        summary="Let a unit inherit enablement from above again",
    )
    @uses_database
    def inherit(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        data: JSONBody[ChangeIn | None] = None,
        if_match: IfMatch = None,
    ) -> Response[SettingOut]:
        """Forget the unit's own enabled/disabled choice (its settings are kept)."""
        return self._switch(
            "inherit", plugin, unit_id, data, request, session, access, plugins, if_match
        )

    @get(
        UnitPath + "/history",
        operation_id="pluginSettingHistory",
        summary="Versions of a plugin's state at a unit",
    )
    @uses_database
    def history(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        before: Annotated[int | None, Parameter(ge=1)] = None,
        limit: Annotated[int, Parameter(ge=1, le=services.MAX_HISTORY_PAGE)] = 50,
    ) -> HistoryOut:
        """Newest first: who changed what and when (secrets masked)."""
        unit = _unit(session, access, unit_id, READ)
        installed = plugins.registry.plugins.get(plugin)
        versions = services.history(
            session, plugin=plugin, unit_id=unit.id, before=before, limit=limit + 1
        )
        more = len(versions) > limit
        versions = versions[:limit]
        return HistoryOut(
            plugin=plugin,
            unit_id=unit.id,
            items=[_version_out(installed, v) for v in versions],
            next_cursor=versions[-1].version if more and versions else None,
        )

    @post(
        UnitPath + "/rollback",
        operation_id="rollbackPluginSetting",
        status_code=200,
        summary="Restore an earlier version (as a new version)",
    )
    @uses_database
    def rollback(
        self,
        plugin: FromPath[str],
        unit_id: FromPath[uuid.UUID],
        data: JSONBody[RollbackIn],
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        plugins: NamedDependency[PluginHost],
        if_match: IfMatch = None,
    ) -> Response[SettingOut]:
        """Make the unit's state equal to version ``to_version`` again (404 if unknown)."""
        unit = _unit(session, access, unit_id, ADMIN)
        row = services.rollback(
            session,
            plugins.registry,
            plugin=plugin,
            unit=unit,
            to_version=data.to_version,
            actor=services.Actor.from_principal(request.user, session),
            reason=data.reason,
            expected_version=_if_match(if_match),
        )
        session.commit()
        out = _setting_out(plugins.registry.get(plugin), unit, row)
        return Response(out, headers=_etag(row.version))


ROUTES = [PluginsController, PluginSettingsController]
