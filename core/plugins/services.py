"""Plugin enablement and settings per organization unit: validated, versioned, audited.

Keyword-only functions over a tenant session; the caller commits. Every change:

1. bumps the tenant's :class:`PluginConfigRevision` first (its row lock serializes concurrent
   changes of one tenant's plugin configuration);
2. validates the settings against the plugin's JSON Schema, at the unit and at every unit
   below it that has settings of its own (a bad value: 422 naming the JSON path, nothing
   saved);
3. writes the new current state and a :class:`PluginSettingVersion` (who, when, the diff);
4. tells caches: ``pg_notify`` in the same transaction on PostgreSQL, and a mark on the session
   that the host turns into an in-process invalidation when the session commits.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, event, select, text, update
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.audit import AuditActor, record
from core.audit.services import ActorKind
from core.auth.principal import Principal
from core.calendars import services as calendars
from core.db import TENANT_KEY, utcnow
from core.deadlines import DEFAULT_TZ, TenantCalendar
from core.orgs.models import OrgUnit
from core.outbox.services import emit
from core.people.models import Person
from core.plugins.freeze import thaw
from core.plugins.host import CHANGED_KEY, NOTIFY_CHANNEL
from core.plugins.models import PluginConfigRevision, PluginSetting, PluginSettingVersion
from core.plugins.registry import InstalledPlugin, PluginRegistry
from core.plugins.resolution import unit_ids_of
from core.tenancy.models import Tenant

SECRET_MASK = "********"
SETTINGS_CHANGED_EVENT = "plugin.settings_changed"
"""The outbox event of a settings change (payload: plugin, unit, which keys; never values)."""


class _Keep(enum.Enum):
    KEEP = 0


MAX_HISTORY_PAGE = 200


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a label for the history, and the person when there is one."""

    label: str
    person_id: uuid.UUID | None = None

    @classmethod
    def from_principal(cls, principal: Principal, session: Session | None = None) -> Actor:
        """The actor for an authenticated caller; with a session, a person is named by their
        username (the token's subject is their id)."""
        if principal.kind == "person":
            name = principal.subject
            if session is not None and principal.person_id is not None:
                person = session.get(Person, (principal.tenant_id, principal.person_id))
                name = person.username if person is not None else name
            return cls(f"person:{name}", principal.person_id)
        return cls(f"client:{principal.client_id or principal.subject}")


# -- reading ---------------------------------------------------------------------------------------


def installed_plugin(registry: PluginRegistry, name: str) -> InstalledPlugin:
    """The installed plugin ``name``, or a 404 problem."""
    try:
        return registry.get(name)
    except KeyError:
        raise Problem(
            404, f"no plugin named {name!r} is installed", slug="unknown-plugin", plugin=name
        ) from None


def get_setting(session: Session, *, plugin: str, unit_id: uuid.UUID) -> PluginSetting | None:
    """The current state of ``plugin`` at the unit, or None when nothing was ever set there."""
    return session.scalars(
        select(PluginSetting).where(
            PluginSetting.plugin == plugin, PluginSetting.unit_id == unit_id
        )
    ).one_or_none()


def list_settings(
    session: Session,
    *,
    plugin: str | None = None,
    unit_ids: Sequence[uuid.UUID] | None = None,
    visible: ColumnElement[bool] | None = None,
) -> list[PluginSetting]:
    """Current states, optionally of one plugin and/or some units, by plugin then unit.

    :param visible: a clause restricting the units (e.g. ``Access.unit_clause``).
    """
    stmt = select(PluginSetting)
    if visible is not None:
        stmt = stmt.where(visible)
    if plugin is not None:
        stmt = stmt.where(PluginSetting.plugin == plugin)
    if unit_ids is not None:
        stmt = stmt.where(PluginSetting.unit_id.in_(list(unit_ids)))
    return list(session.scalars(stmt.order_by(PluginSetting.plugin, PluginSetting.created_at)))


def history(
    session: Session,
    *,
    plugin: str,
    unit_id: uuid.UUID,
    before: int | None = None,
    limit: int = 50,
) -> list[PluginSettingVersion]:
    """Versions of ``plugin`` at the unit, newest first; ``before``: versions below it."""
    stmt = select(PluginSettingVersion).where(
        PluginSettingVersion.plugin == plugin, PluginSettingVersion.unit_id == unit_id
    )
    if before is not None:
        stmt = stmt.where(PluginSettingVersion.version < before)
    stmt = stmt.order_by(PluginSettingVersion.version.desc()).limit(
        max(1, min(limit, MAX_HISTORY_PAGE))
    )
    return list(session.scalars(stmt))


