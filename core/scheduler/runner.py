"""The scheduler loop: find due slots, claim each in the database, run the job, record it.

Correct with any number of replicas: a slot is run by whoever inserts its ``(job, slot)``
row; the others' inserts do nothing. A scheduler that was down catches up: the slots between
the job's newest recorded slot and now are due (all of them, or only the newest, as the job
says). A run left ``running`` by a dead scheduler is taken over once its lease has passed.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import cast

import structlog
from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import Database, new_id, utcnow
from core.scheduler.jobs import Job, JobContext, slots_between
from core.scheduler.models import SchedulerRun

log = structlog.get_logger("insurdesk.scheduler")
_TABLE = cast(Table, SchedulerRun.__table__)


def default_owner() -> str:
    """``host:pid:instance``: who claimed a run (for the log and the table)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Scheduler:
    """Runs :class:`Job` slots (see the module docstring).

    :param interval: seconds between looks for due slots.
    :param clock: the current time (tests move it).
    """

    def __init__(
        self,
        db: Database,
        jobs: Sequence[Job],
        *,
        owner: str | None = None,
        interval: float = 5.0,
        clock: Callable[[], dt.datetime] = utcnow,
        settings: object = None,
        plugins: object = None,
    ) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"two jobs share a name: {names}")
        self.db = db
        self.jobs = tuple(jobs)
        self.owner = owner or default_owner()
        self.interval = interval
        self.clock = clock
        self.settings = settings
        self.plugins = plugins
        self.wake = threading.Event()
        self.ran: list[tuple[str, dt.datetime]] = []
        """Slots this instance ran (tests and logs)."""

    # -- claims ---------------------------------------------------------------------------------

    def due_slots(self, job: Job, now: dt.datetime) -> list[dt.datetime]:
        """Slots of ``job`` to run now: missed ones since its newest recorded slot, and
        runs whose owner died (lease passed)."""
        with self.db.platform_session() as session:
            last = session.scalar(
                select(func.max(SchedulerRun.slot)).where(SchedulerRun.job == job.name)
            )
            orphaned = session.scalars(
                select(SchedulerRun.slot).where(
                    SchedulerRun.job == job.name,
                    SchedulerRun.status == "running",
                    SchedulerRun.lease_until < now,
                )
            ).all()
        missed = slots_between(job, last, now)
        missed = missed[-1:] if job.catch_up == "latest" else missed[-job.max_catch_up :]
        return sorted({*orphaned, *missed})

    def claim(self, job: Job, slot: dt.datetime, now: dt.datetime) -> bool:
        """Claim ``(job, slot)`` for this scheduler; True if it won (the database decides)."""
        lease_until = now + job.lease
        with self.db.platform_session() as session, session.begin():
            dialect = session.get_bind().dialect.name
            upsert = pg_insert if dialect == "postgresql" else sqlite_insert
            inserted = session.execute(
                upsert(_TABLE)
                .values(
                    id=new_id(),
                    job=job.name,
                    slot=slot,
                    status="running",
                    owner=self.owner,
                    attempts=1,
                    started_at=now,
                    lease_until=lease_until,
                )
                .on_conflict_do_nothing(index_elements=["job", "slot"])
                .returning(_TABLE.c.id)
            ).scalar()
            if inserted is not None:  # RETURNING, not rowcount (not reported for INSERT)
                return True
            taken = session.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.job == job.name,
                    _TABLE.c.slot == slot,
                    _TABLE.c.status == "running",
                    _TABLE.c.lease_until < now,
                )
                .values(
                    owner=self.owner,
                    attempts=_TABLE.c.attempts + 1,
                    started_at=now,
                    lease_until=lease_until,
                )
            ).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                log.warning("scheduler_run_taken_over", job=job.name, slot=slot.isoformat())
            return bool(taken == 1)

    def _finish(self, job: Job, slot: dt.datetime, error: str | None) -> None:
        with self.db.platform_session() as session, session.begin():
            session.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.job == job.name, _TABLE.c.slot == slot, _TABLE.c.owner == self.owner
                )
                .values(
                    status="failed" if error else "done",
                    finished_at=utcnow(),
                    error=error,
                )
            )

    # -- the loop -------------------------------------------------------------------------------

    def tick(self) -> list[tuple[str, dt.datetime]]:
        """Run every due slot this instance can claim; returns ``(job, slot)`` it ran."""
        ran: list[tuple[str, dt.datetime]] = []
        for job in self.jobs:
            now = self.clock()
            for slot in self.due_slots(job, now):
                if not self.claim(job, slot, now):
                    continue
                error: str | None = None
                try:
                    job.run(
                        JobContext(
                            db=self.db,
                            settings=self.settings,
                            slot=slot,
                            now=self.clock(),
                            plugins=self.plugins,
                        )
                    )
                except Exception as exc:  # recorded on the run and logged; the loop goes on
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    log.error(
                        "scheduler_job_failed",
                        job=job.name,
                        slot=slot.isoformat(),
                        error=error,
                        exc_info=True,
                    )
                self._finish(job, slot, error)
                ran.append((job.name, slot))
                self.ran.append((job.name, slot))
        return ran

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set (errors logged, never fatal)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the database is down: try again next tick
                log.warning("scheduler_tick_failed", error=f"{type(exc).__name__}: {exc}")
            self.wake.wait(self.interval)
            self.wake.clear()
