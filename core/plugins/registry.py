"""The registry of installed plugins: built once per process by the app factory, never global.

It holds the pluggy plugin manager with the built-in plugins (the modules of the ``plugins``
package) and every package that declares an ``insurdesk.plugins`` entry point, checked with
``check_pending()`` so a misspelled hook implementation fails at start-up. For each plugin it
keeps its description, its settings schema (and a compiled validator) and, for every hook it
implements, a hook caller that reaches that plugin only: the core calls plugins one at a time,
each with its own settings (see :mod:`core.hookspecs`).

``INSURDESK_TRACE_PLUGINS=1`` logs every hook call (pluggy's hook-call monitoring).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

import pluggy
import structlog
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from core import hookspecs
from core.plugins.freeze import freeze
from core.plugins.types import PluginInfo

BUILTIN_PACKAGE = "plugins"
"""The package whose modules are the built-in plugins (found by name: the core never imports
``plugins`` statically)."""

ALWAYS_ON: tuple[str, ...] = ("statutory_cn",)
"""Plugins enabled for every tenant at every unit; they cannot be disabled. Only they may
return statutory deadline rules."""

ON_BY_DEFAULT: tuple[str, ...] = ("service_rules_cn",)
"""Plugins enabled for a tenant unless a tenant admin disables them (no row needed)."""

EMPTY_SCHEMA: Mapping[str, Any] = MappingProxyType(
    {"type": "object", "properties": {}, "additionalProperties": False}
)

TRACE_ENV = "INSURDESK_TRACE_PLUGINS"


class PluginLoadError(RuntimeError):
    """An installed plugin cannot be used: the message names it and says why."""


@dataclass(frozen=True)
class InstalledPlugin:
    """One installed plugin, as the registry knows it."""

    name: str
    plugin: object
    info: PluginInfo
    schema: Mapping[str, Any]
    validator: Draft202012Validator
    defaults: Mapping[str, Any]
    hooks: frozenset[str]
    builtin: bool
    distribution: str | None
    always_on: bool
    on_by_default: bool
    secret_keys: frozenset[str] = field(default=frozenset())

    @property
    def version(self) -> str:
        """The plugin's version (its distribution's, for a third-party package)."""
        return self.info.version


class PluginRegistry:
    """The installed plugins of this process, and per-plugin hook callers.

    Build it with :func:`build_registry`. ``order`` is the calling order: always-on plugins,
    then plugins on by default, then the others by name.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        plugins: Mapping[str, InstalledPlugin],
        undo_trace: Any = None,
    ) -> None:
        self.pm = pm
        self.plugins: Mapping[str, InstalledPlugin] = MappingProxyType(dict(plugins))
        self.order: tuple[str, ...] = tuple(plugins)
        self._undo_trace = undo_trace
        objects = [p.plugin for p in plugins.values()]
        self._callers: dict[str, dict[str, Any]] = {}
        for name in hookspecs.HOOK_NAMES:
            by_plugin: dict[str, Any] = {}
            for installed in plugins.values():
                if name in installed.hooks:
                    others = [o for o in objects if o is not installed.plugin]
                    by_plugin[installed.name] = pm.subset_hook_caller(name, others)
            self._callers[name] = by_plugin

    def __contains__(self, name: object) -> bool:
        return name in self.plugins

    def get(self, name: str) -> InstalledPlugin:
        """The installed plugin ``name``; raises ``KeyError`` when there is none."""
        return self.plugins[name]

    def caller(self, hook: str, plugin: str) -> Any:
        """The hook caller of ``hook`` that reaches ``plugin`` only, or None if it has no impl."""
        return self._callers[hook].get(plugin)

    def implementers(self, hook: str) -> frozenset[str]:
        """Names of the installed plugins that implement ``hook``."""
        return frozenset(self._callers[hook])

    def close(self) -> None:
        """Stop tracing hook calls (when it was on)."""
        if self._undo_trace is not None:
            self._undo_trace()
            self._undo_trace = None


def _builtin_modules(package: str) -> list[tuple[str, ModuleType]]:
    pkg = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        found.append((info.name, importlib.import_module(f"{package}.{info.name}")))
    return found


