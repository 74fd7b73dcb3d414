"""The periodic jobs, registered in one place (:func:`default_jobs`), and their slots.

A job's slots are ``epoch + offset + k * every`` (UTC): with ``every`` one minute, each
minute; with one day and an offset of 0 h, every day at 00:00 UTC (08:00 in China). A job
says how a scheduler that was down catches up: ``latest`` (one run covers everything, e.g. a
sweep that looks at all due clocks) or ``all`` (each missed slot matters, e.g. a digest per
day), at most ``max_catch_up`` slots back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from core.db import Database

EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class JobContext:
    """What a job run gets: the database, the settings, its slot, the time it started and the
    process's plugin host (None: jobs that consult plugins skip them)."""

    db: Database
    settings: Any
    slot: dt.datetime
    now: dt.datetime
    plugins: Any = None


@dataclass(frozen=True)
class Job:
    """A periodic job.

    :param lease: how long a run may take before another replica may take it over.
    """

    name: str
    every: dt.timedelta
    run: Callable[[JobContext], None]
    offset: dt.timedelta = dt.timedelta(0)
    catch_up: Literal["all", "latest"] = "latest"
    max_catch_up: int = 24
    lease: dt.timedelta = dt.timedelta(minutes=10)
    description: str = ""


def slot_at(job: Job, now: dt.datetime) -> dt.datetime:
    """The newest slot of ``job`` at or before ``now``."""
    base = EPOCH + job.offset
    steps = (now - base) // job.every
    return base + steps * job.every


def slots_between(job: Job, last: dt.datetime | None, now: dt.datetime) -> list[dt.datetime]:
    """Slots after ``last`` up to ``now``; with no ``last``, only the current slot."""
    current = slot_at(job, now)
    if last is None:
        return [current]
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.UTC)
    slots: list[dt.datetime] = []
    slot = current
    while slot > last and len(slots) <= job.max_catch_up:
        slots.append(slot)
        slot -= job.every
    return sorted(slots)


def default_jobs(settings: Any = None) -> list[Job]:
    """Every periodic job of the platform. Add new ones here (visits, inspections, retention)."""
    from core.cases.storage import attachment_sweep
    from core.privacy import jobs as privacy_jobs
    from core.scheduler import sweeps

    return [
        Job(
            "deadline_sweep",
            every=dt.timedelta(minutes=1),
            run=sweeps.deadline_sweep,
            catch_up="latest",
            description="reminders at a fraction of each clock; escalation of breached clocks",
        ),
        Job(
            "daily_digest",
            every=dt.timedelta(days=1),
            offset=dt.timedelta(hours=0),  # 08:00 Asia/Shanghai
            run=sweeps.daily_digest,
            catch_up="all",
            max_catch_up=7,
            description="per unit: cases near or past their deadlines, to the unit's managers",
        ),
        Job(
            "outbox_retention",
            every=dt.timedelta(hours=1),
            run=sweeps.outbox_retention,
            catch_up="latest",
            description="delete processed outbox rows that no delivery refers to (7 days)",
        ),
        Job(
            "privacy_reencrypt",
            every=dt.timedelta(minutes=5),
            run=privacy_jobs.reencrypt_sweep,
            catch_up="latest",
            description="re-encrypt rows and attachment files still on a retired data key "
            "(and files still in clear), in batches; then erase the retired keys nothing uses "
            "(docs/privacy.md)",
        ),
        Job(
            "privacy_retention",
            every=dt.timedelta(days=1),
            offset=dt.timedelta(hours=18),  # 02:00 Asia/Shanghai
            run=privacy_jobs.retention_sweep,
            catch_up="latest",
            lease=dt.timedelta(hours=1),
            description="anonymize or delete personal data (attachment files included) past its "
            "retention period, in batches, with destruction records; never held data "
            "(docs/privacy.md)",
        ),
        Job(
            "attachment_sweep",
            every=dt.timedelta(days=1),
            offset=dt.timedelta(hours=19),  # 03:00 Asia/Shanghai
            run=attachment_sweep,
            catch_up="latest",
            lease=dt.timedelta(hours=1),
            description="delete stored attachment files that no row refers to (left by a "
            "process that died before its commit), once older than an hour (docs/cases.md)",
        ),
    ]
