"""Hand-offs from manifests to the services that own the data: plugin settings and API clients.

One function per manifest section, called by :mod:`tenants.apply` inside the manifest's
transaction, so a refusal rolls the whole manifest back. A refusal of one entry raises
:class:`SectionError` with the path of the entry; apply turns it into a ``ManifestError``
naming the file and line.

- plugins → :func:`core.plugins.services.apply_config` (tenant session: it bumps the tenant's
  configuration revision and validates against the plugin's schema; versioned and audited).
- clients → :func:`core.auth.services.create_client` / ``update_client`` (platform session,
  explicit tenant).

When the plugin registry cannot be built (a broken third-party plugin), the plugins section
is validated by :mod:`tenants.schema` only and the report says it was not stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.auth import services as auth
from core.auth.models import OAuthClient
from core.db import TENANT_KEY
from core.orgs.models import OrgUnit
from core.plugins import services
from core.plugins.registry import PluginLoadError, PluginRegistry, build_registry

if TYPE_CHECKING:
    from tenants.manifests import ClientSpec, PluginSpec
    from tenants.schema import Path

Outcome = tuple[list[str], list[str], list[str]]
"""(changes, kept, notes) of a section."""


class SectionError(Exception):
    """An entry of a manifest section was refused by its owning service."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def plugin_registry() -> tuple[PluginRegistry | None, str | None]:
    """The process's plugin registry, or ``(None, why not)``."""
    try:
        return build_registry(), None
    except PluginLoadError as exc:
        return None, f"the plugin registry cannot be built: {exc}"


def apply_plugin_settings(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    specs: Sequence[PluginSpec],
    unit_ids: Mapping[str, uuid.UUID],
    actor: str,
    source: str,
    registry: Any | None = None,
) -> Outcome:
    """Make each plugin's enablement and settings at its unit exactly what the manifest says.

    Runs in a tenant session on the platform session's connection (same transaction). Plugin
    settings set at other units (through the API) are kept and reported.

    :param registry: a ``PluginRegistry``; None builds one (and reports when it cannot).
    :raises SectionError: an unknown plugin, or settings its schema refuses.
    """
    if not specs:
        return [], [], []
    why: str | None = None
    if registry is None:
        registry, why = plugin_registry()
    if registry is None:
        return [], [], [f"note: {len(specs)} plugin setting(s) validated but not stored: {why}"]
    for i, spec in enumerate(specs):
        if spec.plugin not in registry:
            installed = ", ".join(sorted(registry.plugins)) or "none"
            raise SectionError(
                ("plugins", i, "plugin"),
                f"no plugin named {spec.plugin!r} is installed ({installed})",
            )
    actor_obj = services.Actor(f"manifest:{actor}")
    changes: list[str] = []
    with Session(bind=session.connection(), info={TENANT_KEY: tenant_id}) as tenant_session:
        for i, spec in enumerate(specs):
            unit = tenant_session.get(OrgUnit, (tenant_id, unit_ids[spec.unit]))
            assert unit is not None  # written earlier in this transaction
            current = services.get_setting(tenant_session, plugin=spec.plugin, unit_id=unit.id)
            if (
                current is not None
                and current.enabled == spec.enabled
                and dict(current.settings or {}) == spec.settings
            ):
                continue  # unchanged: not even a configuration-revision bump
            try:
                state, changed = services.apply_config(
                    tenant_session,
                    registry,
                    plugin=spec.plugin,
                    unit=unit,
                    enabled=spec.enabled,
                    settings=spec.settings,
                    actor=actor_obj,
                    reason=f"tenant manifest {source}",
                )
            except Problem as exc:
                raise SectionError(("plugins", i, "settings"), exc.detail) from exc
            if changed:
                what = "enabled" if spec.enabled else "disabled"
                changes.append(
                    f"plugin {spec.plugin} at {spec.unit}: {what}, settings "
                    f"stored (version {state.version})"
                )
        listed = {(s.plugin, unit_ids[s.unit]) for s in specs}
        code_of = {v: k for k, v in unit_ids.items()}
        kept = [
            f"plugin {row.plugin} at {code_of.get(row.unit_id, row.unit_id)} not in manifest, kept"
            for row in services.list_settings(tenant_session)
            if (row.plugin, row.unit_id) not in listed
        ]
    return changes, kept, []


def apply_clients(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    slug: str,
    specs: Sequence[ClientSpec],
    unit_ids: Mapping[str, uuid.UUID],
    dry_run: bool,
) -> Outcome:
    """Register each API client (id ``<slug>.<key>``), or bring an existing one up to date.

    A secret is set only when the client is registered: from the manifest (demo manifests), or
    generated and shown once in the report. Clients not in the manifest are kept and reported.

    :raises SectionError: the OAuth service refused an entry.
    """
    changes: list[str] = []
    notes: list[str] = []
    for i, spec in enumerate(specs):
        client_id = f"{slug}.{spec.key}"
        units = [unit_ids[code] for code in spec.units]
        try:
            if auth.find_client(session, client_id, tenant_id=tenant_id) is None:
                flow: dict[str, Any] = {}
                if spec.public:
                    flow = {
                        "auth_method": "none",
                        "redirect_uris": spec.redirect_uris,
                        "grant_types": ("authorization_code", "refresh_token"),
                    }
                _client, plain = auth.create_client(
                    session,
                    name=spec.name,
                    scopes=spec.scopes,
                    unit_ids=units,
                    secret=spec.secret,
                    client_id=client_id,
                    tenant_id=tenant_id,
                    **flow,
                )
                changes.append(f"client {client_id} registered")
                if spec.secret is None and plain and not dry_run:
                    notes.append(f"client {client_id}: its secret, shown once: {plain}")
            elif auth.update_client(
                session,
                client_id,
                name=spec.name,
                scopes=spec.scopes,
                unit_ids=units,
                tenant_id=tenant_id,
            ):
                changes.append(f"client {client_id} updated")
        except Problem as exc:
            raise SectionError(("clients", i), exc.detail) from exc
    listed = {f"{slug}.{s.key}" for s in specs}
    others = session.scalars(
        select(OAuthClient.client_id).where(OAuthClient.tenant_id == tenant_id)
    ).all()
    kept = [f"client {c} not in manifest, kept" for c in sorted(others) if c not in listed]
    return changes, kept, notes
