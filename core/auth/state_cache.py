"""The token-state cache of one process (docs/decisions/0011-auth-state-cache.md).

Authenticating an ``/api/`` request reads the token's live state: is its ``jti`` revoked, are
its client (and person) active, the client's units, the person's username and roles
(:func:`core.auth.tokens.token_state`). :class:`AuthStateCache` keeps what an accepted token's
read gave (its :class:`~core.auth.principal.Principal` and
:class:`~core.auth.guards.Access`), keyed by everything of the token they were built from, so
the next request with the same token needs no database work to authenticate.

A change of any table that read depends on (:data:`WATCHED_TABLES`) drops the cached entries
of its tenant:

* **in every process**: the triggers of migration 0007 run
  ``pg_notify('insurdesk_auth_state', <tenant id>)`` for every row written, whoever writes it
  (the API, the CLI, a worker, ``psql``); the notice is delivered when the transaction commits,
  and each process's cache listens for it (:class:`core.cache_notify.NotifiedTenantCache`);
* **in this process, before the commit's answer is sent**: every statement that writes one of
  those tables marks its connection; when that connection commits, the live caches drop the
  tenant of the session it served (every tenant, if it served none), just before the COMMIT
  and once more when the connection goes back to its pool. So the request after "revoke" is
  refused without waiting for the notice.

Bounds: an entry is used for at most ``max_age`` seconds (``INSURDESK_AUTH_CACHE_SECONDS``,
60; 0 turns the cache off), and at most ``max_entries`` are kept (then the expired ones are
dropped, or, if none expired, all of them).

Nothing is served from the cache unless its ``LISTEN`` connection is up; every entry is dropped
when it (re)connects. SQLite has no cache (the CLI may change people next to a running server
and nothing would tell it): every request reads the state as before.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from core.auth.guards import Access
from core.auth.models import OAuthClient, RevokedToken
from core.auth.principal import Principal
from core.cache_notify import Generation, NotifiedTenantCache
from core.db import TENANT_KEY, Database
from core.orgs.models import OrgUnit
from core.people.models import Person, Role, RoleAssignment

NOTIFY_CHANNEL = "insurdesk_auth_state"
"""The channel of migration 0007's triggers; the payload is the tenant's id."""

WATCHED_TABLES: tuple[str, ...] = tuple(
    str(model.__tablename__)
    for model in (RevokedToken, OAuthClient, Person, RoleAssignment, Role, OrgUnit)
)
"""The tables :func:`core.auth.tokens.token_state` (and, for a client, the unit paths of its
:class:`~core.auth.guards.Access`) read; migration 0007 puts its trigger on each."""

MAX_ENTRIES = 10_000
MAX_AGE_SECONDS = 60.0

CacheKey = tuple[str, str, str, str, str]
"""Within a tenant: the token's ``jti``, ``client_id``, ``sub``, ``kind`` and ``scope``."""


@dataclass(frozen=True, slots=True)
class CachedAuth:
    """What an accepted token's state read gave: its principal and the caller's access."""

    principal: Principal
    access: Access
    stored_at: float


def cache_key(claims: dict[str, Any]) -> tuple[uuid.UUID, CacheKey]:
    """The tenant and the key of a verified token's claims: every claim the principal and the
    access are built from."""
    return uuid.UUID(str(claims["tenant"])), (
        str(claims["jti"]),
        str(claims["client_id"]),
        str(claims["sub"]),
        str(claims["kind"]),
        str(claims.get("scope", "")),
    )


