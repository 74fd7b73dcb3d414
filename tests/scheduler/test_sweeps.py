"""The deadline sweep and the digest: reminders at a fraction of each clock, escalation of
breaches up the organization tree, a daily digest per unit; found by indexes on due times."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, text

from core.cases.models import CaseClock
from core.db import Database, utcnow
from core.notifications.delivery import Notifier
from core.notifications.models import Delivery
from core.notifications.planner import Planner
from core.notifications.transports import Transports
from core.outbox.models import OutboxEvent
from core.outbox.processing import EventView
from core.people.services import assign_role, create_person, get_role_by_key
from core.scheduler.jobs import JobContext
from core.scheduler.models import ClockReminder
from core.scheduler.reminders import remind_at
from core.scheduler.sweeps import daily_digest, escalate_breaches, send_reminders
from tests.factories import TenantWorld
from tests.outbox.fixtures import SmtpSink, WebhookSink, local_channels, must_get

NOW = utcnow()


def add_clock(
    db: Database,
    world: TenantWorld,
    *,
    started: dt.datetime,
    due: dt.datetime,
    status: str = "running",
    case: str = "bj",
) -> uuid.UUID:
    """A complaint-decision clock on one of the world's cases; returns its id."""
    with db.tenant_transaction(world.id) as session:
        clock = CaseClock(
            case_id=world.cases[case].id,
            clock="complaint.decision",
            citation="2020-complaints/18",
            source="statutory_cn",
            statutory=True,
            amount=15,
            unit="natural_days",
            started_at=started,
            due_at=due,
            last_day=due.date(),
            status=status,
            history={},
        )
        session.add(clock)
        session.flush()
        return clock.id


def events(db: Database, world: TenantWorld, event_type: str) -> list[OutboxEvent]:
    """The tenant's outbox rows of ``event_type``."""
    with db.tenant_session(world.id) as session:
        return list(
            session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == event_type)).all()
        )


def reminder_of(db: Database, world: TenantWorld, clock_id: uuid.UUID) -> ClockReminder:
    """The reminder row of a clock."""
    with db.tenant_session(world.id) as session:
        return session.scalars(
            select(ClockReminder).where(ClockReminder.clock_id == clock_id)
        ).one()


def test_the_reminder_time_is_the_fraction_of_the_running_time() -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert remind_at(start, start + dt.timedelta(days=10)) == start + dt.timedelta(days=8)
    # Two paused days count neither as used nor as available.
    paused = int(dt.timedelta(days=2).total_seconds())
    assert remind_at(start, start + dt.timedelta(days=12), paused) == start + dt.timedelta(
        days=2 + 8
    )


def test_a_reminder_is_sent_once_when_the_fraction_is_reached(
    bg_db: Database, world: TenantWorld
) -> None:
    near = add_clock(
        bg_db, world, started=NOW - dt.timedelta(days=11), due=NOW + dt.timedelta(days=1)
    )
    early = add_clock(
        bg_db, world, started=NOW - dt.timedelta(days=1), due=NOW + dt.timedelta(days=14)
    )
    send_reminders(bg_db, NOW)
    send_reminders(bg_db, NOW + dt.timedelta(seconds=30))
    sent = events(bg_db, world, "deadline.reminder")
    assert [e.payload["clock"]["id"] for e in sent] == [str(near)]
    assert sent[0].payload["case_id"] == str(world.cases["bj"].id)
    assert reminder_of(bg_db, world, near).status == "sent"
    assert reminder_of(bg_db, world, early).status == "pending"


def test_a_case_resolved_before_its_reminder_gets_none(
    bg_db: Database, world: TenantWorld, smtp: SmtpSink
) -> None:
    met = add_clock(
        bg_db,
        world,
        started=NOW - dt.timedelta(days=11),
        due=NOW + dt.timedelta(days=1),
        status="met",
    )
    send_reminders(bg_db, NOW)
    assert events(bg_db, world, "deadline.reminder") == []
    assert reminder_of(bg_db, world, met).status == "cancelled"

    # Resolved after the sweep emitted the reminder but before a worker got to it: nothing.
    late = add_clock(
        bg_db, world, started=NOW - dt.timedelta(days=11), due=NOW + dt.timedelta(days=1)
    )
    send_reminders(bg_db, NOW)
    (event,) = events(bg_db, world, "deadline.reminder")
    with bg_db.tenant_transaction(world.id) as session:
        must_get(session, CaseClock, world.id, late).status = "met"
    notifier = Notifier(bg_db, Planner(local_channels(smtp, None)), Transports())
    notifier.handle_event(EventView.of(event))
    with bg_db.tenant_session(world.id) as session:
        assert session.scalars(select(Delivery).where(Delivery.outbox_id == event.id)).all() == []
    assert smtp.messages == []


