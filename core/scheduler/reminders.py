"""Reminder times of deadline clocks, kept in step with the clocks in the same transaction.

Whenever a :class:`~core.cases.models.CaseClock` is inserted, or its due, start, pauses or
status change, the flush upserts its :class:`~core.scheduler.models.ClockReminder`:
``remind_at`` is the point where :data:`REMINDER_FRACTION` of the clock's running time is
used (paused time does not count). When the due moved (an extension, a restart), a reminder
already sent is armed again for the new due.

TODO(plugins): the fraction is the platform default; no hook lets a policy plugin set it yet
(an ``insurdesk_reminder_fraction`` hook, or a ``reminder_fraction`` setting, would).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, case, event, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from core.cases.models import CaseClock
from core.db import new_id
from core.scheduler.models import ClockReminder

REMINDER_FRACTION = 0.8
"""Remind the handler when this share of a clock's running time is used."""

_WATCHED = ("due_at", "started_at", "paused_seconds", "status")
_TABLE = cast(Table, ClockReminder.__table__)


def remind_at(
    started_at: dt.datetime,
    due_at: dt.datetime,
    paused_seconds: int = 0,
    fraction: float = REMINDER_FRACTION,
) -> dt.datetime:
    """When ``fraction`` of the running time from ``started_at`` to ``due_at`` is used."""
    paused = dt.timedelta(seconds=paused_seconds or 0)
    available = max(due_at - started_at - paused, dt.timedelta(0))
    return started_at + paused + available * fraction


def _upsert(connection: Connection, clock: CaseClock) -> None:
    when = remind_at(clock.started_at, clock.due_at, clock.paused_seconds or 0)
    values = {
        "tenant_id": clock.tenant_id,
        "id": new_id(),
        "clock_id": clock.id,
        "case_id": clock.case_id,
        "remind_at": when,
        "due_at": clock.due_at,
        "fraction": REMINDER_FRACTION,
        "status": "pending",
    }
    upsert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    stmt = upsert(_TABLE).values(**values)
    moved = _TABLE.c.due_at != stmt.excluded.due_at
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "clock_id"],
        set_={
            "remind_at": stmt.excluded.remind_at,
            "due_at": stmt.excluded.due_at,
            "status": case((moved, "pending"), else_=_TABLE.c.status),
            "handled_at": case((moved, None), else_=_TABLE.c.handled_at),
        },
    )
    connection.execute(stmt)


@event.listens_for(CaseClock, "after_insert")
def _clock_inserted(_mapper: Any, connection: Connection, clock: CaseClock) -> None:
    _upsert(connection, clock)


@event.listens_for(CaseClock, "after_update")
def _clock_updated(_mapper: Any, connection: Connection, clock: CaseClock) -> None:
    state = inspect(clock)
    if any(state.attrs[name].history.has_changes() for name in _WATCHED):
        _upsert(connection, clock)
