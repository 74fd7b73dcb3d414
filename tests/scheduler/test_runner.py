"""The scheduler: slots, claims that only one replica wins, catch-up, take-over, failures."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from core.db import Database
from core.scheduler.jobs import Job, JobContext, default_jobs, slot_at, slots_between
from core.scheduler.models import SchedulerRun
from core.scheduler.runner import Scheduler

T0 = dt.datetime(2026, 3, 2, 8, 0, 30, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def recording_job(
    name: str, every: dt.timedelta, runs: list[tuple[str, dt.datetime]], **kwargs: object
) -> Job:
    """A job that appends ``(name, slot)`` to ``runs``."""
    lock = threading.Lock()

    def run(ctx: JobContext) -> None:
        with lock:
            runs.append((name, ctx.slot))

    return Job(f"{name}-{uuid.uuid4().hex[:8]}", every=every, run=run, **kwargs)  # type: ignore[arg-type]


def test_slots_are_aligned_and_missed_ones_are_listed() -> None:
    minute = Job("j", every=dt.timedelta(minutes=1), run=lambda ctx: None)
    assert slot_at(minute, T0) == dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
    assert slots_between(minute, None, T0) == [dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)]
    last = dt.datetime(2026, 3, 2, 7, 57, tzinfo=dt.UTC)
    assert [s.minute for s in slots_between(minute, last, T0)] == [58, 59, 0]
    daily = Job("d", every=dt.timedelta(days=1), run=lambda ctx: None)
    assert slot_at(daily, T0) == dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def test_every_job_has_a_unique_name_and_a_description() -> None:
    jobs = default_jobs()
    assert len({j.name for j in jobs}) == len(jobs)
    assert all(j.description for j in jobs)


def test_two_replicas_run_each_slot_once(bg_db: Database) -> None:
    runs: list[tuple[str, dt.datetime]] = []
    job = recording_job("tick", dt.timedelta(minutes=1), runs)
    clock = Clock(T0)
    a = Scheduler(bg_db, [job], clock=clock, owner="a")
    b = Scheduler(bg_db, [job], clock=clock, owner="b")
    for _ in range(5):
        a.tick()
        b.tick()
        clock.now += dt.timedelta(minutes=1)
    assert Counter(slot for _, slot in runs) == {
        slot_at(job, T0 + dt.timedelta(minutes=i)): 1 for i in range(5)
    }
    assert len(a.ran) + len(b.ran) == 5


def test_concurrent_claims_have_one_winner(bg_db: Database) -> None:
    job = recording_job("race", dt.timedelta(minutes=1), [])
    schedulers = [Scheduler(bg_db, [job], owner=f"s{i}") for i in range(8)]
    slot = slot_at(job, T0)
    results: list[bool] = []
    barrier = threading.Barrier(len(schedulers))

    def claim(s: Scheduler) -> None:
        barrier.wait()
        results.append(s.claim(job, slot, T0))

    threads = [threading.Thread(target=claim, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_scheduler_that_was_down_catches_up(bg_db: Database) -> None:
    runs: list[tuple[str, dt.datetime]] = []
    sweep = recording_job("sweep", dt.timedelta(minutes=1), runs, catch_up="latest")
    digest = recording_job("digest", dt.timedelta(hours=1), runs, catch_up="all", max_catch_up=5)
    clock = Clock(T0)
    scheduler = Scheduler(bg_db, [sweep, digest], clock=clock)
    scheduler.tick()
    runs.clear()
    clock.now = T0 + dt.timedelta(hours=3, minutes=10)  # down for three hours
    scheduler.tick()
    sweeps = [s for n, s in runs if n == "sweep"]
    digests = [s for n, s in runs if n == "digest"]
    assert sweeps == [slot_at(sweep, clock.now)]  # one run covers everything
    assert [s.hour for s in digests] == [9, 10, 11]  # each missed hour
    scheduler.tick()
    assert len(runs) == 4  # nothing twice


def test_a_run_whose_scheduler_died_is_taken_over_after_its_lease(bg_db: Database) -> None:
    runs: list[tuple[str, dt.datetime]] = []
    job = recording_job("lease", dt.timedelta(minutes=1), runs, lease=dt.timedelta(seconds=10))
    clock = Clock(T0)
    dead = Scheduler(bg_db, [job], clock=clock, owner="dead")
    slot = slot_at(job, T0)
    assert dead.claim(job, slot, T0)  # claimed, then the process died: never finished
    alive = Scheduler(bg_db, [job], clock=clock, owner="alive")
    alive.tick()
    assert runs == []  # still leased
    clock.now = T0 + dt.timedelta(seconds=15)  # same slot, lease over
    alive.tick()
    assert runs == [(job.name.split("-")[0], slot)]
    with bg_db.platform_session() as session:
        row = session.scalars(select(SchedulerRun).where(SchedulerRun.job == job.name)).one()
    assert (row.status, row.owner, row.attempts) == ("done", "alive", 2)


def test_a_failing_job_is_recorded_and_the_others_still_run(bg_db: Database) -> None:
    runs: list[tuple[str, dt.datetime]] = []

    def boom(ctx: JobContext) -> None:
        raise RuntimeError("the sweep broke")

    bad = Job(f"bad-{uuid.uuid4().hex[:8]}", every=dt.timedelta(minutes=1), run=boom)
    good = recording_job("good", dt.timedelta(minutes=1), runs)
    Scheduler(bg_db, [bad, good], clock=Clock(T0)).tick()
    assert len(runs) == 1
    with bg_db.platform_session() as session:
        row = session.scalars(select(SchedulerRun).where(SchedulerRun.job == bad.name)).one()
    assert row.status == "failed" and "the sweep broke" in (row.error or "")


def test_job_names_must_be_unique(bg_db: Database) -> None:
    job = Job("same", every=dt.timedelta(minutes=1), run=lambda ctx: None)
    with pytest.raises(ValueError, match="share a name"):
        Scheduler(bg_db, [job, job])