class AuthStateCache(NotifiedTenantCache[dict[CacheKey, CachedAuth]]):
    """Accepted tokens' principals and access, per tenant, for one process (see the module
    docstring). Start it (:meth:`start`) to listen; :meth:`close` when done.

    :param db: the database the tokens' state lives in.
    :param max_age: seconds an entry is used at most (0: no caching).
    :param max_entries: entries kept at most.
    :param listen: keep the ``LISTEN`` connection (default: on PostgreSQL). Without it nothing
        is ever cached.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_age: float = MAX_AGE_SECONDS,
        max_entries: int = MAX_ENTRIES,
        listen: bool | None = None,
    ) -> None:
        enabled = db.is_postgres and max_age > 0 and (listen is None or listen)
        super().__init__(db, NOTIFY_CHANNEL, listen=enabled, label="auth_state")
        self.max_age = max_age
        self.max_entries = max_entries
        self._count = 0
        self.stats.update({"hits": 0, "misses": 0, "stored": 0})

    def start(self, wait: float = 5.0) -> AuthStateCache:
        """Listen (PostgreSQL) and take part in this process's commit-time invalidation."""
        if self._listen:
            install_commit_invalidation()
            _live_caches.add(self)
        return super().start(wait)

    def close(self) -> None:
        """Stop listening; nothing is served from the cache afterwards."""
        _live_caches.discard(self)
        self.stop_listening()
        self.invalidate()

    @property
    def active(self) -> bool:
        """Whether entries may be stored and served now (PostgreSQL, listening)."""
        return self._listening

    def get(self, claims: dict[str, Any]) -> CachedAuth | None:
        """The cached authentication of a verified token's ``claims``, if it may be used."""
        if not self._listening:
            return None
        tenant_id, key = cache_key(claims)
        found = self._entries.get(tenant_id, {}).get(key)
        if found is None or time.monotonic() - found.stored_at >= self.max_age:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return found

    def put(
        self, claims: dict[str, Any], generation: Generation, principal: Principal, access: Access
    ) -> bool:
        """Keep an accepted token's ``principal`` and ``access``, read after ``generation``
        was noted (:meth:`generation`), unless its tenant was invalidated since or the cache is
        not listening; True if kept."""
        if not self._listening:
            return False
        tenant_id, key = cache_key(claims)
        entry = CachedAuth(principal, access, time.monotonic())
        with self._lock:
            if self.generation(tenant_id) != generation or not self._listening:
                return False
            if self._count >= self.max_entries:
                self._evict()
            bucket = self._entries.setdefault(tenant_id, {})
            if key not in bucket:
                self._count += 1
            bucket[key] = entry
            self.stats["stored"] += 1
            return True

    def _evict(self) -> None:
        """Under the lock: drop the expired entries, or every entry if none had expired."""
        oldest = time.monotonic() - self.max_age
        for tenant_id, bucket in list(self._entries.items()):
            for key in [k for k, e in bucket.items() if e.stored_at <= oldest]:
                del bucket[key]
            if not bucket:
                del self._entries[tenant_id]
        self._count = sum(len(b) for b in self._entries.values())
        if self._count >= self.max_entries:
            self._entries.clear()
            self._count = 0

    def _dropped(self, tenant_id: uuid.UUID | None) -> None:
        self._count = sum(len(b) for b in self._entries.values())

    def __len__(self) -> int:
        return self._count

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- invalidation of the changes committed by this process ---------------------------------------

_live_caches: weakref.WeakSet[AuthStateCache] = weakref.WeakSet()

_WRITES = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?(?:\"?\w+\"?\.)?\"?(?:"
    + "|".join(WATCHED_TABLES)
    + r")\b",
    re.IGNORECASE,
)
_seen_statements: dict[str, bool] = {}
_SEEN_MAX = 4096

_DIRTY = "insurdesk.auth_state.dirty"
"""``Connection.info`` key: its transaction wrote a watched table."""
_SERVES = "insurdesk.auth_state.tenant"
"""``Connection.info`` key: the tenant of the session whose transaction it carries (None: a
platform session, or no session)."""
_COMMITTED = "insurdesk.auth_state.committed"
"""``Connection.info`` key: it committed a write to a watched table for this tenant (a set)."""
_EVERY_TENANT = "*"


def writes_watched_table(statement: str) -> bool:
    """Whether SQL ``statement`` inserts into, updates or deletes from a watched table."""
    seen = _seen_statements.get(statement)
    if seen is None:
        seen = _WRITES.search(statement) is not None
        if len(_seen_statements) >= _SEEN_MAX:
            _seen_statements.clear()
        _seen_statements[statement] = seen
    return seen


def _invalidate_everywhere(tenants: set[Any]) -> None:
    for cache in list(_live_caches):
        if _EVERY_TENANT in tenants:
            cache.invalidate()
        else:
            for tenant_id in tenants:
                cache.invalidate(tenant_id)


def _note_tenant(session: Session, _transaction: Any, connection: Connection) -> None:
    connection.info[_SERVES] = session.info.get(TENANT_KEY)


def _mark_write(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
    if writes_watched_table(statement):
        tenant_id = conn.info.get(_SERVES)
        conn.info.setdefault(_DIRTY, set()).add(_EVERY_TENANT if tenant_id is None else tenant_id)


def _before_commit(conn: Connection) -> None:
    tenants = conn.info.pop(_DIRTY, None)
    if tenants:
        _invalidate_everywhere(tenants)  # a load racing with the commit is dropped at checkin
        conn.info.setdefault(_COMMITTED, set()).update(tenants)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_DIRTY, None)


def _after_checkin(_dbapi_conn: Any, record: Any) -> None:
    info = record.info
    info.pop(_SERVES, None)
    # still dirty: written without a transaction of SQLAlchemy's (autocommit), or rolled back
    # on return; dropping the entries again costs only a read
    tenants = info.pop(_COMMITTED, set()) | info.pop(_DIRTY, set())
    if tenants:
        _invalidate_everywhere(tenants)


_installed = threading.Lock()
_listeners_on = False


def install_commit_invalidation() -> None:
    """Listen, once per process, to every engine's statements and commits (see the module
    docstring)."""
    global _listeners_on
    with _installed:
        if _listeners_on:
            return
        event.listen(Session, "after_begin", _note_tenant)
        event.listen(Engine, "before_cursor_execute", _mark_write)
        event.listen(Engine, "commit", _before_commit)
        event.listen(Engine, "rollback", _on_rollback)
        event.listen(Pool, "checkin", _after_checkin)
        _listeners_on = True
