"""Carrying out notification events: record, claim, send, record the outcome.

Exactly-once as the recipient sees it, in three steps:

1. **record and claim** (one transaction): every planned delivery is inserted into the delivery
   log under its unique key ``(outbox_id, channel, recipient_key)``; the rows this worker
   inserted are claimed by it (``sending`` until ``lease_until``). Rows that already existed
   (a redelivered message) are claimed only if still ``pending`` or if their lease ran out
   (the worker holding it died); one still leased by a live worker is left to it, with a
   check scheduled for when the lease ends.
2. **send** (no transaction open): each claimed message is built by its channel with the
   delivery's id as the notification id, which becomes the wire idempotency key (e-mail
   ``Message-ID``, webhook ``webhook-id``).
3. **record the outcome**: ``sent``; or ``failed`` with a retry scheduled through the outbox
   (``delivery.retry`` at ``next_attempt_at``: exponential backoff with jitter); or ``dead``
   after ``max_attempts`` or a permanent error. Dead letters are listed and retried through
   the API.

A worker killed between sending and recording leaves the row ``sending``; after the lease a
check re-sends it with the same idempotency key, which the recipient recognises. That resend
is the only way a recipient's server can see a message twice, and it carries the same id.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from sqlalchemy import Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.db import Database, new_id, utcnow
from core.notifications.models import Delivery, DeliveryStatus
from core.notifications.planner import Plan, Planned, Planner, pick_message
from core.notifications.transports import DeliveryError, Transports
from core.outbox.backoff import backoff_delay
from core.outbox.models import OutboxEvent
from core.outbox.processing import Defer, EventView
from core.outbox.services import emit, mark_done, relax_durability
from core.plugins.types import OutboundMessage

log = structlog.get_logger("insurdesk.notifications")

RETRY_EVENT = "delivery.retry"
_TABLE = cast(Table, Delivery.__table__)

# PostgreSQL: a message's deliveries are written with one statement of a fixed text, so the
# driver and the server parse and plan it once per connection, whatever the number of rows.
# The rows travel as one JSON parameter (``json_to_recordset``): encoding 20 rows with the
# json module costs a fraction of adapting one array per column element by element, which was
# the largest part of psycopg's time in the worker. SQLite takes the generic statements.
_PG_INSERT = text(
    """
    INSERT INTO deliveries (tenant_id, id, outbox_id, event_type, channel, recipient_key,
        recipient_masked, recipient_ref, audience, language, status, attempts, last_error,
        lease_until, first_attempt_at, created_at, updated_at)
    SELECT :tenant_id, v.id, v.outbox_id, v.event_type, v.channel, v.recipient_key,
        v.recipient_masked, v.recipient_ref, v.audience, v.language, v.status, v.attempts,
        v.last_error, v.lease_until, v.first_attempt_at, :now, :now
    FROM json_to_recordset(CAST(:rows AS json)) AS v(id uuid, outbox_id uuid,
        event_type text, channel text, recipient_key text, recipient_masked text,
        recipient_ref text, audience text, language text, status text, attempts int,
        last_error text, lease_until timestamptz, first_attempt_at timestamptz)
    ON CONFLICT (tenant_id, outbox_id, channel, recipient_key) DO NOTHING
    RETURNING id, outbox_id, channel, recipient_key
    """
)
_PG_RECORD = text(
    """
    UPDATE deliveries AS d
    SET status = v.status, sent_at = COALESCE(v.sent_at, d.sent_at),
        last_error = v.last_error, next_attempt_at = v.next_attempt_at,
        lease_until = NULL, updated_at = :now
    FROM json_to_recordset(CAST(:rows AS json)) AS v(id uuid, attempts int, status text,
        sent_at timestamptz, last_error text, next_attempt_at timestamptz)
    WHERE d.tenant_id = :tenant_id AND d.id = v.id AND d.attempts = v.attempts
        AND d.status = 'sending'
    """
)
_INSERT_COLUMNS = (
    "id",
    "outbox_id",
    "event_type",
    "channel",
    "recipient_key",
    "recipient_masked",
    "recipient_ref",
    "audience",
    "language",
    "status",
    "attempts",
    "last_error",
    "lease_until",
    "first_attempt_at",
)
_RECORD_COLUMNS = ("id", "attempts", "status", "sent_at", "last_error", "next_attempt_at")


def _plain(value: object) -> object:
    """A UUID or a time as JSON text (``json.dumps``' fallback for :func:`_json_rows`)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a delivery row")


def _json_rows(rows: Sequence[Mapping[str, object]], names: Sequence[str]) -> str:
    """The ``names`` of ``rows`` as a JSON array of objects (:data:`_PG_INSERT`'s ``:rows``)."""
    return json.dumps(
        [{name: row[name] for name in names} for row in rows],
        default=_plain,
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker may send now."""

    id: uuid.UUID
    attempts: int
    item: Planned
    outbox_id: uuid.UUID


@dataclass(frozen=True)
class Outcome:
    """What happened when a claimed delivery was sent."""

    claimed: Claimed
    error: DeliveryError | None = None


@dataclass
class PreparedNotifications:
    """Deliveries recorded and claimed by :meth:`Notifier.prepare`; :meth:`finish` sends them."""

    notifier: Notifier
    plans: list[Plan]
    claimed: dict[uuid.UUID, list[Claimed]]
    results: dict[uuid.UUID, Exception | None]

    def finish(self) -> dict[uuid.UUID, Exception | None]:
        """Send, record the outcomes, mark the events done (after the recording committed)."""
        return self.notifier._finish(self.plans, self.claimed, self.results)


class Notifier:
    """The outbox handlers of notification events and of ``delivery.retry``.

    :param lease: how long a claimed delivery is reserved for the worker sending it; longer
        than any send can take (transport timeouts), shorter than you want a crashed worker's
        messages to wait.
    :param max_attempts: attempts before a delivery is dead.
    """

    def __init__(
        self,
        db: Database,
        planner: Planner,
        transports: Transports,
        *,
        lease: dt.timedelta = dt.timedelta(seconds=120),
        max_attempts: int = 6,
        backoff_base: float = 30.0,
        backoff_cap: float = 3600.0,
    ) -> None:
        self.db = db
        self.planner = planner
        self.transports = transports
        self.lease = lease
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    # -- handlers -------------------------------------------------------------------------------

    def handle_event(self, event: EventView) -> bool:
        """Carry out one event (see :meth:`handle_batch`); raises what it failed with."""
        error = self.handle_batch([event]).get(event.id)
        if error is not None:
            raise error
        return True

    def handle_batch(self, events: Sequence[EventView]) -> dict[uuid.UUID, Exception | None]:
        """Plan, record, send and record the outcomes of several events of one tenant.

        Two transactions for the lot: the first plans every event and records (and claims)
        every delivery, durably, before anything is sent (:meth:`prepare`); the second records
        the outcomes and marks the events done. Returns None per event done, or the exception
        planning it raised (that event alone is retried by the outbox).
        """
        if not events:
            return {}
        with self.db.tenant_transaction(events[0].tenant_id) as session:
            prepared = self.prepare(session, events)
        return prepared.finish()

    def prepare(self, session: Session, events: Sequence[EventView]) -> PreparedNotifications:
        """Step 1 in ``session`` (the transaction that read the events, when the outbox
        processor calls it): plan every event, record and claim its deliveries, mark the
        events with nothing to send done. Nothing is sent before this commits."""
        results: dict[uuid.UUID, Exception | None] = {}
        plans: list[Plan] = []
        for event in events:
            try:
                plans.append(self.planner.plan(session, event))
            except Exception as exc:  # e.g. a channel plugin failed: retried alone
                results[event.id] = exc
        claimed = self._record_and_claim(session, plans)
        idle = [p.event.id for p in plans if not claimed.get(p.event.id)]
        if events:
            mark_done(session, events[0].tenant_id, idle)
        results.update(dict.fromkeys(idle))
        return PreparedNotifications(self, plans, claimed, results)

    def _finish(
        self,
        plans: Sequence[Plan],
        claimed: Mapping[uuid.UUID, Sequence[Claimed]],
        results: dict[uuid.UUID, Exception | None],
    ) -> dict[uuid.UUID, Exception | None]:
        """Steps 2 and 3: send what was claimed, record the outcomes, mark the events done."""
        for plan in plans:
            if plan.reason:
                log.info(
                    "notification_not_sent",
                    event_type=plan.event.event_type,
                    id=str(plan.event.id),
                    reason=plan.reason,
                )
        outcomes = [self._send(plan, c) for plan in plans for c in claimed.get(plan.event.id, ())]
        if outcomes:
            tenant_id = plans[0].event.tenant_id
            with self.db.tenant_transaction(tenant_id) as session:
                # Lost in a crash: the deliveries stay "sending" and are sent again after
                # their lease with the same ids, so this commit need not wait for the disk.
                relax_durability(session)
                self._record(session, tenant_id, outcomes)
                sent_events = [p.event.id for p in plans if claimed.get(p.event.id)]
                mark_done(session, tenant_id, sent_events)
            results.update(dict.fromkeys(sent_events))
        return results

    def handle_retry(self, event: EventView) -> None:
        """Send one delivery again (``payload.delivery_id``) if it still needs it."""
        delivery_id = uuid.UUID(str(event.payload["delivery_id"]))
        with self.db.tenant_transaction(event.tenant_id) as session:
            row = session.get(Delivery, (event.tenant_id, delivery_id))
            if row is None or row.status in _FINAL:
                return
            claimed_attempts = self._claim(session, row)
            if claimed_attempts is None:
                if row.status == DeliveryStatus.SENDING.value and row.lease_until is not None:
                    # Another worker holds it (or held it and died): come back after the lease.
                    raise Defer(row.lease_until + dt.timedelta(seconds=1), "delivery leased")
                return
            source = session.get(OutboxEvent, (event.tenant_id, row.outbox_id))
            assert source is not None  # the foreign key guarantees it
            source_view = EventView.of(source)
            plan = self.planner.plan(session, source_view)
            item = plan.item(row.recipient_key, row.channel)
            if item is None or item.skipped:
                why = plan.reason or (item.skipped if item else "no longer planned")
                self._close(session, row, DeliveryStatus.DEAD, f"not sent again: {why}")
                return
        outcome = self._send(plan, Claimed(delivery_id, claimed_attempts, item, source_view.id))
        with self.db.tenant_transaction(event.tenant_id) as session:
            relax_durability(session)
            self._record(session, event.tenant_id, [outcome])

    # -- step 1: record and claim ---------------------------------------------------------------

    def _record_and_claim(
        self, session: Session, plans: Sequence[Plan]
    ) -> dict[uuid.UUID, list[Claimed]]:
        """Insert every planned delivery (one statement); claim the new ones and, for a
        redelivered event, the old ones nobody holds. Claimed deliveries per event id."""
        now = utcnow()
        by_key = {(p.event.id, i.channel, i.key): i for p in plans for i in p.items}
        values = [self._row(p.event, i, now) for p in plans for i in p.items]
        claimed: dict[uuid.UUID, list[Claimed]] = {}
        if not values:
            return claimed
        inserted: Sequence[Any]
        if session.get_bind().dialect.name == "postgresql":
            params = {
                "rows": _json_rows(values, _INSERT_COLUMNS),
                "tenant_id": values[0]["tenant_id"],
                "now": now,
            }
            inserted = session.connection().execute(_PG_INSERT, params).all()
        else:
            t = _TABLE.c
            inserted = session.execute(
                sqlite_insert(_TABLE)
                .on_conflict_do_nothing(
                    index_elements=["tenant_id", "outbox_id", "channel", "recipient_key"]
                )
                .returning(t.id, t.outbox_id, t.channel, t.recipient_key),
                values,
            ).all()
        mine = set()
        for row_id, outbox_id, channel, key in inserted:
            mine.add((outbox_id, channel, key))
            item = by_key[(outbox_id, channel, key)]
            if not item.skipped:
                claimed.setdefault(outbox_id, []).append(Claimed(row_id, 1, item, outbox_id))
        if len(inserted) < len(values):  # a redelivery: some rows were there already
            again = {k[0] for k in by_key if k not in mine}
            existing = session.scalars(select(Delivery).where(Delivery.outbox_id.in_(again))).all()
            for row in existing:
                key = (row.outbox_id, row.channel, row.recipient_key)
                if key in mine or row.status in _FINAL or key not in by_key:
                    continue
                attempts = self._claim(session, row)
                if attempts is not None:
                    claimed.setdefault(row.outbox_id, []).append(
                        Claimed(row.id, attempts, by_key[key], row.outbox_id)
                    )
                else:
                    self._check_later(session, row)
        return claimed

    def _row(self, event: EventView, item: Planned, now: dt.datetime) -> dict[str, object]:
        skipped = item.skipped is not None
        return {
            "tenant_id": event.tenant_id,
            "id": item.delivery_id or new_id(),
            "outbox_id": event.id,
            "event_type": event.event_type,
            "channel": item.channel,
            "recipient_key": item.key,
            "recipient_masked": item.masked[:300],
            "recipient_ref": item.recipient_ref,
            "audience": item.audience,
            "language": item.language,
            "status": (DeliveryStatus.SKIPPED if skipped else DeliveryStatus.SENDING).value,
            "attempts": 0 if skipped else 1,
            "last_error": item.skipped,
            "lease_until": None if skipped else now + self.lease,
            "first_attempt_at": None if skipped else now,
            "created_at": now,
            "updated_at": now,
        }

    def _claim(self, session: Session, row: Delivery) -> int | None:
        """Claim ``row`` for this worker; returns its attempt number, or None if not now.

        After None, ``row`` is refreshed: ``sending`` means another worker holds its lease.
        """
        now = utcnow()
        t = _TABLE.c
        claimable = or_(
            t.status.in_((DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)),
            and_(t.status == DeliveryStatus.SENDING.value, t.lease_until < now),
        )
        attempts = session.execute(
            update(_TABLE)
            .where(t.tenant_id == row.tenant_id, t.id == row.id, claimable)
            .values(
                status=DeliveryStatus.SENDING.value,
                lease_until=now + self.lease,
                attempts=t.attempts + 1,
                first_attempt_at=func.coalesce(t.first_attempt_at, now),
                updated_at=now,
            )
            .returning(t.attempts)
        ).scalar()
        if attempts is not None:
            return int(attempts)
        session.refresh(row)
        return None

    def _check_later(self, session: Session, row: Delivery) -> None:
        """A delivery leased by another worker: look at it again when the lease ends (if that
        worker died, the check sends it; if not, the check finds it sent)."""
        if row.status == DeliveryStatus.SENDING.value and row.lease_until is not None:
            emit(
                session,
                RETRY_EVENT,
                {"delivery_id": row.id},
                available_at=row.lease_until + dt.timedelta(seconds=1),
                dedupe_key=f"delivery-check:{row.id}:{row.attempts}",
            )

    # -- step 2: send ---------------------------------------------------------------------------

    def _send(self, plan: Plan, claimed: Claimed) -> Outcome:
        item = claimed.item
        resolved = plan.channels.get(item.channel)
        if resolved is None:
            return Outcome(
                claimed, DeliveryError("the channel is no longer enabled", permanent=True)
            )
        try:
            if item.message is not None and item.delivery_id == claimed.id:
                message: OutboundMessage | None = item.message  # built (and signed) in planning
            else:
                notification = self.planner.notification(plan, item, str(claimed.id))
                message = pick_message(resolved.channel.build(notification), item)
            if message is None:
                raise DeliveryError("the channel no longer builds this message", permanent=True)
            self.transports.send(message, resolved.settings)
        except DeliveryError as exc:
            return Outcome(claimed, exc)
        except Exception as exc:  # a channel plugin's bug: recorded on the delivery, retried
            log.error(
                "channel_failed",
                channel=item.channel,
                plugin=resolved.plugin,
                error=repr(exc),
                exc_info=True,
            )
            return Outcome(claimed, DeliveryError(f"channel {resolved.plugin}: {exc!r}"))
        return Outcome(claimed)

    # -- step 3: record the outcome -------------------------------------------------------------

    def _record(self, session: Session, tenant_id: uuid.UUID, outcomes: Sequence[Outcome]) -> None:
        """Record what happened to claimed deliveries (one statement for them all).

        Each update applies only if the delivery is still this attempt's (``sending`` with
        the attempt number claimed): a worker whose lease ran out cannot overwrite the result
        of the one that took over.
        """
        now = utcnow()
        params = []
        for outcome in outcomes:
            claimed, error = outcome.claimed, outcome.error
            row: dict[str, object] = {
                "b_tenant": tenant_id,
                "b_id": claimed.id,
                "b_attempts": claimed.attempts,
                "status": DeliveryStatus.SENT.value,
                "sent_at": now,
                "last_error": None,
                "next_attempt_at": None,
            }
            if error is not None:
                row.update(sent_at=None, last_error=str(error)[:2000])
                if error.permanent or claimed.attempts >= self.max_attempts:
                    row["status"] = DeliveryStatus.DEAD.value
                else:
                    retry_at = now + backoff_delay(
                        claimed.attempts, base=self.backoff_base, cap=self.backoff_cap
                    )
                    row.update(status=DeliveryStatus.FAILED.value, next_attempt_at=retry_at)
                    emit(
                        session,
                        RETRY_EVENT,
                        {"delivery_id": claimed.id},
                        available_at=retry_at,
                        dedupe_key=f"delivery-retry:{claimed.id}:{claimed.attempts}",
                    )
                log.warning(
                    "delivery_failed",
                    channel=claimed.item.channel,
                    id=str(claimed.id),
                    attempt=claimed.attempts,
                    status=row["status"],
                    error=str(error),
                )
            params.append(row)
        if session.get_bind().dialect.name == "postgresql":
            rows = [{**row, "id": row["b_id"], "attempts": row["b_attempts"]} for row in params]
            session.connection().execute(
                _PG_RECORD,
                {"tenant_id": tenant_id, "now": now, "rows": _json_rows(rows, _RECORD_COLUMNS)},
            )
            return
        t = _TABLE.c
        session.execute(
            update(_TABLE)
            .where(
                t.tenant_id == bindparam("b_tenant"),
                t.id == bindparam("b_id"),
                t.attempts == bindparam("b_attempts"),
                t.status == DeliveryStatus.SENDING.value,
            )
            .values(
                status=bindparam("status"),
                sent_at=func.coalesce(bindparam("sent_at", type_=t.sent_at.type), t.sent_at),
                last_error=bindparam("last_error"),
                next_attempt_at=bindparam("next_attempt_at", type_=t.next_attempt_at.type),
                lease_until=None,
                updated_at=now,
            ),
            params,
        )

    def _close(self, session: Session, row: Delivery, status: DeliveryStatus, why: str) -> None:
        row.status = status.value
        row.last_error = why
        row.lease_until = None


_FINAL = frozenset(
    s.value for s in (DeliveryStatus.SENT, DeliveryStatus.DEAD, DeliveryStatus.SKIPPED)
)


def retry_delivery(session: Session, delivery: Delivery, *, actor: str) -> Delivery:
    """Put a ``dead`` or ``failed`` delivery back in line (an admin's retry) and schedule it.

    The attempt budget starts again; the earlier error stays in ``last_error`` until the
    next attempt. Returns the row; raises ``ValueError`` for a delivery in another state.
    """
    if delivery.status not in (DeliveryStatus.DEAD.value, DeliveryStatus.FAILED.value):
        raise ValueError(f"only dead or failed deliveries are retried, not {delivery.status}")
    delivery.status = DeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = None
    delivery.lease_until = None
    emit(
        session,
        RETRY_EVENT,
        {"delivery_id": delivery.id, "requested_by": actor},
        dedupe_key=f"delivery-manual:{delivery.id}:{new_id()}",
    )
    return delivery


def deliveries_of(session: Session, outbox_id: uuid.UUID) -> Sequence[Delivery]:
    """The delivery log of one outbox event."""
    return session.scalars(
        select(Delivery).where(Delivery.outbox_id == outbox_id).order_by(Delivery.id)
    ).all()
