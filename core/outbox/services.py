"""Writing to the outbox, and the queries the relay, the API and the metrics share."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.db import TENANT_KEY, CrossTenantWriteError, TenantRequiredError, new_id, utcnow
from core.db_batch import WriteBatch, execute_insert
from core.outbox.models import OutboxEvent, OutboxStatus

_TABLE = cast(Table, OutboxEvent.__table__)


_AS_IS = frozenset({str, int, float, bool, type(None)})
"""Types :func:`to_json` returns as they are, checked by exact type first (subclasses, such as
string enums, take the longer way, with the same result as before)."""


def to_json(value: Any) -> Any:
    """A JSON-ready copy of ``value``: UUIDs, dates, decimals and enums become strings.

    :raises TypeError: for anything else that JSON cannot hold (a payload is data, not objects).
    """
    kind = type(value)
    if kind in _AS_IS:  # the usual values, by their exact type (no isinstance chain)
        return value
    if kind is dict:
        return {str(k): to_json(v) for k, v in value.items()}
    if kind is uuid.UUID:
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    raise TypeError(f"an outbox payload cannot hold {type(value).__name__} values")


def emit(
    session: Session,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    dedupe_key: str | None = None,
    available_at: dt.datetime | None = None,
    tenant_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Record a side effect in the caller's transaction; it happens only if that commits.

    :param session: a tenant session (the row takes its tenant), or a platform session with
        ``tenant_id`` given.
    :param event_type: e.g. ``case.created``, ``deadline.breached`` (docs/background.md).
    :param payload: JSON data for the handlers; ids rather than personal data.
    :param dedupe_key: a second emit with the same key in the same tenant is ignored, even
        from a concurrent transaction (unique constraint).
    :param available_at: not before this time (UTC); default now.
    :returns: the new row's id, or None when ``dedupe_key`` was already used.
    """
    session_tenant = session.info.get(TENANT_KEY)
    tid = tenant_id or session_tenant
    if tid is None:
        raise TenantRequiredError("an outbox event needs a tenant")
    if session_tenant is not None and tid != session_tenant:
        raise CrossTenantWriteError("an outbox event of another tenant via a tenant session")
    values = _row(tid, event_type, payload, utcnow(), available_at, dedupe_key)
    if dedupe_key is None:
        session.execute(_INSERT, values)
        return cast(uuid.UUID, values["id"])
    # RETURNING, not rowcount: drivers need not report a row count for INSERT.
    return session.execute(_insert_once(session.get_bind().dialect.name), values).scalar()


def _row(
    tenant_id: uuid.UUID,
    event_type: str,
    payload: Mapping[str, Any],
    now: dt.datetime,
    available_at: dt.datetime | None = None,
    dedupe_key: str | None = None,
) -> dict[str, Any]:
    """The column values of a new pending outbox row (:data:`_EMIT_COLUMNS`)."""
    return {
        "tenant_id": tenant_id,
        "id": new_id(),
        "event_type": event_type,
        "payload": to_json(dict(payload)),
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "available_at": available_at or now,
        "dedupe_key": dedupe_key,
    }


_INSERT = insert(_TABLE)
"""An outbox row (the values are parameters: built once, compiled once)."""


def emit_many(
    session: Session,
    events: Sequence[tuple[str, Mapping[str, Any]]],
    batch: WriteBatch | None = None,
) -> None:
    """:func:`emit` for several ``(event_type, payload)`` of the session's tenant, without
    dedupe keys, written now with one statement (rows in the given order); with ``batch``,
    added to it (:mod:`core.db_batch`) instead.

    Unlike :func:`emit` it does not flush the session first (the rows refer to nothing the
    session holds): call it when the session's pending changes need no flush before it.
    """
    if not events:
        return
    tid = session.info.get(TENANT_KEY)
    if tid is None:
        raise TenantRequiredError("an outbox event needs a tenant")
    now = utcnow()
    rows = [_row(tid, event_type, payload, now) for event_type, payload in events]
    if batch is not None:
        batch.insert(_TABLE, rows)
    else:
        execute_insert(session.connection(), _TABLE, rows)


@functools.cache
def _insert_once(dialect: str) -> Any:
    """An outbox row unless its ``dedupe_key`` was used (built once per dialect)."""
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        upsert(_TABLE)
        .values({name: bindparam(name) for name in _EMIT_COLUMNS})
        .on_conflict_do_nothing(index_elements=["tenant_id", "dedupe_key"])
        .returning(_TABLE.c.id)
    )


