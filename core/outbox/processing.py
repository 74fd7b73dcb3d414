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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy import update

from core.db import Database, utcnow
from core.outbox.backoff import backoff_delay
from core.outbox.models import OutboxEvent, OutboxStatus

log = structlog.get_logger("insurdesk.outbox")

OPEN_STATUSES = (OutboxStatus.PENDING.value, OutboxStatus.DISPATCHED.value)


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


Handler = Callable[[EventView], None]
"""Carries out one event. Runs outside any transaction; opens its own tenant sessions."""


class Processor:
    """Routes outbox events to handlers by event type, and keeps the row's status.

    :param handlers: handler per exact event type.
    :param default: handler for every other event type (None: such rows are just marked done).
    :param max_attempts: handler failures after which the row is ``failed``.
    """

    def __init__(
        self,
        db: Database,
        *,
        handlers: Mapping[str, Handler] | None = None,
        default: Handler | None = None,
        max_attempts: int = 10,
        backoff_base: float = 2.0,
        backoff_cap: float = 600.0,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers or {})
        self.default = default
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    def handler_for(self, event_type: str) -> Handler | None:
        """The handler of ``event_type``."""
        return self.handlers.get(event_type, self.default)

    def process(self, tenant_id: uuid.UUID, outbox_id: uuid.UUID) -> str:
        """Carry out outbox row ``outbox_id`` once; returns what happened (for logs/tests).

        ``missing`` (no such row: its transaction never committed, or it was purged),
        ``skipped`` (already done or failed), ``done``, ``deferred``, ``retry`` or ``failed``.
        """
        with self.db.tenant_session(tenant_id) as session:
            row = session.get(OutboxEvent, (tenant_id, outbox_id))
            if row is None:
                return "missing"
            if row.status not in OPEN_STATUSES:
                return "skipped"
            event = EventView.of(row)
        handler = self.handler_for(event.event_type)
        try:
            if handler is not None:
                handler(event)
        except Defer as defer:
            self._again_at(event, defer.until, defer.reason)
            return "deferred"
        except Exception as exc:
            return self._failed(event, exc)
        self._finish(event, OutboxStatus.DONE, error=None)
        return "done"

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
