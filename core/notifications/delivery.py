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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import structlog
from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.db import Database, new_id, utcnow
from core.notifications.models import Delivery, DeliveryStatus
from core.notifications.planner import Plan, Planned, Planner, pick_message
from core.notifications.transports import DeliveryError, Transports
from core.outbox.backoff import backoff_delay
from core.outbox.models import OutboxEvent
from core.outbox.processing import Defer, EventView
from core.outbox.services import emit

log = structlog.get_logger("insurdesk.notifications")

RETRY_EVENT = "delivery.retry"
_TABLE = cast(Table, Delivery.__table__)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker may send now."""

    id: uuid.UUID
    attempts: int
    item: Planned


@dataclass(frozen=True)
class Outcome:
    """What happened when a claimed delivery was sent."""

    claimed: Claimed
    error: DeliveryError | None = None


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

    def handle_event(self, event: EventView) -> None:
        """Plan ``event``'s notifications, record them, send the ones claimed, record outcomes."""
        with self.db.tenant_transaction(event.tenant_id) as session:
            plan = self.planner.plan(session, event)
            claimed = self._record_and_claim(session, plan)
        if plan.reason:
            log.info(
                "notification_not_sent",
                event_type=event.event_type,
                id=str(event.id),
                reason=plan.reason,
            )
        outcomes = [self._send(plan, c) for c in claimed]
        if outcomes:
            with self.db.tenant_transaction(event.tenant_id) as session:
                for outcome in outcomes:
                    self._record(session, event, outcome)

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
        outcome = self._send(plan, Claimed(delivery_id, claimed_attempts, item))
        with self.db.tenant_transaction(event.tenant_id) as session:
            self._record(session, source_view, outcome)

    # -- step 1: record and claim ---------------------------------------------------------------

    def _record_and_claim(self, session: Session, plan: Plan) -> list[Claimed]:
        if not plan.items:
            return []
        now = utcnow()
        event = plan.event
        by_key = {(i.channel, i.key): i for i in plan.items}
        values = [self._row(event, item, now) for item in plan.items]
        dialect = session.get_bind().dialect.name
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        inserted = session.execute(
            upsert(_TABLE)
            .values(values)
            .on_conflict_do_nothing(
                index_elements=["tenant_id", "outbox_id", "channel", "recipient_key"]
            )
            .returning(_TABLE.c.id, _TABLE.c.channel, _TABLE.c.recipient_key)
        ).all()
        claimed = [
            Claimed(row_id, 1, by_key[(channel, key)])
            for row_id, channel, key in inserted
            if not by_key[(channel, key)].skipped
        ]
        if len(inserted) < len(values):  # a redelivery: some rows were there already
            mine = {(c, k) for _, c, k in inserted}
            existing = session.scalars(select(Delivery).where(Delivery.outbox_id == event.id)).all()
            for row in existing:
                if (row.channel, row.recipient_key) in mine or row.status in _FINAL:
                    continue
                item = by_key.get((row.channel, row.recipient_key))
                if item is None:
                    continue
                attempts = self._claim(session, row)
                if attempts is not None:
                    claimed.append(Claimed(row.id, attempts, item))
                else:
                    self._check_later(session, row)
        return claimed

    def _row(self, event: EventView, item: Planned, now: dt.datetime) -> dict[str, object]:
        skipped = item.skipped is not None
        return {
            "tenant_id": event.tenant_id,
            "id": new_id(),
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

    def _record(self, session: Session, event: EventView, outcome: Outcome) -> None:
        claimed, error = outcome.claimed, outcome.error
        now = utcnow()
        mine = (
            Delivery.tenant_id == event.tenant_id,
            Delivery.id == claimed.id,
            Delivery.status == DeliveryStatus.SENDING.value,
            Delivery.attempts == claimed.attempts,
        )
        values: dict[str, object]
        if error is None:
            values = {"status": DeliveryStatus.SENT.value, "sent_at": now, "last_error": None}
        elif error.permanent or claimed.attempts >= self.max_attempts:
            values = {"status": DeliveryStatus.DEAD.value, "last_error": str(error)[:2000]}
        else:
            retry_at = now + backoff_delay(
                claimed.attempts, base=self.backoff_base, cap=self.backoff_cap
            )
            values = {
                "status": DeliveryStatus.FAILED.value,
                "last_error": str(error)[:2000],
                "next_attempt_at": retry_at,
            }
            emit(
                session,
                RETRY_EVENT,
                {"delivery_id": claimed.id},
                available_at=retry_at,
                dedupe_key=f"delivery-retry:{claimed.id}:{claimed.attempts}",
            )
        values.update(lease_until=None, updated_at=now)
        session.execute(
            update(Delivery)
            .where(*mine)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if error is not None:
            log.warning(
                "delivery_failed",
                channel=claimed.item.channel,
                id=str(claimed.id),
                attempt=claimed.attempts,
                status=values["status"],
                error=str(error),
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
