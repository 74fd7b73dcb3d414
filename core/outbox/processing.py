"""Processing one outbox message: idempotent by the row's id.

The actor calls :meth:`Processor.process` with ``(tenant_id, outbox_id)``. A row already
``done`` (or ``failed``) is skipped, so a redelivered or re-dispatched message does nothing
twice; the handlers themselves are idempotent per recipient and channel (the delivery log's
unique key), which covers a worker killed half-way through a row.

A handler that raises leaves the row for a later attempt: back to ``pending`` with
``available_at`` moved by exponential backoff with jitter, the error recorded, until
``max_attempts`` dispatches, then ``failed`` (the metrics count it; an admin can look).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import structlog
from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from core.db import Database, utcnow
from core.outbox.backoff import backoff_delay
from core.outbox.models import OutboxEvent, OutboxStatus
from core.outbox.services import PG_READ, relax_durability

log = structlog.get_logger("insurdesk.outbox")

OPEN_STATUSES = (OutboxStatus.PENDING.value, OutboxStatus.DISPATCHED.value)
_TABLE = cast(Table, OutboxEvent.__table__)


@dataclass(frozen=True)
class EventView:
    """An outbox row as handlers see it (detached, read-only)."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    event_type: str
    payload: Mapping[str, object]
    created_at: dt.datetime
    attempts: int

    @classmethod
    def of(cls, row: OutboxEvent) -> EventView:
        """A view of ``row``."""
        return cls(
            tenant_id=row.tenant_id,
            id=row.id,
            event_type=row.event_type,
            payload=dict(row.payload or {}),
            created_at=row.created_at,
            attempts=row.attempts,
        )


