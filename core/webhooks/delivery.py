"""Delivering webhooks: fan-out from the outbox, then one signed POST per delivery.

1. **Fan-out** (:meth:`WebhookDispatcher.fan_out`, for every outbox event the worker
   handles): in one transaction, each active subscription whose event types and units match
   gets a :class:`~core.webhooks.models.WebhookDelivery` (unique per subscription and event,
   so a redelivered outbox message adds nothing) and a ``webhook.send`` outbox event.
2. **Send** (:meth:`WebhookDispatcher.handle_send`, the ``webhook.send`` handler): the
   delivery is claimed with a lease (``sending``), signed now (Standard Webhooks headers,
   :mod:`core.webhooks.signing`, the platform's one signer) and POSTed through the platform's
   one webhook client (:class:`core.webhooks.urls.GuardedClients`: SSRF-guarded, a keep-alive
   client per worker thread, shared with the ``webhook`` notification channel). A 2xx is
   ``sent``. Anything else (another status, a timeout, a connection error) is ``failed`` and
   tried again through the outbox after an exponential backoff with jitter (30 s, 1 min,
   2 min … capped at 1 h by default), until ``max_attempts``: then ``dead``. A refused address
   is ``dead`` at once. ``dead`` deliveries are listed and replayed through the API.

A worker that dies while sending leaves the delivery ``sending``; when its lease ends the
``webhook.send`` event (re-dispatched by the outbox relay) claims and sends it again with the
same ``webhook-id``, which receivers deduplicate on.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import httpx
import structlog
from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.cases.models import Case
from core.db import Database, new_id, utcnow
from core.orgs.models import OrgUnit
from core.outbox.backoff import backoff_delay
from core.outbox.processing import BatchHandler, Defer, EventView, PreparedBatch, TwoPhaseBatch
from core.outbox.services import emit
from core.tenancy.models import Tenant
from core.webhooks.events import build_body, matches, public_type
from core.webhooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookSubscription
from core.webhooks.services import SEND_EVENT
from core.webhooks.signing import signed_headers
from core.webhooks.urls import AddressRefused, GuardedClients, Resolver, resolve

log = structlog.get_logger("insurdesk.webhooks")

_TABLE: Table = WebhookDelivery.__table__  # type: ignore[assignment]
_HISTORY = 20
_OPEN = (WebhookDeliveryStatus.PENDING.value, WebhookDeliveryStatus.FAILED.value)
_FINAL = (WebhookDeliveryStatus.SENT.value, WebhookDeliveryStatus.DEAD.value)


@dataclass(frozen=True)
class _Claim:
    id: uuid.UUID
    attempts: int
    url: str
    body: bytes
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class _Result:
    status_code: int | None
    error: str | None
    permanent: bool
    ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDispatcher:
    """Fan-out and sending of webhook deliveries (see the module docstring).

    :param allow_private: deliveries may reach non-public addresses (tests, intranets).
    :param lease: how long a claimed delivery is reserved for the worker sending it.
    :param clients: the webhook clients to send through (default: new ones, closed by
        :meth:`close`); the worker shares one set with the notification transports.
    """

    def __init__(
        self,
        db: Database,
        *,
        allow_private: bool,
        max_attempts: int = 8,
        backoff_base: float = 30.0,
        backoff_cap: float = 3600.0,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        timeout: float = 10.0,
        resolver: Resolver = resolve,
        clients: GuardedClients | None = None,
    ) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lease = lease
        self._own_clients = clients is None
        self.clients = clients or GuardedClients(
            allow_private=allow_private, timeout=timeout, resolver=resolver
        )

    def close(self) -> None:
        """Close the HTTP connections (when this dispatcher made them)."""
        if self._own_clients:
            self.clients.close()

    # -- 1. fan-out ---------------------------------------------------------------------------

    def fan_out(self, events: Sequence[EventView]) -> dict[uuid.UUID, Exception | None]:
        """Record the deliveries of ``events`` (one tenant); per event, None or the error."""
        results: dict[uuid.UUID, Exception | None] = {e.id: None for e in events}
        published = [(e, public_type(e.event_type)) for e in events]
        published = [(e, t) for e, t in published if t is not None]
        by_tenant: dict[uuid.UUID, list[tuple[EventView, str]]] = {}
        for event, name in published:
            by_tenant.setdefault(event.tenant_id, []).append((event, name))  # type: ignore[arg-type]
        for tenant_id, items in by_tenant.items():
            try:
                self._fan_out_tenant(tenant_id, items)
            except Exception as exc:  # retried by the outbox with the event
                log.warning("webhook_fan_out_failed", tenant=str(tenant_id), error=repr(exc))
                for event, _ in items:
                    results[event.id] = exc
        return results

    def fan_out_in(self, session: Session, events: Sequence[EventView]) -> None:
        """Record the deliveries of ``events`` (one tenant) in ``session``, the caller's open
        transaction (the outbox processor's, which read the events); raises on failure."""
        items = [(e, t) for e in events if (t := public_type(e.event_type)) is not None]
        if items:
            self._fan_out_in(session, items[0][0].tenant_id, items)

    def _fan_out_tenant(self, tenant_id: uuid.UUID, items: list[tuple[EventView, str]]) -> None:
        with self.db.tenant_transaction(tenant_id) as session:
            self._fan_out_in(session, tenant_id, items)

    def _fan_out_in(
        self, session: Session, tenant_id: uuid.UUID, items: list[tuple[EventView, str]]
    ) -> None:
        subs = list(
            session.scalars(select(WebhookSubscription).where(WebhookSubscription.active.is_(True)))
        )
        if not subs:
            return
        tenant = session.get(Tenant, tenant_id)
        unit_paths = self._unit_paths(session, subs)
        now = utcnow()
        values = []
        for event, name in items:
            event_path, data = self._about(session, event)
            for sub in subs:
                if not matches(sub.event_types, name):
                    continue
                if sub.unit_ids and not (
                    event_path is not None
                    and any(event_path.startswith(unit_paths.get(u, "\0")) for u in sub.unit_ids)
                ):
                    continue
                values.append(
                    {
                        "tenant_id": tenant_id,
                        "id": new_id(),
                        "subscription_id": sub.id,
                        "event_id": event.id,
                        "event_type": name,
                        "body": build_body(
                            event_id=event.id,
                            event_type=name,
                            occurred_at=event.created_at,
                            tenant_slug=tenant.slug if tenant else "",
                            data=data,
                        ),
                        "status": WebhookDeliveryStatus.PENDING.value,
                        "attempts": 0,
                        "replays": 0,
                        "history": [],
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        if not values:
            return
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        created = (
            session.execute(
                insert(_TABLE)
                .values(values)
                .on_conflict_do_nothing(index_elements=["tenant_id", "subscription_id", "event_id"])
                .returning(_TABLE.c.id)
            )
            .scalars()
            .all()
        )
        for delivery_id in created:
            emit(
                session,
                SEND_EVENT,
                {"delivery_id": delivery_id},
                dedupe_key=f"webhook-send:{delivery_id}:0",
            )

    @staticmethod
    def _unit_paths(session: Session, subs: Sequence[WebhookSubscription]) -> dict[str, str]:
        ids = {uuid.UUID(u) for s in subs for u in s.unit_ids}
        if not ids:
            return {}
        rows = session.execute(select(OrgUnit.id, OrgUnit.path).where(OrgUnit.id.in_(ids)))
        return {str(i): p for i, p in rows}

    @staticmethod
    def _about(session: Session, event: EventView) -> tuple[str | None, dict[str, object]]:
        """The unit path an event concerns, and the data of its body."""
        data = {k: v for k, v in event.payload.items() if k not in ("contacts", "recipients")}
        unit_id = data.get("unit_id")
        if unit_id is None and data.get("case_id"):
            try:
                case_id = uuid.UUID(str(data["case_id"]))
            except ValueError:
                case_id = None
            if case_id is not None:
                unit_id = session.scalar(select(Case.unit_id).where(Case.id == case_id))
                if unit_id is not None:
                    data["unit_id"] = str(unit_id)
        path = None
        if unit_id is not None:
            try:
                path = session.scalar(
                    select(OrgUnit.path).where(OrgUnit.id == uuid.UUID(str(unit_id)))
                )
            except ValueError:
                path = None
        return path, data

    # -- 2. send ------------------------------------------------------------------------------

    def handle_send(self, event: EventView) -> None:
        """Send delivery ``payload.delivery_id`` if it still needs it (outbox handler)."""
        delivery_id = uuid.UUID(str(event.payload["delivery_id"]))
        claim = self._claim(event.tenant_id, delivery_id)
        if claim is None:
            return
        result = self._post(claim)
        self._record(event.tenant_id, claim, result)

    def _claim(self, tenant_id: uuid.UUID, delivery_id: uuid.UUID) -> _Claim | None:
        now = utcnow()
        with self.db.tenant_transaction(tenant_id) as session:
            row = session.get(WebhookDelivery, (tenant_id, delivery_id))
            if row is None or row.status in _FINAL:
                return None
            sub = session.get(WebhookSubscription, (tenant_id, row.subscription_id))
            if sub is None or not sub.active:
                row.status = WebhookDeliveryStatus.DEAD.value
                row.last_error = "the subscription is paused or gone"
                row.lease_until = None
                return None
            t = _TABLE.c
            attempts = session.execute(
                update(_TABLE)
                .where(
                    t.tenant_id == tenant_id,
                    t.id == delivery_id,
                    or_(
                        t.status.in_(_OPEN),
                        and_(t.status == WebhookDeliveryStatus.SENDING.value, t.lease_until < now),
                    ),
                )
                .values(
                    status=WebhookDeliveryStatus.SENDING.value,
                    attempts=t.attempts + 1,
                    lease_until=now + self.lease,
                    last_attempt_at=now,
                    updated_at=now,
                )
                .returning(t.attempts)
                .execution_options(synchronize_session=False)
            ).scalar()
            if attempts is None:
                session.refresh(row)
                if row.status == WebhookDeliveryStatus.SENDING.value and row.lease_until:
                    raise Defer(row.lease_until + dt.timedelta(seconds=1), "delivery leased")
                return None
            secrets = [sub.secret]
            until = sub.previous_secret_until
            if sub.previous_secret and until is not None and _aware(until) > now:
                secrets.append(sub.previous_secret)
            return _Claim(delivery_id, int(attempts), sub.url, row.body.encode(), tuple(secrets))

    def _post(self, claim: _Claim) -> _Result:
        msg_id = str(claim.id)
        headers = signed_headers(claim.secrets[0], msg_id, claim.body)
        if len(claim.secrets) > 1:
            extra = signed_headers(
                claim.secrets[1], msg_id, claim.body, now=float(headers["webhook-timestamp"])
            )
            headers["webhook-signature"] += " " + extra["webhook-signature"]
        headers["content-type"] = "application/json"
        started = time.monotonic()
        try:
            status = self.clients.post(claim.url, content=claim.body, headers=headers)
        except AddressRefused as exc:
            return _Result(None, str(exc), True, _ms(started))
        except httpx.HTTPError as exc:
            return _Result(None, f"{type(exc).__name__}: {exc}"[:500], False, _ms(started))
        ms = _ms(started)
        if 200 <= status < 300:
            return _Result(status, None, False, ms)
        return _Result(status, f"HTTP {status}", False, ms)

    def _record(self, tenant_id: uuid.UUID, claim: _Claim, result: _Result) -> None:
        now = utcnow()
        with self.db.tenant_transaction(tenant_id) as session:
            row = session.get(WebhookDelivery, (tenant_id, claim.id))
            if (
                row is None
                or row.status != WebhookDeliveryStatus.SENDING.value
                or row.attempts != claim.attempts
            ):
                return  # another worker took it over after our lease ran out
            attempt: dict[str, object] = {
                "at": now.isoformat(),
                "status_code": result.status_code,
                "error": result.error,
                "ms": result.ms,
            }
            row.history = [*row.history, attempt][-_HISTORY:]
            row.last_status_code = result.status_code
            row.lease_until = None
            if result.ok:
                row.status = WebhookDeliveryStatus.SENT.value
                row.sent_at = now
                row.last_error = None
                row.next_attempt_at = None
                return
            row.last_error = result.error
            if result.permanent or claim.attempts >= self.max_attempts:
                row.status = WebhookDeliveryStatus.DEAD.value
                row.next_attempt_at = None
                log.warning("webhook_dead", delivery=str(claim.id), error=result.error)
                return
            retry_at = now + backoff_delay(
                claim.attempts, base=self.backoff_base, cap=self.backoff_cap
            )
            row.status = WebhookDeliveryStatus.FAILED.value
            row.next_attempt_at = retry_at
            emit(
                session,
                SEND_EVENT,
                {"delivery_id": claim.id},
                available_at=retry_at,
                dedupe_key=f"webhook-send:{claim.id}:{row.replays}:{claim.attempts}",
            )
            log.info(
                "webhook_retry",
                delivery=str(claim.id),
                attempt=claim.attempts,
                error=result.error,
                retry_at=retry_at.isoformat(),
            )


class _WithWebhooks:
    """A batch handler that fans events out to webhook subscriptions, then hands them on.

    Called with a message's events, it fans out (own transaction) then calls the inner
    handler; an event whose fan-out failed is not passed on and is retried as a whole (both
    steps are idempotent, so nothing is sent twice). Given a two-phase inner handler (the
    notifier), it is two-phase too: the fan-out and the inner preparation run in the
    transaction that read the events, and a failure of either retries the batch.
    """

    def __init__(self, batch: BatchHandler | TwoPhaseBatch, dispatcher: WebhookDispatcher) -> None:
        self.batch = batch
        self.dispatcher = dispatcher
        if isinstance(batch, TwoPhaseBatch):
            self.prepare = self._prepare

    def __call__(self, events: Sequence[EventView]) -> Mapping[uuid.UUID, Exception | None]:
        failed = {k: v for k, v in self.dispatcher.fan_out(events).items() if v is not None}
        rest = [e for e in events if e.id not in failed]
        results: dict[uuid.UUID, Exception | None] = {}
        if rest:
            if isinstance(self.batch, TwoPhaseBatch):
                with self.dispatcher.db.tenant_transaction(rest[0].tenant_id) as session:
                    prepared = self.batch.prepare(session, rest)
                results.update(prepared.finish())
            else:
                results.update(self.batch(rest))
        results.update(failed)
        return results

    def _prepare(self, session: Session, events: Sequence[EventView]) -> PreparedBatch:
        self.dispatcher.fan_out_in(session, events)
        return cast(TwoPhaseBatch, self.batch).prepare(session, events)


def with_webhooks(
    batch: BatchHandler | TwoPhaseBatch, dispatcher: WebhookDispatcher
) -> BatchHandler:
    """``batch`` with the fan-out to webhook subscriptions first (see :class:`_WithWebhooks`;
    the result is also a :class:`~core.outbox.processing.TwoPhaseBatch` when ``batch`` is)."""
    return _WithWebhooks(batch, dispatcher)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


__all__ = ["SEND_EVENT", "WebhookDispatcher", "with_webhooks"]
