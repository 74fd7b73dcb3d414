"""Reminder times of deadline clocks, kept in step with the clocks in the same transaction.

Whenever a :class:`~core.cases.models.CaseClock` is inserted, or its due, start, pauses or
status change, the flush upserts its :class:`~core.scheduler.models.ClockReminder`:
``remind_at`` is the point where the clock's reminder fraction of its running time is used
(paused time does not count). The fraction is the one the plugins set when the clock started
(``insurdesk_reminder_fraction``, the smallest answer wins; kept in the clock's history, so an
extension or a restart keeps it), else :data:`REMINDER_FRACTION`. When the due moved (an
extension, a restart), a reminder already sent is armed again for the new due.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, case, event, inspect
from sqlalchemy.engine import Connection

from core.cases.models import CaseClock
from core.db import new_id
from core.db_batch import WriteBatch, execute_insert
from core.deadlines import DEFAULT_REMINDER_FRACTION
from core.scheduler.models import ClockReminder

REMINDER_FRACTION = DEFAULT_REMINDER_FRACTION
"""Remind the handler when this share of a clock's running time is used (the platform
default, when no plugin sets one)."""

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


def fraction_of(clock: CaseClock) -> float:
    """The reminder fraction of ``clock``: the plugins' (in its history), else the default."""
    value = (clock.history or {}).get("reminder_fraction")
    return float(value) if isinstance(value, int | float) and 0 < value < 1 else REMINDER_FRACTION


def _values(clock: CaseClock) -> dict[str, Any]:
    fraction = fraction_of(clock)
    return {
        "tenant_id": clock.tenant_id,
        "id": new_id(),
        "clock_id": clock.id,
        "case_id": clock.case_id,
        "remind_at": remind_at(clock.started_at, clock.due_at, clock.paused_seconds or 0, fraction),
        "due_at": clock.due_at,
        "fraction": fraction,
        "status": "pending",
    }


def _upsert(connection: Connection, clock: CaseClock) -> None:
    execute_insert(connection, _TABLE, [_values(clock)], _on_conflict)


def upsert_reminders(
    connection: Connection, clocks: Sequence[CaseClock], batch: WriteBatch | None = None
) -> None:
    """The reminders of ``clocks`` (new clocks written without a flush, whose ``after_insert``
    does not run: :func:`core.db.insert_new`), with one statement; with ``batch``, added to it
    (:mod:`core.db_batch`) instead."""
    if not clocks:
        return
    rows = [_values(c) for c in clocks]
    if batch is not None:
        batch.insert(_TABLE, rows, on_conflict=_on_conflict)
    else:
        execute_insert(connection, _TABLE, rows, _on_conflict)


def _on_conflict(stmt: Any) -> Any:
    """``stmt`` (a dialect's ``INSERT INTO clock_reminders``) as the reminder upsert: a clock's
    reminder follows its due; one already sent is armed again when the due moved."""
    moved = _TABLE.c.due_at != stmt.excluded.due_at
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "clock_id"],
        set_={
            "remind_at": stmt.excluded.remind_at,
            "due_at": stmt.excluded.due_at,
            "fraction": stmt.excluded.fraction,
            "status": case((moved, "pending"), else_=_TABLE.c.status),
            "handled_at": case((moved, None), else_=_TABLE.c.handled_at),
        },
    )


@event.listens_for(CaseClock, "after_insert")
def _clock_inserted(_mapper: Any, connection: Connection, clock: CaseClock) -> None:
    _upsert(connection, clock)


@event.listens_for(CaseClock, "after_update")
def _clock_updated(_mapper: Any, connection: Connection, clock: CaseClock) -> None:
    state = inspect(clock)
    if any(state.attrs[name].history.has_changes() for name in _WATCHED):
        _upsert(connection, clock)