_EMIT_COLUMNS = (
    "tenant_id",
    "id",
    "event_type",
    "payload",
    "status",
    "attempts",
    "created_at",
    "available_at",
    "dedupe_key",
)


# PostgreSQL: rows by id as a join with ``unnest`` of one array parameter. The text is the same
# for any number of ids, and the plan is a primary-key probe per id whatever the statistics say
# (with ``id = ANY(:ids)``, a fresh backlog without statistics made the planner scan every row
# of the tenant through another index that leads with ``tenant_id``).
PG_READ = text(
    """
    SELECT o.id, o.event_type, o.payload, o.created_at, o.attempts, o.status
    FROM unnest(CAST(:ids AS uuid[])) AS k(id)
    JOIN outbox AS o ON o.tenant_id = :tenant_id AND o.id = k.id
    """
)
"""The outbox rows ``:ids`` of tenant ``:tenant_id`` (the worker's read of a message)."""
_PG_DONE = text(
    """
    UPDATE outbox AS o SET status = 'done', processed_at = :now, last_error = NULL
    FROM unnest(CAST(:ids AS uuid[])) AS k(id)
    WHERE o.tenant_id = :tenant_id AND o.id = k.id AND o.status IN ('pending', 'dispatched')
    """
)
PG_DISPATCHED = text(
    """
    UPDATE outbox AS o SET status = 'dispatched', dispatched_at = :now, attempts = o.attempts + 1
    FROM unnest(CAST(:tenant_ids AS uuid[]), CAST(:ids AS uuid[])) AS k(tenant_id, id)
    WHERE o.tenant_id = k.tenant_id AND o.id = k.id AND o.status = 'pending'
    """
)
"""Mark the pending rows ``(:tenant_ids[i], :ids[i])`` dispatched (the relay, after publishing)."""


def mark_done(session: Session, tenant_id: uuid.UUID, outbox_ids: Sequence[uuid.UUID]) -> None:
    """Mark open (pending or dispatched) outbox rows ``done``, in the caller's transaction."""
    if not outbox_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            _PG_DONE, {"tenant_id": tenant_id, "ids": list(outbox_ids), "now": utcnow()}
        )
        return
    t = _TABLE.c
    session.execute(
        update(_TABLE)
        .where(
            t.tenant_id == tenant_id,
            t.id.in_(list(outbox_ids)),
            t.status.in_((OutboxStatus.PENDING.value, OutboxStatus.DISPATCHED.value)),
        )
        .values(status=OutboxStatus.DONE.value, processed_at=utcnow(), last_error=None)
    )


def relax_durability(session: Session) -> None:
    """Let this transaction commit without waiting for its WAL flush (PostgreSQL only).

    Only for bookkeeping whose loss after a server crash is harmless because it is redone
    idempotently: a delivery's outcome (the delivery is sent again with the same idempotency
    key), an outbox row marked done or dispatched (processed again, a no-op). Never for the
    change a request makes, nor for recording a delivery before it is sent.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


@dataclass(frozen=True)
class OutboxStats:
    """Counts by status and the age of the oldest due pending row (the relay's lag)."""

    by_status: Mapping[str, int]
    oldest_pending_age_seconds: float


def outbox_stats(session: Session, *, now: dt.datetime | None = None) -> OutboxStats:
    """Outbox figures for the session's scope (one tenant, or all on a platform session)."""
    now = now or utcnow()
    counts = dict(
        session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all()
    )
    oldest = session.scalar(
        select(func.min(OutboxEvent.available_at)).where(
            OutboxEvent.status == OutboxStatus.PENDING.value, OutboxEvent.available_at <= now
        )
    )
    age = max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0
    return OutboxStats(
        by_status={s.value: int(counts.get(s.value, 0)) for s in OutboxStatus},
        oldest_pending_age_seconds=age,
    )


def purge_done(session: Session, *, older_than: dt.datetime) -> int:
    """Delete ``done`` rows processed before ``older_than`` (retention); returns the count.

    Rows still referenced by the delivery log are kept (the log outlives them only when
    the delivery log is purged first).
    """
    from core.notifications.models import Delivery

    referenced = exists().where(
        Delivery.tenant_id == OutboxEvent.tenant_id, Delivery.outbox_id == OutboxEvent.id
    )
    result = session.execute(
        delete(OutboxEvent)
        .where(
            OutboxEvent.status == OutboxStatus.DONE.value,
            OutboxEvent.processed_at < older_than,
            ~referenced,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
