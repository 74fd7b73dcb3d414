"""The scheduler's claims: one row per job and slot, the unique key that makes replicas safe."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, new_id, tenant_fk, utcnow


class SchedulerRun(Base):
    """A run of a periodic job for one slot (a platform table: jobs work across tenants).

    Inserting the row is the claim: ``UNIQUE (job, slot)`` lets exactly one scheduler replica
    insert it. A run whose scheduler died stays ``running`` until ``lease_until``; then another
    replica takes it over with a conditional update (again, one winner).
    """

    __tablename__ = "scheduler_runs"
    __table_args__ = (UniqueConstraint("job", "slot"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job: Mapped[str] = mapped_column(String(100))
    slot: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="running")
    """``running``, ``done`` or ``failed``."""
    owner: Mapped[str] = mapped_column(String(200))
    """``host:pid:instance`` of the scheduler that claimed (or took over) the run."""
    attempts: Mapped[int] = mapped_column(default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class ClockReminder(TenantScoped, Base):
    """When to remind a case's handler of a deadline clock: at a fraction of its running time.

    Kept in step with ``case_clocks`` by :mod:`core.scheduler.reminders` (ORM events on
    :class:`~core.cases.models.CaseClock`, in the same transaction as the clock change), so the
    sweep finds due reminders with an index range scan on ``remind_at`` and never scans the
    clocks. A reminder is sent once per due time: a clock extended after its reminder gets a
    new one for the new due.
    """

    __tablename__ = "clock_reminders"
    __table_args__ = (
        tenant_fk("clock_id", "case_clocks"),
        tenant_fk("case_id", "cases"),
        UniqueConstraint("tenant_id", "clock_id"),
        Index(
            "ix_clock_reminders_due",
            "remind_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    clock_id: Mapped[uuid.UUID]
    case_id: Mapped[uuid.UUID]
    remind_at: Mapped[datetime]
    due_at: Mapped[datetime]
    """The clock's due when ``remind_at`` was computed."""
    fraction: Mapped[float] = mapped_column(default=0.8)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``sent`` (the reminder event is in the outbox) or ``cancelled`` (the clock
    stopped first: no reminder)."""
    handled_at: Mapped[datetime | None] = mapped_column(default=None)