def units_by_id(session: Session, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, OrgUnit]:
    """The tenant's units with these ids (one query)."""
    wanted = list(ids)
    if not wanted:
        return {}
    return {u.id: u for u in session.scalars(select(OrgUnit).where(OrgUnit.id.in_(wanted)))}


def tenant_calendar(session: Session) -> TenantCalendar:
    """The tenant's base working-day calendar: the national schedules (those loaded on the
    platform first), in the tenant's time zone.

    Plugins' adjustments per unit are applied on top by :func:`core.plugins.flows.unit_calendar`.
    """
    tenant = session.get(Tenant, _tenant_of(session))
    return calendars.tenant_calendar(
        session, tenant.time_zone if tenant is not None else DEFAULT_TZ.key
    )


def get_version(
    session: Session, *, plugin: str, unit_id: uuid.UUID, version: int
) -> PluginSettingVersion:
    """One version of ``plugin`` at the unit, or a 404 problem."""
    found = session.scalars(
        select(PluginSettingVersion).where(
            PluginSettingVersion.plugin == plugin,
            PluginSettingVersion.unit_id == unit_id,
            PluginSettingVersion.version == version,
        )
    ).one_or_none()
    if found is None:
        raise not_found(f"version of plugin {plugin} at this unit", version)
    return found