def _trace(pm: pluggy.PluginManager) -> Any:
    trace_log = structlog.get_logger("insurdesk.plugins.trace")
    starts: dict[int, float] = {}

    def before(hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
        starts[id(kwargs)] = time.perf_counter()
        trace_log.info(
            "plugin_hook_call",
            hook=hook_name,
            plugins=[impl.plugin_name for impl in hook_impls],
            arguments=sorted(kwargs),
        )

    def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
        elapsed = time.perf_counter() - starts.pop(id(kwargs), time.perf_counter())
        exc = outcome.exception
        trace_log.info(
            "plugin_hook_result",
            hook=hook_name,
            plugins=[impl.plugin_name for impl in hook_impls],
            ms=round(elapsed * 1000, 3),
            error=repr(exc) if exc is not None else None,
            result=None if exc is not None else repr(outcome.get_result())[:500],
        )

    return pm.add_hookcall_monitoring(before, after)


def _describe(
    pm: pluggy.PluginManager,
    name: str,
    plugin: object,
    *,
    builtin: bool,
    distribution: str | None,
    always_on: bool,
    on_by_default: bool,
) -> InstalledPlugin:
    others = [p for p in pm.get_plugins() if p is not plugin]
    impls = {
        caller.name
        for caller in (pm.get_hookcallers(plugin) or [])
        if caller.name.startswith("insurdesk_")
    }
    if "insurdesk_plugin_info" not in impls:
        raise PluginLoadError(f"plugin {name!r} does not implement insurdesk_plugin_info")
    try:
        info = pm.subset_hook_caller("insurdesk_plugin_info", others)()
    except Exception as exc:
        raise PluginLoadError(f"plugin {name!r}: insurdesk_plugin_info raised {exc!r}") from exc
    if not isinstance(info, PluginInfo):
        raise PluginLoadError(
            f"plugin {name!r}: insurdesk_plugin_info returned {type(info).__name__}, "
            "not a PluginInfo"
        )
    schema: Mapping[str, Any] = EMPTY_SCHEMA
    if "insurdesk_plugin_config_schema" in impls:
        try:
            declared = pm.subset_hook_caller("insurdesk_plugin_config_schema", others)()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {name!r}: insurdesk_plugin_config_schema raised {exc!r}"
            ) from exc
        if declared is not None:
            schema = declared
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise PluginLoadError(f"plugin {name!r}: the settings schema must describe an object")
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise PluginLoadError(f"plugin {name!r}: invalid settings schema: {exc.message}") from exc
    properties = schema.get("properties", {}) or {}
    defaults = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    secrets = frozenset(key for key, prop in properties.items() if prop.get("writeOnly"))
    if distribution and not builtin:
        version = distribution.rpartition("==")[2] or info.version
        if version != info.version:
            info = PluginInfo(**{**info.__dict__, "version": version})
    return InstalledPlugin(
        name=name,
        plugin=plugin,
        info=info,
        schema=freeze(dict(schema)),
        validator=Draft202012Validator(
            dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
        ),
        defaults=freeze(defaults),
        hooks=frozenset(impls),
        builtin=builtin,
        distribution=distribution,
        always_on=always_on,
        on_by_default=on_by_default,
        secret_keys=secrets,
    )


def build_registry(
    *,
    builtin_package: str | None = BUILTIN_PACKAGE,
    entry_points: bool = True,
    extra: Iterable[tuple[str, object]] = (),
    always_on: Iterable[str] = ALWAYS_ON,
    on_by_default: Iterable[str] = ON_BY_DEFAULT,
    trace: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> PluginRegistry:
    """Install the plugins of this process and check them.

    :param builtin_package: the package of built-in plugins (one module each); None: none.
    :param entry_points: also load the ``insurdesk.plugins`` entry points of installed packages.
    :param extra: ``(name, plugin object)`` pairs to install as well (tests, embedding).
    :param always_on: names of plugins that are always enabled and may not be disabled.
    :param on_by_default: names of plugins enabled unless a tenant disables them.
    :param trace: log every hook call; None reads ``INSURDESK_TRACE_PLUGINS`` from ``environ``.
    :raises PluginLoadError: naming the plugin, when a plugin is unusable.
    :raises pluggy.PluginValidationError: when a hook implementation matches no specification.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    builtin_names: set[str] = set()
    if builtin_package:
        for name, module in _builtin_modules(builtin_package):
            pm.register(module, name=name)
            builtin_names.add(name)
    for name, plugin in extra:
        if pm.has_plugin(name):
            raise PluginLoadError(f"two plugins are named {name!r}")
        pm.register(plugin, name=name)
        builtin_names.add(name)
    distributions: dict[str, str] = {}
    if entry_points:
        before = set(pm.get_plugins())
        pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
        for plugin, dist in pm.list_plugin_distinfo():
            if plugin not in before:
                plugin_name = pm.get_name(plugin)
                if plugin_name is not None:
                    distributions[plugin_name] = f"{dist.project_name}=={dist.version}"
    pm.check_pending()

    always = tuple(always_on)
    defaults_on = tuple(n for n in on_by_default if n not in always)
    names = [name for name, _ in pm.list_name_plugin() if name is not None]
    missing = [n for n in always if n not in names]
    if missing:
        raise PluginLoadError(f"always-on plugin(s) not installed: {', '.join(missing)}")
    rest = sorted(n for n in names if n not in always and n not in defaults_on)
    order = [*always, *(n for n in defaults_on if n in names), *rest]

    installed: dict[str, InstalledPlugin] = {}
    for name in order:
        plugin = pm.get_plugin(name)
        installed[name] = _describe(
            pm,
            name,
            plugin,
            builtin=name in builtin_names,
            distribution=distributions.get(name),
            always_on=name in always,
            on_by_default=name in defaults_on,
        )
    env = os.environ if environ is None else environ
    if trace is None:
        trace = env.get(TRACE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    undo = _trace(pm) if trace else None
    return PluginRegistry(pm, installed, undo)
