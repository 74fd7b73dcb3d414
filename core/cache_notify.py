"""Per-tenant caches of one process kept coherent by PostgreSQL ``LISTEN``/``NOTIFY``.

:class:`NotifiedTenantCache` is the machinery shared by the plugin host
(:mod:`core.plugins.host`) and the token-state cache (:mod:`core.auth.state_cache`):

* the entries, one value per tenant, and an invalidation that drops a tenant's value (or
  every value);
* a generation number per tenant and an epoch for all of them, which every invalidation moves:
  a load notes the generation before it reads and stores its result only if the generation did
  not move meanwhile (:meth:`NotifiedTenantCache.store`), so a load racing with a change is
  never kept;
* a background thread holding a PostgreSQL ``LISTEN`` connection on the cache's channel: each
  notice invalidates its tenant (the payload starts with the tenant's id). While that
  connection is down the cache is not to be trusted (:attr:`NotifiedTenantCache.listening` is
  False: what the subclass does then is its own choice); when it (re)connects every entry is
  dropped, since notices may have been missed meanwhile. libpq keepalives let a silently dead
  connection be noticed within about 15 seconds.

What to cache, and how a change made in this process is seen before its notice arrives, is the
subclass's.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Generic, Self, TypeVar

import structlog

from core.db import Database

log = structlog.get_logger("insurdesk.cache")

V = TypeVar("V")

Generation = tuple[int, int]
"""The epoch and a tenant's generation, as noted by a load before it reads."""

KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}
"""libpq keepalive settings of the listening connection: a peer that vanished without closing
the connection is noticed after about 5 + 3 × 3 seconds instead of the system's hours."""


class NotifiedTenantCache(Generic[V]):
    """Per-tenant entries invalidated on ``NOTIFY <channel>`` (see the module docstring).

    :param db: the database whose changes are listened to.
    :param channel: the ``NOTIFY`` channel; a payload is ``<tenant id>`` or
        ``<tenant id>:<anything>``.
    :param listen: keep a ``LISTEN`` connection (only possible on PostgreSQL).
    :param label: names the thread and the log events (``<label>_listening``,
        ``<label>_listener_down``, ``<label>_listener_not_ready``).
    """

    def __init__(self, db: Database, channel: str, *, listen: bool, label: str) -> None:
        self.db = db
        self.channel = channel
        self.label = label
        self._listen = listen
        self._entries: dict[uuid.UUID, V] = {}
        self._generations: dict[uuid.UUID, int] = {}
        self._epoch = 0
        self._lock = threading.Lock()
        self._listening = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats: dict[str, int] = {"invalidations": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, wait: float = 5.0) -> Self:
        """Start the listener thread (if this cache listens); wait up to ``wait`` seconds until
        it listens."""
        if self._listen and self._thread is None:
            self._stop.clear()
            self._ready.clear()
            self._thread = threading.Thread(
                target=self._listen_loop, name=f"insurdesk-{self.label}-listener", daemon=True
            )
            self._thread.start()
            if not self._ready.wait(wait):
                log.warning(f"{self.label}_listener_not_ready", waited_s=wait)
        return self

    def stop_listening(self) -> None:
        """Stop the listener thread and wait for it (the cache is then no longer trusted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def listening(self) -> bool:
        """Whether the ``LISTEN`` connection is up (always False when this cache does not
        listen)."""
        return self._listening

    # -- entries -------------------------------------------------------------------------------

    def generation(self, tenant_id: uuid.UUID) -> Generation:
        """What a load notes before it reads, to hand to :meth:`store` with its result."""
        return self._epoch, self._generations.get(tenant_id, 0)

    def store(self, tenant_id: uuid.UUID, generation: Generation, value: V) -> bool:
        """Keep ``value`` as the tenant's entry unless the tenant was invalidated since
        ``generation`` was noted; True if kept."""
        with self._lock:
            if self.generation(tenant_id) != generation:
                return False
            self._entries[tenant_id] = value
            return True

    def invalidate(self, tenant_id: uuid.UUID | None = None) -> None:
        """Forget a tenant's entry (None: every tenant's) and move its generation."""
        with self._lock:
            self.stats["invalidations"] += 1
            if tenant_id is None:
                self._epoch += 1
                self._entries.clear()
            else:
                self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1
                self._entries.pop(tenant_id, None)
            self._dropped(tenant_id)

    def _dropped(self, tenant_id: uuid.UUID | None) -> None:
        """Called under the lock after an invalidation (for a subclass's bookkeeping)."""

    # -- notices ---------------------------------------------------------------------------------

    def _on_notify(self, payload: str) -> None:
        """Invalidate the tenant a notice names (a subclass may look at the rest)."""
        tenant_id = self._notice_tenant(payload)
        if tenant_id is not None:
            self.invalidate(tenant_id)

    def _notice_tenant(self, payload: str) -> uuid.UUID | None:
        try:
            return uuid.UUID(payload.partition(":")[0])
        except ValueError:
            log.warning(f"{self.label}_notice_unreadable", payload=payload)
            return None

    def _listen_url(self) -> str:
        url = self.db.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen_loop(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._listen_url(), autocommit=True, **KEEPALIVES) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.invalidate()  # notices may have been missed while not listening
                    self._listening = True
                    self._ready.set()
                    log.info(f"{self.label}_listening", channel=self.channel)
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._on_notify(notice.payload)
            except Exception as exc:  # logged; the cache is distrusted until we listen again
                log.warning(f"{self.label}_listener_down", error=repr(exc))
            finally:
                self._listening = False
            self._stop.wait(1.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop_listening()