def mask(installed: InstalledPlugin | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` with the plugin's secret (``writeOnly``) values masked."""
    plain = thaw(settings)
    if installed is None:  # not installed any more: its schema (and secrets) are unknown
        return dict.fromkeys(plain, SECRET_MASK)
    return {k: (SECRET_MASK if k in installed.secret_keys else v) for k, v in plain.items()}


# -- validation ------------------------------------------------------------------------------------


def _settings_errors(
    installed: InstalledPlugin, settings: Mapping[str, Any]
) -> list[dict[str, str]]:
    errors = sorted(
        installed.validator.iter_errors(thaw(settings)), key=lambda e: (e.json_path, e.message)
    )
    return [{"path": e.json_path, "reason": e.message} for e in errors]


def _validate_subtree(
    session: Session,
    installed: InstalledPlugin,
    unit: OrgUnit,
    own: Mapping[str, Any],
) -> None:
    """Validate the effective settings at ``unit`` (with ``own`` as its settings) and at every
    unit below it that has settings of its own; raise a 422 problem listing the errors."""
    rows = session.execute(
        select(OrgUnit.id, OrgUnit.path, OrgUnit.code, PluginSetting.settings)
        .join(PluginSetting, PluginSetting.unit_id == OrgUnit.id)
        .where(PluginSetting.plugin == installed.name)
    ).all()
    by_unit: dict[str, Mapping[str, Any]] = {str(r.id): r.settings or {} for r in rows}
    by_unit[str(unit.id)] = own
    targets = [(unit.path, unit.code)]
    targets += [(r.path, r.code) for r in rows if r.path.startswith(unit.path) and r.id != unit.id]
    errors: list[dict[str, str]] = []
    for path, code in targets:
        effective = dict(installed.defaults)
        for unit_id in unit_ids_of(path):
            effective.update(by_unit.get(unit_id, {}))
        for error in _settings_errors(installed, effective):
            errors.append({**error, "unit": code})
    if errors:
        first = errors[0]
        raise Problem(
            422,
            f"invalid settings for plugin {installed.name}: {first['path']}: {first['reason']}"
            + (f" (at unit {first['unit']})" if first["unit"] != unit.code else ""),
            slug="invalid-settings",
            title="Invalid plugin settings",
            plugin=installed.name,
            errors=errors,
        )


# -- changing ------------------------------------------------------------------------------------


def _tenant_of(session: Session) -> uuid.UUID:
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None:
        raise RuntimeError("plugin settings are changed through a tenant session only")
    return tenant_id


def ensure_revision_row(session: Session, tenant_id: uuid.UUID) -> bool:
    """Create the tenant's revision row (revision 0) if missing; True when created.

    Done at provisioning so that two first-ever changes cannot race to insert it.
    """
    exists = session.scalar(
        select(PluginConfigRevision.id).where(PluginConfigRevision.tenant_id == tenant_id)
    )
    if exists is not None:
        return False
    session.add(PluginConfigRevision(tenant_id=tenant_id, revision=0))
    session.flush()
    return True


def _bump_revision(session: Session, tenant_id: uuid.UUID) -> int:
    bumped = session.execute(
        update(PluginConfigRevision)
        .values(revision=PluginConfigRevision.revision + 1, changed_at=utcnow())
        .returning(PluginConfigRevision.revision)
    ).scalar_one_or_none()
    if bumped is None:
        session.add(PluginConfigRevision(revision=1))
        session.flush()
        bumped = 1
    return int(bumped)


def _announce(session: Session, tenant_id: uuid.UUID, revision: int) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{tenant_id}:{revision}"},
        )
    session.info.setdefault(CHANGED_KEY, set()).add(tenant_id)


@event.listens_for(Session, "after_begin")
def _forget_marks(session: Session, _tx: Any, _conn: Any) -> None:
    # A new transaction starts: changes marked in an earlier one were committed or rolled back.
    session.info.pop(CHANGED_KEY, None)


def _diff(
    installed: InstalledPlugin,
    old_enabled: bool | None,
    old: Mapping[str, Any],
    new_enabled: bool | None,
    new: Mapping[str, Any],
) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    if old_enabled != new_enabled:
        changes.append({"path": "enabled", "old": old_enabled, "new": new_enabled})
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, None), new.get(key, None)
        if (key in old) != (key in new) or before != after:
            secret = key in installed.secret_keys
            changes.append(
                {
                    "path": f"$.{key}",
                    "old": SECRET_MASK if secret and key in old else before,
                    "new": SECRET_MASK if secret and key in new else after,
                    **({"removed": True} if key not in new else {}),
                }
            )
    return changes


def _change(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    actor: Actor,
    action: str,
    enabled: bool | _Keep | None = _Keep.KEEP,
    settings: Mapping[str, Any] | None = None,
    reason: str | None = None,
    expected_version: int | None = None,
    restored_version: int | None = None,
    validate: bool = True,
) -> tuple[PluginSetting, bool]:
    """Apply one change; returns the current state and whether anything changed."""
    installed = installed_plugin(registry, plugin)
    tenant_id = _tenant_of(session)
    if not unit.active:
        raise Problem(422, f"unit {unit.code} is deactivated", slug="inactive-unit")
    if installed.always_on and enabled is False:
        raise Problem(
            409,
            f"plugin {plugin} is the statutory baseline: it is always on and cannot be disabled",
            slug="plugin-always-on",
            plugin=plugin,
        )
    revision = _bump_revision(session, tenant_id)
    current = get_setting(session, plugin=plugin, unit_id=unit.id)
    current_version = current.version if current is not None else 0
    if expected_version is not None and expected_version != current_version:
        raise Problem(
            412,
            f"plugin {plugin} at unit {unit.code} is at version {current_version}, "
            f"not {expected_version}: reload and retry",
            slug="precondition-failed",
            current_version=current_version,
        )
    old_enabled = current.enabled if current is not None else None
    old_settings: Mapping[str, Any] = (current.settings or {}) if current is not None else {}
    if settings is not None and not isinstance(settings, Mapping):
        raise Problem(
            422,
            "settings must be a JSON object",
            slug="invalid-settings",
            title="Invalid plugin settings",
            plugin=plugin,
            errors=[{"path": "$", "reason": "must be an object", "unit": unit.code}],
        )
    new_enabled = old_enabled if isinstance(enabled, _Keep) else enabled
    new_settings = dict(old_settings if settings is None else settings)
    if validate:
        _validate_subtree(session, installed, unit, new_settings)
    changes = _diff(installed, old_enabled, old_settings, new_enabled, new_settings)
    if not changes and action != "rollback":
        # Nothing differs: no version. (The revision bump only makes caches reload once.)
        if current is None:
            current = PluginSetting(
                plugin=plugin, unit_id=unit.id, enabled=None, settings={}, version=0
            )
        return current, False
    version = current_version + 1
    if current is None:
        current = PluginSetting(plugin=plugin, unit_id=unit.id)
        session.add(current)
    current.enabled = new_enabled
    current.settings = dict(new_settings)
    current.version = version
    current.updated_by_id = actor.person_id
    session.add(
        PluginSettingVersion(
            plugin=plugin,
            unit_id=unit.id,
            version=version,
            action=action,
            enabled=new_enabled,
            settings=dict(new_settings),
            changes=changes,
            changed_by_id=actor.person_id,
            changed_by=actor.label,
            reason=reason,
            restored_version=restored_version,
        )
    )
    session.flush()
    _announce(session, tenant_id, revision)
    _audit_change(session, tenant_id, actor, plugin, unit, action, version, new_enabled, changes)
    # The side effect goes through the outbox in this transaction: rolled back with the change.
    emit(
        session,
        SETTINGS_CHANGED_EVENT,
        {
            "plugin": plugin,
            "unit_id": str(unit.id),
            "unit": unit.code,
            "change": action,
            "version": version,
            "enabled": new_enabled,
            "changed": [c["path"] for c in changes],
        },
        tenant_id=tenant_id,
    )
    return current, True


def _audit_change(
    session: Session,
    tenant_id: uuid.UUID,
    actor: Actor,
    plugin: str,
    unit: OrgUnit,
    action: str,
    version: int,
    enabled: bool | None,
    changes: list[dict[str, Any]],
) -> None:
    """The tenant audit entry of a settings change: which keys changed, never their values."""
    kinds: dict[str, ActorKind] = {"person": "person", "client": "client", "system": "system"}
    kind = kinds.get(actor.label.partition(":")[0], "platform")
    record(
        session,
        action="plugin.settings_changed",
        actor=AuditActor(kind, actor.label, actor.person_id),
        target=("plugin_setting", f"{plugin}@{unit.id}"),
        details={
            "plugin": plugin,
            "unit": unit.code,
            "change": action,
            "version": version,
            "enabled": enabled,
            "changed": [c["path"] for c in changes],
        },
        tenant_id=tenant_id,
    )


def enable_plugin(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    actor: Actor,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PluginSetting:
    """Enable ``plugin`` at ``unit`` and below (unless a lower unit disables it).

    The effective settings must be valid (a plugin with required settings needs them first).
    """
    setting, _ = _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="enable",
        enabled=True,
        reason=reason,
        expected_version=expected_version,
    )
    return setting


def disable_plugin(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    actor: Actor,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PluginSetting:
    """Disable ``plugin`` at ``unit`` and below (unless a lower unit enables it); its settings
    are kept. The always-on statutory plugin cannot be disabled (409)."""
    setting, _ = _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="disable",
        enabled=False,
        reason=reason,
        expected_version=expected_version,
        validate=False,
    )
    return setting


def inherit_enablement(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    actor: Actor,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PluginSetting:
    """Let ``unit`` inherit enablement from the units above it again."""
    setting, _ = _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="inherit",
        enabled=None,
        reason=reason,
        expected_version=expected_version,
        validate=False,
    )
    return setting


def set_settings(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    settings: Mapping[str, Any],
    actor: Actor,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PluginSetting:
    """Replace the unit's own settings of ``plugin`` (the keys it overrides; a key left out is
    inherited again). Validated against the plugin's schema; a new version when it changes."""
    setting, _ = _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="set",
        settings=settings,
        reason=reason,
        expected_version=expected_version,
    )
    return setting


def rollback(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    to_version: int,
    actor: Actor,
    reason: str | None = None,
    expected_version: int | None = None,
) -> PluginSetting:
    """Restore the state of version ``to_version``, as a new version (history is never lost).

    Validated like a change: a version the current schema no longer accepts is refused (422).
    """
    old = get_version(session, plugin=plugin, unit_id=unit.id, version=to_version)
    setting, _ = _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="rollback",
        enabled=old.enabled,
        settings=dict(old.settings or {}),
        reason=reason,
        expected_version=expected_version,
        restored_version=to_version,
        validate=True,
    )
    return setting


def apply_config(
    session: Session,
    registry: PluginRegistry,
    *,
    plugin: str,
    unit: OrgUnit,
    enabled: bool | None,
    settings: Mapping[str, Any],
    actor: Actor,
    reason: str | None = None,
) -> tuple[PluginSetting, bool]:
    """Make the unit's state exactly ``enabled`` + ``settings`` (tenant manifests); idempotent:
    no new version when nothing differs. Returns the state and whether it changed."""
    return _change(
        session,
        registry,
        plugin=plugin,
        unit=unit,
        actor=actor,
        action="apply",
        enabled=enabled,
        settings=settings,
        reason=reason,
        validate=enabled is not False,
    )
