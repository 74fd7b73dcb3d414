"""The relay: moves due ``pending`` outbox rows to the broker, in batches, and marks them.

It works across tenants through the platform path (``Database.platform_session``): on
PostgreSQL each batch is ``SELECT ... FOR UPDATE SKIP LOCKED``, so several relays share the
work without handing out a row twice at the same time; on SQLite (one process) writes are
serialized anyway. A row is marked ``dispatched`` only after the broker accepted its message
(RabbitMQ publisher confirms). When the broker is down the batch stays ``pending`` (rows
already accepted before the failure are still marked) and the relay backs off and tries
again: an outage delays delivery and loses nothing.

If a message is lost after it was accepted (a broker without persistence, a purged queue),
its row stays ``dispatched``; :meth:`Relay.requeue_stale` returns such rows to ``pending``
after ``redispatch_after``, and after ``max_attempts`` dispatches marks them ``failed``. The
actor is idempotent by outbox id, so a second copy of a message does nothing twice.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
import structlog
from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from core.db import Database, utcnow
from core.outbox.broker import BrokerHandle
from core.outbox.models import OutboxEvent, OutboxStatus
from core.outbox.services import PG_DISPATCHED, relax_durability

log = structlog.get_logger("insurdesk.outbox.relay")

ACTOR_NAME = "insurdesk_outbox"
"""The Dramatiq actor that processes outbox messages (:mod:`core.outbox.actors`)."""


class Publisher(Protocol):
    """Hands outbox rows of one tenant to the broker as one message; raises when the broker
    did not accept it."""

    def publish(self, tenant_id: uuid.UUID, outbox_ids: Sequence[uuid.UUID]) -> None:
        """Publish one message for rows ``outbox_ids`` of ``tenant_id``."""
        ...


class BrokerPublisher:
    """Publishes outbox messages to the Dramatiq broker of ``handle``."""

    def __init__(self, handle: BrokerHandle) -> None:
        self.handle = handle

    def publish(self, tenant_id: uuid.UUID, outbox_ids: Sequence[uuid.UUID]) -> None:
        """Enqueue ``insurdesk_outbox(tenant_id, [ids])`` (waits for the broker's confirm)."""
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self.handle.queue_name,
            actor_name=ACTOR_NAME,
            args=(str(tenant_id), [str(i) for i in outbox_ids]),
            kwargs={},
            options={},
        )
        self.handle.broker.enqueue(message)


@dataclass
class RelayStats:
    """What a relay did since it started (for logs and tests)."""

    published: int = 0
    batches: int = 0
    broker_errors: int = 0
    requeued: int = 0
    failed: int = 0


