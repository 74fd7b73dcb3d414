"""Hand-offs from manifests to modules that own the data: plugin settings and API clients.

One function per manifest section, so wiring a section to its owning service is a one-function
change. Until the owning service exists, the section is validated (tenants.schema) and kept in
the parsed manifest, and the report says it was not stored.

Contracts expected from the owners (called inside the manifest's platform transaction):

- ``core.plugins.services.set_plugin_settings(session, *, tenant_id, unit_id, plugin,
  settings, enabled, actor) -> bool`` — validate ``settings`` against the plugin's schema
  (raise on invalid), store them versioned and audited, return True if anything changed.
- ``core.auth.services.create_client(...)`` — registers an OAuth client; manifests also need
  a way to find an existing client (by ``client_id`` or name) to stay idempotent.
"""

from __future__ import annotations

import importlib
import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from tenants.manifests import ClientSpec, PluginSpec

Outcome = tuple[list[str], list[str]]
"""(changes, notes) of a section."""


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return None
        raise
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


def apply_plugin_settings(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    specs: Sequence[PluginSpec],
    unit_ids: Mapping[str, uuid.UUID],
    actor: str,
) -> Outcome:
    """Store each plugin's settings at its unit through ``core.plugins`` (when available)."""
    if not specs:
        return [], []
    target = "core.plugins.services.set_plugin_settings"
    setter = _optional("core.plugins.services", "set_plugin_settings")
    if setter is None:
        return [], [
            f"note: {len(specs)} plugin setting(s) validated but not stored: {target} is not "
            "available yet"
        ]
    try:
        inspect.signature(setter).bind(
            session, tenant_id=tenant_id, unit_id=uuid.UUID(int=0), plugin="", settings={},
            enabled=True, actor=actor,
        )
    except TypeError:
        return [], [
            f"note: {len(specs)} plugin setting(s) not stored: {target} has another signature; "
            "wire tenants/integrations.py:apply_plugin_settings to it"
        ]
    changes = []
    for spec in specs:
        changed = setter(
            session, tenant_id=tenant_id, unit_id=unit_ids[spec.unit], plugin=spec.plugin,
            settings=spec.settings, enabled=spec.enabled, actor=actor,
        )
        if changed:
            state = "enabled" if spec.enabled else "disabled"
            changes.append(f"plugin {spec.plugin} at {spec.unit}: settings stored ({state})")
    return changes, []


def apply_clients(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    specs: Sequence[ClientSpec],
    unit_ids: Mapping[str, uuid.UUID],
) -> Outcome:
    """Register each API client through ``core.auth.services`` (when available)."""
    if not specs:
        return [], []
    if _optional("core.auth.services", "create_client") is None:
        why = "core.auth.services.create_client is not available yet"
    else:  # TODO: wire once its signature and a lookup for idempotency are settled
        why = "tenants/integrations.py:apply_clients is not wired to create_client yet"
    return [], [f"note: {len(specs)} API client(s) validated but not registered: {why}"]
