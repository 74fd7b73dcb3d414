"""Per-tenant plugin enablement and settings, by organization unit, versioned.

* :class:`PluginSetting` — the current state of one plugin at one unit: ``enabled`` (True,
  False, or None = inherit from the units above) and the unit's own ``settings`` (only the
  keys set at this unit; the effective settings merge them along the unit's ancestors).
* :class:`PluginSettingVersion` — every change, append-only: who, when, what changed (a diff),
  and the full state after it. A rollback is a new version equal to an old one.
* :class:`PluginConfigRevision` — one row per tenant whose ``revision`` is bumped in the same
  transaction as any change; caches compare it, and the bump serializes concurrent changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk, utcnow


class PluginSetting(TenantScoped, Timestamped, Base):
    """The current enablement and own settings of one plugin at one organization unit."""

    __tablename__ = "plugin_settings"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        tenant_fk("updated_by_id", "people"),
        UniqueConstraint("tenant_id", "plugin", "unit_id"),
    )

    plugin: Mapped[str] = mapped_column(String(100))
    unit_id: Mapped[uuid.UUID]
    enabled: Mapped[bool | None] = mapped_column(default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(default=1)
    updated_by_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class PluginSettingVersion(TenantScoped, Base):
    """One change of a plugin's enablement or settings at a unit (append-only history)."""

    __tablename__ = "plugin_setting_versions"
    __table_args__ = (
        tenant_fk("unit_id", "org_units"),
        tenant_fk("changed_by_id", "people"),
        UniqueConstraint("tenant_id", "plugin", "unit_id", "version"),
        Index("ix_plugin_setting_versions_changed", "tenant_id", "changed_at"),
    )

    plugin: Mapped[str] = mapped_column(String(100))
    unit_id: Mapped[uuid.UUID]
    version: Mapped[int]
    action: Mapped[str] = mapped_column(String(20))
    """``enable``, ``disable``, ``inherit``, ``set``, ``rollback`` or ``apply`` (manifest)."""
    enabled: Mapped[bool | None] = mapped_column(default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """What changed from the previous version: ``[{"path": "$.x", "old": .., "new": ..}]``."""
    changed_by_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    changed_by: Mapped[str] = mapped_column(String(200))
    """Who: ``person:<username>``, ``client:<client id>``, ``manifest:<name>``, ``cli``."""
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    restored_version: Mapped[int | None] = mapped_column(default=None)
    """For a rollback: the version whose state it restored."""


class PluginConfigRevision(TenantScoped, Base):
    """The tenant's plugin-configuration revision, bumped by every change."""

    __tablename__ = "plugin_config_revisions"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    revision: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