class Relay:
    """Moves due pending outbox rows to a :class:`Publisher`.

    :param batch_size: rows per transaction.
    :param message_size: rows per message at most (a tenant's rows of one batch are sent in
        messages of up to this many, so a backlog is worked off with fewer transactions; when
        rows come one at a time, each message carries one).
    :param poll_interval: seconds to sleep when there was nothing to do.
    :param redispatch_after: a ``dispatched`` row older than this goes back to ``pending``.
    :param max_attempts: dispatches after which a row that is never processed is ``failed``.
    :param tenant_ids: only these tenants' rows (tests, sharding); None: every tenant.
    """

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        message_size: int = 20,
        poll_interval: float = 0.1,
        redispatch_after: dt.timedelta = dt.timedelta(minutes=5),
        max_attempts: int = 20,
        max_backoff: float = 10.0,
        tenant_ids: Collection[uuid.UUID] | None = None,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.batch_size = batch_size
        self.message_size = message_size
        self.poll_interval = poll_interval
        self.redispatch_after = redispatch_after
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.tenant_ids = frozenset(tenant_ids) if tenant_ids is not None else None
        self.stats = RelayStats()
        self.wake = threading.Event()
        """Set it to make a sleeping relay look for work at once."""

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Dispatch one batch of due pending rows; returns how many the broker accepted.

        :raises Exception: the publisher's error when the broker refused a message (rows
            accepted before it are marked ``dispatched`` first).
        """
        now = now or utcnow()
        published: list[tuple[uuid.UUID, uuid.UUID]] = []
        error: Exception | None = None
        with self.db.platform_session() as session, session.begin():
            stmt = (
                select(OutboxEvent.tenant_id, OutboxEvent.id)
                .where(
                    OutboxEvent.status == OutboxStatus.PENDING.value,
                    OutboxEvent.available_at <= now,
                )
                .order_by(OutboxEvent.available_at)
                .limit(self.batch_size)
            )
            if self.tenant_ids is not None:
                stmt = stmt.where(OutboxEvent.tenant_id.in_(self.tenant_ids))
            if self.db.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            rows = session.execute(stmt).all()
            for tenant_id, chunk in self._messages(rows):
                try:
                    self.publisher.publish(tenant_id, chunk)
                except Exception as exc:  # the broker refused: keep the rest pending
                    error = exc
                    break
                published += [(tenant_id, i) for i in chunk]
            if published:
                # Lost in a crash: the rows are published again, which the actor ignores.
                relax_durability(session)
                if self.db.is_postgres:  # one statement of a fixed text, a key probe per row
                    session.connection().execute(
                        PG_DISPATCHED,
                        {
                            "tenant_ids": [tenant_id for tenant_id, _ in published],
                            "ids": [row_id for _, row_id in published],
                            "now": utcnow(),
                        },
                    )
                else:
                    self._mark_dispatched(session, published)
        self.stats.published += len(published)
        self.stats.batches += 1 if rows else 0
        if error is not None:
            self.stats.broker_errors += 1
            raise error
        return len(published)

    @staticmethod
    def _mark_dispatched(
        session: Session, published: Sequence[tuple[uuid.UUID, uuid.UUID]]
    ) -> None:
        """Mark ``(tenant_id, id)`` rows dispatched (SQLite)."""
        session.execute(
            update(OutboxEvent)
            .where(
                tuple_(OutboxEvent.tenant_id, OutboxEvent.id).in_(published),
                # The actor may already have finished a row (SQLite has no row lock).
                OutboxEvent.status == OutboxStatus.PENDING.value,
            )
            .values(
                status=OutboxStatus.DISPATCHED.value,
                dispatched_at=utcnow(),
                attempts=OutboxEvent.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )

    def _messages(self, rows: Sequence[Any]) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
        """Rows grouped by tenant (in order of first appearance), in chunks of
        ``message_size``."""
        by_tenant: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant_id, []).append(row.id)
        return [
            (tenant_id, ids[start : start + self.message_size])
            for tenant_id, ids in by_tenant.items()
            for start in range(0, len(ids), self.message_size)
        ]

    def requeue_stale(self, now: dt.datetime | None = None) -> int:
        """Return long-``dispatched`` rows to ``pending`` (or ``failed`` after max attempts).

        :returns: how many rows were put back.
        """
        now = now or utcnow()
        cutoff = now - self.redispatch_after
        stale = (
            OutboxEvent.status == OutboxStatus.DISPATCHED.value,
            OutboxEvent.dispatched_at < cutoff,
        )
        scope = () if self.tenant_ids is None else (OutboxEvent.tenant_id.in_(self.tenant_ids),)
        with self.db.platform_session() as session, session.begin():
            failed = session.execute(
                update(OutboxEvent)
                .where(*stale, *scope, OutboxEvent.attempts >= self.max_attempts)
                .values(
                    status=OutboxStatus.FAILED.value,
                    last_error=f"not processed after {self.max_attempts} dispatches",
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            requeued = session.execute(
                update(OutboxEvent)
                .where(*stale, *scope)
                .values(status=OutboxStatus.PENDING.value, available_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if requeued or failed:
            log.warning("outbox_requeued_stale", requeued=requeued, failed=failed)
        self.stats.requeued += int(requeued)
        self.stats.failed += int(failed)
        return int(requeued)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set: batches back to back while there is work, then poll.

        A broker error is logged and retried with exponential backoff (up to ``max_backoff``
        seconds); a database error likewise. Stale rows are requeued every
        ``redispatch_after / 5``.
        """
        delay = self.poll_interval
        stale_every = max(1.0, self.redispatch_after.total_seconds() / 5)
        next_stale = time.monotonic() + stale_every
        while not stop.is_set():
            try:
                if time.monotonic() >= next_stale:
                    self.requeue_stale()
                    next_stale = time.monotonic() + stale_every
                count = self.run_once()
                delay = self.poll_interval
                if count >= self.batch_size:
                    continue
            except Exception as exc:  # broker or database down: wait, then try again
                log.warning("outbox_relay_error", error=f"{type(exc).__name__}: {exc}")
                delay = min(self.max_backoff, max(delay * 2, 0.5))
            self.wake.wait(delay)
            self.wake.clear()
