"""The plugin host of one process: the registry plus a per-tenant cache of resolved plugins.

A request asks ``host.for_unit(tenant_id, unit_path)`` and gets the plugins enabled at that
unit with their settings. Once a tenant is cached this is two dictionary look-ups: no database
round trip while nothing changed. How the cache learns about changes:

* **in this process**: the services mark the session when they change a tenant's
  configuration; when that session commits, the host drops the tenant's entry (so the very next
  request reads the change);
* **in other processes, PostgreSQL**: the change runs ``pg_notify('insurdesk_plugin_config',
  '<tenant>:<revision>')`` in its transaction (delivered only if it commits); every host keeps a
  ``LISTEN`` connection in a background thread and drops the tenant's entry on notice. While
  that connection is down (and right after it reconnects) the host does not trust its cache: it
  compares the tenant's revision with one primary-key read per request until it listens again;
* **in other processes, SQLite** (the embedded default is one process, but the CLI may change
  settings next to a running server): an entry older than ``recheck_seconds`` (1 s) is checked
  against the tenant's revision row, a one-row read of a local file.

A load that races with a change is never stored: each tenant has a generation number that an
invalidation bumps, and a load stores its result only if the generation did not move.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from core.cache_notify import NotifiedTenantCache
from core.db import Database
from core.plugins.models import PluginConfigRevision
from core.plugins.registry import PluginRegistry
from core.plugins.resolution import TenantConfig, TenantPlugins, load_tenant_config, resolve

log = structlog.get_logger("insurdesk.plugins")

NOTIFY_CHANNEL = "insurdesk_plugin_config"
CHANGED_KEY = "insurdesk.plugins.changed"
"""``session.info`` key: the tenants whose plugin configuration the session changed."""

SQLITE_RECHECK_SECONDS = 1.0


class _Entry:
    __slots__ = ("checked_at", "config", "units")

    def __init__(self, config: TenantConfig) -> None:
        self.config = config
        self.units: dict[str, TenantPlugins] = {}
        self.checked_at = time.monotonic()


class PluginHost(NotifiedTenantCache[_Entry]):
    """Installed plugins and the per-tenant cache of their resolution, for one process.

    The entries, their generations and the ``LISTEN`` thread are
    :class:`core.cache_notify.NotifiedTenantCache`'s.

    :param registry: the installed plugins.
    :param db: the database the configuration lives in.
    :param listen: keep a PostgreSQL ``LISTEN`` connection (default: on PostgreSQL).
    :param recheck_seconds: how old a cached tenant may get before its revision is compared
        (default: 1 s on SQLite; never on PostgreSQL while listening).
    """

    def __init__(
        self,
        registry: PluginRegistry,
        db: Database,
        *,
        listen: bool | None = None,
        recheck_seconds: float | None = None,
    ) -> None:
        super().__init__(
            db,
            NOTIFY_CHANNEL,
            listen=db.is_postgres if listen is None else listen,
            label="plugin_config",
        )
        self.registry = registry
        if recheck_seconds is None and not db.is_postgres:
            recheck_seconds = SQLITE_RECHECK_SECONDS
        self._recheck = recheck_seconds
        self.stats.update({"loads": 0, "rechecks": 0})
        event.listen(Session, "after_commit", self._after_commit)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, wait: float = 5.0) -> PluginHost:
        """Start the PostgreSQL listener thread (no-op on SQLite); wait until it listens."""
        log.info(
            "plugins_installed",
            plugins=[f"{p.name}=={p.version}" for p in self.registry.plugins.values()],
        )
        return super().start(wait)

    def close(self) -> None:
        """Stop listening, detach from session events and close the registry (its tracing)."""
        self.stop_listening()
        if event.contains(Session, "after_commit", self._after_commit):
            event.remove(Session, "after_commit", self._after_commit)
        self.registry.close()

    # -- the per-request path -----------------------------------------------------------------

    def for_unit(self, tenant_id: uuid.UUID, unit_path: str) -> TenantPlugins:
        """The plugins enabled at the unit with ``unit_path``, with their settings (cached)."""
        entry = self._entry(tenant_id)
        resolved = entry.units.get(unit_path)
        if resolved is None:
            resolved = resolve(self.registry, entry.config, unit_path)
            entry.units[unit_path] = resolved
        return resolved

    def config(self, tenant_id: uuid.UUID) -> TenantConfig:
        """The tenant's configuration snapshot in force (cached like :meth:`for_unit`)."""
        return self._entry(tenant_id).config

    def _recheck_after(self) -> float | None:
        if self._listen and not self._listening:
            return 0.0
        return self._recheck

    def _entry(self, tenant_id: uuid.UUID) -> _Entry:
        entry = self._entries.get(tenant_id)
        if entry is not None:
            after = self._recheck_after()
            if after is None:
                return entry
            now = time.monotonic()
            if now - entry.checked_at < after:
                return entry
            self.stats["rechecks"] += 1
            if self._read_revision(tenant_id) == entry.config.revision:
                entry.checked_at = now
                return entry
        return self._load(tenant_id)

    def _read_revision(self, tenant_id: uuid.UUID) -> int:
        with self.db.tenant_session(tenant_id) as session:
            return session.scalar(select(PluginConfigRevision.revision)) or 0

    def _load(self, tenant_id: uuid.UUID) -> _Entry:
        generation = self.generation(tenant_id)
        with self.db.tenant_session(tenant_id) as session:
            config = load_tenant_config(session, tenant_id)
        self.stats["loads"] += 1
        entry = _Entry(config)
        self.store(tenant_id, generation, entry)
        return entry

    # -- invalidation ---------------------------------------------------------------------------

    def _after_commit(self, session: Session) -> None:
        changed = session.info.get(CHANGED_KEY)
        if not changed or session.bind not in (self.db.engine, self.db.admin_engine):
            return
        for tenant_id in list(changed):
            self.invalidate(tenant_id)

    def _on_notify(self, payload: str) -> None:
        tenant_id = self._notice_tenant(payload)
        if tenant_id is None:
            return
        revision = payload.partition(":")[2]
        entry = self._entries.get(tenant_id)
        if entry is not None and revision.isdigit() and int(revision) <= entry.config.revision:
            return
        self.invalidate(tenant_id)

    def __exit__(self, *exc: Any) -> None:
        self.close()
