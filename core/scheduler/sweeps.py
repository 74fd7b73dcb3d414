"""The periodic jobs' bodies: deadline sweep (reminders, breaches), daily digest, retention.

Each finds its work across tenants with one indexed query on the platform path, then acts
per tenant in a tenant transaction, where a conditional update marks the row handled and
the notification goes into the outbox in the same transaction (with a dedupe key, so even
two sweeps racing emit it once).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy import select, update

from core.cases.models import Case, CaseClock
from core.db import Database
from core.orgs.models import OrgUnit
from core.outbox.services import emit, purge_done
from core.scheduler.jobs import JobContext
from core.scheduler.models import ClockReminder
from core.tenancy.models import Tenant

log = structlog.get_logger("insurdesk.scheduler")

BATCH = 500
DIGEST_HORIZON = dt.timedelta(days=1)
DIGEST_MAX_CASES = 200
RETENTION = dt.timedelta(days=7)


def _by_tenant(rows: Iterable[Any]) -> dict[uuid.UUID, list[Any]]:
    grouped: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.tenant_id].append(row)
    return grouped


def plugin_contacts(
    session: Any, plugins: Any, clock: CaseClock, now: dt.datetime, *, breached: bool
) -> list[str]:
    """Whom the plugins enabled at the case's unit want told (``insurdesk_deadline_approached``
    / ``insurdesk_deadline_breached`` follow-ups of kind notification or escalation).

    A failing plugin is logged with its name and leaves the others' contacts: the
    escalation to the handler and up the tree goes out regardless.
    """
    if plugins is None:
        return []
    from core.cases.clocks import to_state
    from core.cases.flows import calendar_for, facts_of
    from core.plugins.flows import PluginFailed, follow_ups_on_deadline

    case = session.get(Case, (clock.tenant_id, clock.case_id))
    unit = session.get(OrgUnit, (clock.tenant_id, case.unit_id)) if case else None
    if case is None or unit is None:
        return []
    try:
        tenant = session.get(Tenant, clock.tenant_id)
        planned = follow_ups_on_deadline(
            plugins.for_unit(clock.tenant_id, unit.path),
            facts_of(session, case, unit),
            to_state(clock),
            now,
            calendar_for(session, tenant.time_zone if tenant else "Asia/Shanghai"),
            breached=breached,
        )
    except PluginFailed as exc:
        log.error(
            "deadline_follow_ups_failed",
            plugin=exc.plugin,
            hook=exc.hook,
            case=str(case.id),
            error=exc.detail,
        )
        return []
    return sorted(
        {r for f in planned if f.kind in ("notification", "escalation") for r in f.recipients}
    )


def _clock_payload(clock: CaseClock) -> dict[str, Any]:
    return {
        "id": clock.id,
        "name": clock.clock,
        "due_at": clock.due_at,
        "citation": clock.citation,
        "statutory": clock.statutory,
    }


# -- breaches ---------------------------------------------------------------------------------


def escalate_breaches(db: Database, now: dt.datetime, plugins: Any = None) -> int:
    """Emit ``deadline.breached`` once for every running clock past its due; returns how many.

    Found by the partial index on ``case_clocks.due_at`` (running clocks), never a scan.
    """
    sent = 0
    while True:
        with db.platform_session() as session:
            rows = session.execute(
                select(CaseClock.tenant_id, CaseClock.id)
                .where(
                    CaseClock.status == "running",
                    CaseClock.due_at <= now,
                    CaseClock.breach_notified_at.is_(None),
                )
                .order_by(CaseClock.due_at)
                .limit(BATCH)
            ).all()
        if not rows:
            return sent
        for tenant_id, items in _by_tenant(rows).items():
            with db.tenant_transaction(tenant_id) as session:
                for row in items:
                    sent += _escalate_one(session, tenant_id, row.id, now, plugins)
        if len(rows) < BATCH:
            return sent


def _escalate_one(
    session: Any, tenant_id: uuid.UUID, clock_id: uuid.UUID, now: dt.datetime, plugins: Any
) -> int:
    marked = session.execute(
        update(CaseClock)
        .where(
            CaseClock.tenant_id == tenant_id,
            CaseClock.id == clock_id,
            CaseClock.status == "running",
            CaseClock.breach_notified_at.is_(None),
        )
        .values(breach_notified_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if marked != 1:
        return 0
    clock = session.get(CaseClock, (tenant_id, clock_id))
    contacts = plugin_contacts(session, plugins, clock, now, breached=True)
    emit(
        session,
        "deadline.breached",
        {"case_id": clock.case_id, "clock": _clock_payload(clock), "contacts": contacts},
        dedupe_key=f"breach:{clock.id}:{clock.due_at.isoformat()}",
    )
    return 1


# -- reminders --------------------------------------------------------------------------------


def send_reminders(db: Database, now: dt.datetime, plugins: Any = None) -> int:
    """Emit ``deadline.reminder`` for every reminder that came due; returns how many.

    A reminder whose clock stopped (met, cancelled, paused) or already passed its due is
    cancelled instead: a case resolved before its reminder gets none.
    """
    sent = 0
    while True:
        with db.platform_session() as session:
            rows = session.execute(
                select(ClockReminder.tenant_id, ClockReminder.id)
                .where(ClockReminder.status == "pending", ClockReminder.remind_at <= now)
                .order_by(ClockReminder.remind_at)
                .limit(BATCH)
            ).all()
        if not rows:
            return sent
        for tenant_id, items in _by_tenant(rows).items():
            with db.tenant_transaction(tenant_id) as session:
                for row in items:
                    sent += _remind_one(session, tenant_id, row.id, now, plugins)
        if len(rows) < BATCH:
            return sent


def _remind_one(
    session: Any, tenant_id: uuid.UUID, reminder_id: uuid.UUID, now: dt.datetime, plugins: Any
) -> int:
    reminder = session.get(ClockReminder, (tenant_id, reminder_id))
    if reminder is None or reminder.status != "pending":
        return 0
    clock = session.get(CaseClock, (tenant_id, reminder.clock_id))
    due = clock is not None and clock.status == "running" and clock.due_at > now
    marked = session.execute(
        update(ClockReminder)
        .where(
            ClockReminder.tenant_id == tenant_id,
            ClockReminder.id == reminder_id,
            ClockReminder.status == "pending",
        )
        .values(status="sent" if due else "cancelled", handled_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if marked != 1 or not due:
        return 0
    emit(
        session,
        "deadline.reminder",
        {
            "case_id": clock.case_id,
            "clock": _clock_payload(clock),
            "fraction": reminder.fraction,
            "contacts": plugin_contacts(session, plugins, clock, now, breached=False),
        },
        dedupe_key=f"reminder:{clock.id}:{clock.due_at.isoformat()}",
    )
    return 1


def deadline_sweep(ctx: JobContext) -> None:
    """The every-minute sweep: reminders that came due, then breaches."""
    reminded = send_reminders(ctx.db, ctx.now, ctx.plugins)
    breached = escalate_breaches(ctx.db, ctx.now, ctx.plugins)
    if reminded or breached:
        log.info("deadline_sweep", reminders=reminded, breaches=breached)


# -- digest -----------------------------------------------------------------------------------


def daily_digest(ctx: JobContext) -> None:
    """One ``digest.daily`` per unit with running clocks due within a day of the slot (or past)."""
    horizon = ctx.slot + DIGEST_HORIZON
    with ctx.db.platform_session() as session:
        rows = session.execute(
            select(
                CaseClock.tenant_id,
                Case.unit_id,
                Case.number,
                CaseClock.clock,
                CaseClock.due_at,
            )
            .join(Case, (Case.tenant_id == CaseClock.tenant_id) & (Case.id == CaseClock.case_id))
            .where(CaseClock.status == "running", CaseClock.due_at <= horizon)
            .order_by(CaseClock.due_at)
        ).all()
    units: dict[tuple[uuid.UUID, uuid.UUID], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        units[(row.tenant_id, row.unit_id)].append(
            {
                "number": row.number,
                "clock": row.clock,
                "due_at": row.due_at,
                "breached": row.due_at <= ctx.slot,
            }
        )
    day = ctx.slot.date().isoformat()
    for tenant_id in {t for t, _ in units}:
        with ctx.db.tenant_transaction(tenant_id) as session:
            for (tid, unit_id), cases in units.items():
                if tid != tenant_id:
                    continue
                unit = session.get(OrgUnit, (tenant_id, unit_id))
                emit(
                    session,
                    "digest.daily",
                    {
                        "unit_id": unit_id,
                        "unit_name": unit.name if unit else "",
                        "day": day,
                        "total": len(cases),
                        "cases": cases[:DIGEST_MAX_CASES],
                    },
                    dedupe_key=f"digest:{unit_id}:{day}",
                )


# -- retention --------------------------------------------------------------------------------


def outbox_retention(ctx: JobContext) -> None:
    """Delete processed outbox rows older than :data:`RETENTION` that no delivery refers to."""
    with ctx.db.platform_transaction() as session:
        removed = purge_done(session, older_than=ctx.now - RETENTION)
    if removed:
        log.info("outbox_purged", rows=removed)