class Defer(Exception):
    """Raised by a handler to be called again at ``until`` (not a failure: no backoff, no
    attempt counted). E.g. a delivery another worker holds until its lease ends."""

    def __init__(self, until: dt.datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until
        self.reason = reason


Handler = Callable[[EventView], bool | None]
"""Carries out one event. Runs outside any transaction; opens its own tenant sessions.
Returns True when it marked the row done itself (in its last transaction), saving one."""

BatchHandler = Callable[[Sequence[EventView]], Mapping[uuid.UUID, Exception | None]]
"""Carries out several events of one tenant together (fewer transactions). Returns, per event
id, None when the event is done (the handler marked the row done in its last transaction) or
the exception it failed with (a :class:`Defer` to be called again later)."""


@runtime_checkable
class PreparedBatch(Protocol):
    """What a :class:`TwoPhaseBatch` recorded; :meth:`finish` carries it out."""

    def finish(self) -> Mapping[uuid.UUID, Exception | None]:
        """Do the rest, outside the preparing transaction (send, record the outcomes); the
        results as for :data:`BatchHandler`."""
        ...


@runtime_checkable
class TwoPhaseBatch(Protocol):
    """A batch handler whose first step runs in the transaction that read the message's rows.

    The processor reads the rows and calls :meth:`prepare` in one transaction (one connection
    checkout, one ``BEGIN`` and tenant setting, one commit fewer per message than reading
    apart), then :meth:`PreparedBatch.finish` after that transaction committed. If
    :meth:`prepare` raises, the transaction rolls back and every event of the batch is retried.
    """

    def prepare(self, session: Session, events: Sequence[EventView]) -> PreparedBatch:
        """Record, in ``session`` (the tenant's open transaction), what ``events`` call for."""
        ...


class Processor:
    """Routes outbox events to handlers by event type, and keeps the rows' status.

    :param handlers: a handler per exact event type (one event at a time).
    :param batch_default: the handler of every other event type, given all of a message's
        events of those types at once (a :class:`TwoPhaseBatch` prepares them in the
        transaction that read them).
    :param default: used instead when there is no ``batch_default`` (None: such rows are
        just marked done).
    :param max_attempts: handler failures after which the row is ``failed``.
    """

    def __init__(
        self,
        db: Database,
        *,
        handlers: Mapping[str, Handler] | None = None,
        batch_default: BatchHandler | TwoPhaseBatch | None = None,
        default: Handler | None = None,
        max_attempts: int = 10,
        backoff_base: float = 2.0,
        backoff_cap: float = 600.0,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers or {})
        self.batch_default = batch_default
        self.default = default
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    def handler_for(self, event_type: str) -> Handler | None:
        """The single-event handler of ``event_type``."""
        return self.handlers.get(event_type, self.default)

    def process(self, tenant_id: uuid.UUID, outbox_id: uuid.UUID) -> str:
        """Carry out outbox row ``outbox_id`` once; returns what happened (for logs/tests).

        ``missing`` (no such row: its transaction never committed, or it was purged),
        ``skipped`` (already done or failed), ``done``, ``deferred``, ``retry`` or ``failed``.
        """
        return self.process_many(tenant_id, [outbox_id])[outbox_id]

    def process_many(
        self, tenant_id: uuid.UUID, outbox_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        """Carry out several rows of one tenant (one message); what happened to each.

        The rows are read in one transaction; a :class:`TwoPhaseBatch` handler prepares its
        events in that same transaction, and finishes after it committed.
        """
        ids = list(dict.fromkeys(outbox_ids))
        t = _TABLE.c
        outcome: dict[uuid.UUID, str] = {}
        events: list[EventView] = []
        batched: list[EventView] = []
        prepared: PreparedBatch | None = None
        failed_batch: Exception | None = None
        two_phase = isinstance(self.batch_default, TwoPhaseBatch)
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                # Core, not ORM: rows of a fixed shape, no objects to build and track.
                found: Sequence[Any]
                if session.get_bind().dialect.name == "postgresql":
                    found = (
                        session.connection()
                        .execute(PG_READ, {"tenant_id": tenant_id, "ids": ids})
                        .all()
                    )
                else:
                    found = session.execute(
                        select(
                            t.id, t.event_type, t.payload, t.created_at, t.attempts, t.status
                        ).where(t.tenant_id == tenant_id, t.id.in_(ids))
                    ).all()
                rows = {r.id: r for r in found}
                outcome = {
                    i: "missing" if i not in rows else "skipped"
                    for i in ids
                    if i not in rows or rows[i].status not in OPEN_STATUSES
                }
                events = [
                    EventView(
                        tenant_id=tenant_id,
                        id=i,
                        event_type=rows[i].event_type,
                        payload=dict(rows[i].payload or {}),
                        created_at=rows[i].created_at,
                        attempts=rows[i].attempts,
                    )
                    for i in ids
                    if i not in outcome
                ]
                batched = [
                    e
                    for e in events
                    if self.batch_default is not None and e.event_type not in self.handlers
                ]
                if batched and two_phase:
                    prepared = cast(TwoPhaseBatch, self.batch_default).prepare(session, batched)
        except Exception as exc:
            if not (batched and two_phase) or prepared is not None:
                raise  # reading or committing failed (the database is down): redelivered
            failed_batch = exc  # preparing failed and was rolled back: the batch retries
        in_batch = {e.id for e in batched}
        for event in events:
            if event.id not in in_batch:
                outcome[event.id] = self._one(event)
        if batched and self.batch_default is not None:
            try:
                if failed_batch is not None:
                    raise failed_batch
                if prepared is not None:
                    results = prepared.finish()
                else:
                    results = cast(BatchHandler, self.batch_default)(batched)
            except Exception as exc:  # the handler failed as a whole: each event retries
                results = dict.fromkeys((e.id for e in batched), exc)
            for event in batched:
                error = results.get(event.id, RuntimeError("the handler returned no result"))
                outcome[event.id] = "done" if error is None else self._outcome(event, error)
        return outcome

    def _one(self, event: EventView) -> str:
        handler = self.handler_for(event.event_type)
        finished = False
        try:
            if handler is not None:
                finished = bool(handler(event))
        except Exception as exc:
            return self._outcome(event, exc)
        if not finished:
            self._finish(event, OutboxStatus.DONE, error=None)
        return "done"

    def _outcome(self, event: EventView, exc: Exception) -> str:
        if isinstance(exc, Defer):
            self._again_at(event, exc.until, exc.reason)
            return "deferred"
        return self._failed(event, exc)

    def _failed(self, event: EventView, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        attempt = max(event.attempts, 1)
        if attempt >= self.max_attempts:
            log.error(
                "outbox_event_failed", event_type=event.event_type, id=str(event.id), error=error
            )
            self._finish(event, OutboxStatus.FAILED, error=error)
            return "failed"
        delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
        log.warning(
            "outbox_event_retry",
            event_type=event.event_type,
            id=str(event.id),
            error=error,
            retry_in_s=round(delay.total_seconds(), 1),
            exc_info=exc,
        )
        self._again_at(event, utcnow() + delay, error)
        return "retry"

    def _again_at(self, event: EventView, when: dt.datetime, note: str) -> None:
        with self.db.tenant_transaction(event.tenant_id) as session:
            session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.tenant_id == event.tenant_id,
                    OutboxEvent.id == event.id,
                    OutboxEvent.status.in_(OPEN_STATUSES),
                )
                .values(status=OutboxStatus.PENDING.value, available_at=when, last_error=note)
                .execution_options(synchronize_session=False)
            )

    def _finish(self, event: EventView, status: OutboxStatus, *, error: str | None) -> None:
        with self.db.tenant_transaction(event.tenant_id) as session:
            relax_durability(session)  # lost in a crash: processed again, a no-op
            session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.tenant_id == event.tenant_id,
                    OutboxEvent.id == event.id,
                    OutboxEvent.status.in_(OPEN_STATUSES),
                )
                .values(status=status.value, processed_at=utcnow(), last_error=error)
                .execution_options(synchronize_session=False)
            )
