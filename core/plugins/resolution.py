"""Which plugins are enabled at a unit, with which settings: pure functions over a snapshot.

A tenant's whole plugin configuration is small (a row per plugin and unit where something was
set), so it is loaded in one query into a :class:`TenantConfig` snapshot and everything else is
computed from it in memory. For a unit with materialized path ``/<root>/.../<unit>/`` the
rows of the units on that path are applied from the root down:

* enabled: the most specific unit that says enabled or disabled wins; with no row the plugin
  is enabled only if it is always on or on by default. Always-on plugins ignore rows.
* settings: the schema's defaults, then each unit's own keys, key by key (top-level keys), the
  most specific unit winning; ``provenance`` says where each value comes from (a unit id, or
  ``default``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.plugins.freeze import freeze
from core.plugins.models import PluginConfigRevision, PluginSetting
from core.plugins.registry import PluginRegistry

DEFAULT = "default"
ALWAYS_ON = "always_on"


@dataclass(frozen=True)
class UnitRow:
    """What one unit says about one plugin: enabled (None: inherit) and its own settings."""

    enabled: bool | None
    settings: Mapping[str, Any]
    version: int


@dataclass(frozen=True)
class TenantConfig:
    """A tenant's plugin configuration at one revision: ``rows[plugin][unit id as str]``."""

    tenant_id: uuid.UUID
    revision: int
    rows: Mapping[str, Mapping[str, UnitRow]]


@dataclass(frozen=True)
class EffectivePlugin:
    """One plugin at one unit: enabled or not, why, its settings and where each comes from.

    ``enabled_by`` is a unit id (str), ``default`` (on by default), ``always_on``, or None
    (nobody enabled it). ``provenance`` maps each settings key to a unit id or ``default``.
    """

    name: str
    enabled: bool
    enabled_by: str | None
    settings: Mapping[str, Any]
    provenance: Mapping[str, str]


def unit_ids_of(path: str) -> list[str]:
    """The unit ids (as strings) of a materialized path, from the root down."""
    return [p for p in path.split("/") if p]


def load_tenant_config(session: Session, tenant_id: uuid.UUID) -> TenantConfig:
    """Read a tenant's configuration snapshot (two small queries in one transaction)."""
    revision = session.scalar(select(PluginConfigRevision.revision)) or 0
    rows: dict[str, dict[str, UnitRow]] = {}
    result = session.execute(
        select(
            PluginSetting.plugin,
            PluginSetting.unit_id,
            PluginSetting.enabled,
            PluginSetting.settings,
            PluginSetting.version,
        )
    )
    for plugin, unit_id, enabled, settings, version in result:
        rows.setdefault(plugin, {})[str(unit_id)] = UnitRow(
            enabled, freeze(settings or {}), version
        )
    return TenantConfig(
        tenant_id=tenant_id,
        revision=revision,
        rows=MappingProxyType({k: MappingProxyType(v) for k, v in rows.items()}),
    )


_NO_ROWS: Mapping[str, UnitRow] = MappingProxyType({})


def effective_plugins(
    registry: PluginRegistry, config: TenantConfig, unit_path: str
) -> tuple[EffectivePlugin, ...]:
    """Every installed plugin's state at the unit with ``unit_path``, in calling order."""
    unit_ids = unit_ids_of(unit_path)
    out = []
    for name in registry.order:
        installed = registry.plugins[name]
        rows = config.rows.get(name, _NO_ROWS)
        enabled = installed.always_on or installed.on_by_default
        enabled_by: str | None = (
            ALWAYS_ON if installed.always_on else DEFAULT if installed.on_by_default else None
        )
        settings = dict(installed.defaults)
        provenance = dict.fromkeys(settings, DEFAULT)
        for unit_id in unit_ids:
            row = rows.get(unit_id)
            if row is None:
                continue
            if row.enabled is not None and not installed.always_on:
                enabled, enabled_by = row.enabled, unit_id
            for key, value in row.settings.items():
                settings[key] = value
                provenance[key] = unit_id
        out.append(
            EffectivePlugin(
                name=name,
                enabled=enabled,
                enabled_by=enabled_by,
                settings=MappingProxyType(settings),
                provenance=MappingProxyType(provenance),
            )
        )
    return tuple(out)


class TenantPlugins:
    """The plugins enabled at one unit of one tenant, ready to be called (cached per unit).

    ``calls(hook)`` gives, in calling order, ``(plugin name, hook caller, settings)`` for each
    enabled plugin implementing ``hook``: the caller reaches that one plugin only. Plugins
    installed but not enabled here are not in it, so they are never called for this unit.
    """

    __slots__ = (
        "_calls",
        "effective",
        "enabled",
        "memo",
        "registry",
        "revision",
        "settings",
        "tenant_id",
        "unit_path",
    )

    def __init__(
        self,
        registry: PluginRegistry,
        tenant_id: uuid.UUID,
        unit_path: str,
        revision: int,
        effective: tuple[EffectivePlugin, ...],
    ) -> None:
        self.registry = registry
        self.tenant_id = tenant_id
        self.unit_path = unit_path
        self.revision = revision
        self.effective = effective
        self.enabled: tuple[str, ...] = tuple(e.name for e in effective if e.enabled)
        self.settings: Mapping[str, Mapping[str, Any]] = MappingProxyType(
            {e.name: e.settings for e in effective if e.enabled}
        )
        self._calls: dict[str, tuple[tuple[str, Any, Mapping[str, Any]], ...]] = {}
        self.memo: dict[Any, Any] = {}
        """Values derived from this configuration (e.g. the unit's calendar), kept with it."""

    def __repr__(self) -> str:
        return (
            f"TenantPlugins(tenant={self.tenant_id}, unit={self.unit_path!r}, "
            f"revision={self.revision}, enabled={list(self.enabled)})"
        )

    def is_enabled(self, name: str) -> bool:
        """Whether plugin ``name`` is enabled here."""
        return name in self.settings

    def calls(self, hook: str) -> tuple[tuple[str, Any, Mapping[str, Any]], ...]:
        """``(plugin, caller, settings)`` for each enabled plugin implementing ``hook``."""
        found = self._calls.get(hook)
        if found is None:
            entries = []
            for name in self.enabled:
                caller = self.registry.caller(hook, name)
                if caller is not None:
                    entries.append((name, caller, self.settings[name]))
            found = tuple(entries)
            self._calls[hook] = found
        return found


def resolve(registry: PluginRegistry, config: TenantConfig, unit_path: str) -> TenantPlugins:
    """The :class:`TenantPlugins` of the unit with ``unit_path`` (no database access)."""
    effective = tuple(
        EffectivePlugin(e.name, e.enabled, e.enabled_by, freeze(e.settings), e.provenance)
        for e in effective_plugins(registry, config, unit_path)
    )
    return TenantPlugins(registry, config.tenant_id, unit_path, config.revision, effective)
