"""Between the deadline engine's :class:`ClockState` and the :class:`CaseClock` rows.

The engine is pure; this module turns its states into rows and back, exactly (the full
history of pauses, extensions and restarts travels in ``CaseClock.history``). Database
statuses add two to the engine's: ``cancelled`` (the clock is no longer owed, e.g. the case
was withdrawn) and ``window`` (a period the *customer* has, such as the 30 days to ask for a
review: it runs like a clock but is never a breach, so it stays out of the due-time index).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from core.cases.models import CaseClock
from core.db import new_object
from core.deadlines import ClockState, DeadlineRule, Extension, Pause, Restart

WINDOW_SUFFIX = "_window"
"""Clocks named ``*_window`` are the customer's windows, not obligations of the tenant."""


def is_window(clock: str) -> bool:
    """Whether ``clock`` is a customer's window (never breached) rather than a deadline."""
    return clock.endswith(WINDOW_SUFFIX)


FIRST_CONTACT_SUFFIX = ".first_contact"
"""Clocks named ``*.first_contact`` (a policy's "contact the customer within N hours") are met
by the first notice to the customer the case records: a notice on its own
(``POST /cases/{id}/notices``) or one sent with a transition (``notice_channel``)."""


def is_first_contact(clock: str) -> bool:
    """Whether ``clock`` is met by the first notice to the customer."""
    return clock.endswith(FIRST_CONTACT_SUFFIX)


def _t(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _p(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(DeadlineRule))


def rule_to_json(rule: DeadlineRule) -> dict[str, Any]:
    """A rule as JSON-ready data (its fields are strings, numbers and booleans: what
    ``dataclasses.asdict`` gives, without its deep copy of each)."""
    return {name: getattr(rule, name) for name in _RULE_FIELDS}


def rule_from_json(data: dict[str, Any]) -> DeadlineRule:
    """The rule stored by :func:`rule_to_json`."""
    return DeadlineRule(**data)


def _pause_json(p: Pause) -> dict[str, Any]:
    return {"begin": _t(p.begin), "end": _t(p.end), "reason": p.reason}


def _pause(d: dict[str, Any]) -> Pause:
    return Pause(_p(d["begin"]), _p(d["end"]), d["reason"])


def _ext_json(e: Extension) -> dict[str, Any]:
    return {
        "to_amount": e.to_amount,
        "unit": e.unit,
        "reason": e.reason,
        "approved_by": e.approved_by,
        "at": _t(e.at),
        "citation": e.citation,
    }


def _ext(d: dict[str, Any]) -> Extension:
    return Extension(
        to_amount=d["to_amount"],
        unit=d["unit"],
        reason=d["reason"],
        approved_by=d["approved_by"],
        at=_p(d["at"]),
        citation=d["citation"],
    )


def _restart_json(r: Restart) -> dict[str, Any]:
    return {
        "at": _t(r.at),
        "reason": r.reason,
        "citation": r.citation,
        "previous_started_at": _t(r.previous_started_at),
        "previous_due_at": _t(r.previous_due_at),
        "previous_amount": r.previous_amount,
        "previous_pauses": [_pause_json(p) for p in r.previous_pauses],
        "previous_extensions": [_ext_json(e) for e in r.previous_extensions],
    }


def _restart(d: dict[str, Any]) -> Restart:
    return Restart(
        at=_p(d["at"]),
        reason=d["reason"],
        citation=d["citation"],
        previous_started_at=_p(d["previous_started_at"]),
        previous_due_at=_p(d["previous_due_at"]),
        previous_amount=d["previous_amount"],
        previous_pauses=tuple(_pause(p) for p in d["previous_pauses"]),
        previous_extensions=tuple(_ext(e) for e in d["previous_extensions"]),
    )


def to_state(row: CaseClock) -> ClockState:
    """The engine's state of a stored clock."""
    h = row.history
    status = row.status
    if status == "window":
        status = "running"
    elif status == "cancelled":
        status = "met"
    return ClockState(
        clock=row.clock,
        rule=rule_from_json(h["rule"]),
        amount=row.amount,
        unit=row.unit,  # type: ignore[arg-type]
        started_at=row.started_at,
        due_at=row.due_at,
        last_day=row.last_day,
        provisional=row.provisional,
        status=status,  # type: ignore[arg-type]
        paused_at=row.paused_at,
        pause_reason=h.get("pause_reason", ""),
        paused_total=dt.timedelta(seconds=h.get("paused_total", 0.0)),
        pauses=tuple(_pause(p) for p in h.get("pauses", [])),
        extensions=tuple(_ext(e) for e in h.get("extensions", [])),
        restarts=tuple(_restart(r) for r in h.get("restarts", [])),
        completed_at=row.completed_at,
        reminder_fraction=h.get("reminder_fraction"),
    )


def apply_state(row: CaseClock, state: ClockState) -> CaseClock:
    """Write ``state`` into ``row`` (columns and history); returns the row."""
    for name, value in state_columns(state).items():
        setattr(row, name, value)
    return row


def state_columns(state: ClockState) -> dict[str, Any]:
    """The columns (and history) of a clock row that hold ``state``."""
    rule = state.rule
    status: str = state.status
    if status == "running" and is_window(state.clock):
        status = "window"
    history: dict[str, Any] = {
        "rule": rule_to_json(rule),
        "pause_reason": state.pause_reason,
        "paused_total": state.paused_total.total_seconds(),
        "pauses": [_pause_json(p) for p in state.pauses],
        "extensions": [_ext_json(e) for e in state.extensions],
        "restarts": [_restart_json(r) for r in state.restarts],
    }
    if state.reminder_fraction is not None:
        history["reminder_fraction"] = state.reminder_fraction
    return {
        "clock": state.clock,
        "citation": rule.citation,
        "source": rule.source,
        "statutory": rule.statutory,
        "amount": state.amount,
        "unit": state.unit,
        "started_at": state.started_at,
        "due_at": state.due_at,
        "last_day": state.last_day,
        "provisional": state.provisional,
        "status": status,
        "paused_at": state.paused_at,
        "paused_seconds": int(state.paused_total.total_seconds()),
        "extensions": len(state.extensions),
        "completed_at": state.completed_at,
        "history": history,
    }


def new_row(state: ClockState) -> CaseClock:
    """A new (unsaved) row for ``state``; the caller sets ``case_id``."""
    return new_object(CaseClock, **state_columns(state))


def summary(row: CaseClock) -> dict[str, Any]:
    """What a timeline event records about a clock."""
    return {
        "clock": row.clock,
        "due_at": _t(row.due_at),
        "last_day": row.last_day.isoformat(),
        "status": row.status,
        "amount": row.amount,
        "unit": row.unit,
        "citation": row.citation,
        "source": row.source,
        "provisional": row.provisional,
    }