def test_an_extension_arms_the_reminder_again_for_the_new_due(
    bg_db: Database, world: TenantWorld
) -> None:
    clock_id = add_clock(
        bg_db, world, started=NOW - dt.timedelta(days=13), due=NOW + dt.timedelta(days=2)
    )
    send_reminders(bg_db, NOW)
    assert reminder_of(bg_db, world, clock_id).status == "sent"
    with bg_db.tenant_transaction(world.id) as session:
        clock = must_get(session, CaseClock, world.id, clock_id)
        clock.due_at = clock.due_at + dt.timedelta(days=15)  # extended to 30 days
        clock.extensions = 1
    reminder = reminder_of(bg_db, world, clock_id)
    assert reminder.status == "pending"
    assert reminder.remind_at > NOW
    send_reminders(bg_db, reminder.remind_at + dt.timedelta(seconds=1))
    assert len(events(bg_db, world, "deadline.reminder")) == 2


def _person(db: Database, world: TenantWorld, username: str, role: str, unit: str) -> None:
    with db.tenant_transaction(world.id) as session:
        person = create_person(
            session,
            username=username,
            display_name=username,
            email=f"{username}@{world.tenant.slug}.example.com",
        )
        role_obj = get_role_by_key(session, role)
        assert role_obj is not None
        assign_role(session, person_id=person.id, role_id=role_obj.id, unit_id=world.units[unit].id)


def test_a_breach_is_escalated_once_up_the_organization_tree(
    bg_db: Database, world: TenantWorld, smtp: SmtpSink, webhooks: WebhookSink
) -> None:
    _person(bg_db, world, "manager_co", "branch_manager", "company")  # above bj, none at bj
    _person(bg_db, world, "manager_sh", "branch_manager", "sh")  # another branch: not asked
    _person(bg_db, world, "kefuchu", "cs_division", "group")  # the group's 客服处
    clock_id = add_clock(
        bg_db, world, started=NOW - dt.timedelta(days=16), due=NOW - dt.timedelta(hours=1)
    )
    escalate_breaches(bg_db, NOW)
    escalate_breaches(bg_db, NOW + dt.timedelta(minutes=1))
    (event,) = events(bg_db, world, "deadline.breached")
    assert event.payload["clock"]["id"] == str(clock_id)
    with bg_db.tenant_session(world.id) as session:
        assert must_get(session, CaseClock, world.id, clock_id).breach_notified_at is not None

    notifier = Notifier(bg_db, Planner(local_channels(smtp, webhooks)), Transports())
    notifier.handle_event(EventView.of(event))
    with bg_db.tenant_session(world.id) as session:
        rows = session.scalars(select(Delivery).where(Delivery.outbox_id == event.id)).all()
    assert sorted((r.audience, r.channel, r.status) for r in rows) == [
        ("cs_division", "email", "sent"),
        ("endpoint", "webhook", "sent"),
        ("handler", "email", "sent"),
        ("manager", "email", "sent"),
    ]
    slug = world.tenant.slug
    assert sorted(r for m in smtp.messages for r in m.rcpt) == [
        f"agent_bj@{slug}.example.com",
        f"kefuchu@{slug}.example.com",
        f"manager_co@{slug}.example.com",
    ]
    assert all("超时" in m.subject for m in smtp.messages)


def test_the_daily_digest_lists_each_units_cases_near_or_past_due(
    bg_db: Database, world: TenantWorld
) -> None:
    slot = dt.datetime.combine(NOW.date(), dt.time(), tzinfo=dt.UTC)
    add_clock(bg_db, world, started=slot - dt.timedelta(days=16), due=slot - dt.timedelta(hours=2))
    add_clock(bg_db, world, started=slot - dt.timedelta(days=14), due=slot + dt.timedelta(hours=20))
    add_clock(bg_db, world, started=slot, due=slot + dt.timedelta(days=10))
    add_clock(
        bg_db,
        world,
        started=slot - dt.timedelta(days=14),
        due=slot + dt.timedelta(hours=3),
        case="sh",
    )
    ctx = JobContext(db=bg_db, settings=None, slot=slot, now=slot)
    daily_digest(ctx)
    daily_digest(ctx)  # the same day twice: still one digest per unit
    digests = {e.payload["unit_id"]: e.payload for e in events(bg_db, world, "digest.daily")}
    bj, sh = str(world.units["bj"].id), str(world.units["sh"].id)
    assert set(digests) == {bj, sh}
    assert [c["breached"] for c in digests[bj]["cases"]] == [True, False]
    assert digests[sh]["total"] == 1


def test_due_clocks_and_reminders_are_found_by_index_not_by_scan(pg_database: Database) -> None:
    queries = {
        "ix_case_clocks_open_due": "SELECT id FROM case_clocks WHERE status = 'running' "
        "AND due_at <= now() AND breach_notified_at IS NULL ORDER BY due_at LIMIT 500",
        "ix_clock_reminders_due": "SELECT id FROM clock_reminders WHERE status = 'pending' "
        "AND remind_at <= now() ORDER BY remind_at LIMIT 500",
    }
    with pg_database.admin_engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # can the index serve it at all?
        for index, sql in queries.items():
            plan = "\n".join(conn.execute(text(f"EXPLAIN {sql}")).scalars())
            assert index in plan, plan
