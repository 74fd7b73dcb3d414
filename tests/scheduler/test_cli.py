"""``insurdesk scheduler --once`` and ``insurdesk scheduler jobs`` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from core.db import Database
from core.scheduler.models import SchedulerRun
from core.settings import Settings

INSURDESK = str(Path(sys.executable).parent / "insurdesk")


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
    env.update(
        INSURDESK_DATABASE_URL=settings.effective_database_url,
        INSURDESK_ADMIN_DATABASE_URL=settings.effective_admin_database_url,
        INSURDESK_LOG_LEVEL="WARNING",
    )
    return env


def test_scheduler_once_runs_the_due_slots_and_a_second_replica_finds_them_taken(
    bg_settings: Settings, bg_db: Database
) -> None:
    first = subprocess.run(
        [INSURDESK, "scheduler", "--once"],
        env=_env(bg_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert "ran deadline_sweep for" in first.stdout
    with bg_db.platform_session() as session:
        runs = session.scalars(select(SchedulerRun).where(SchedulerRun.job == "deadline_sweep"))
        slots = {r.slot for r in runs if r.status == "done"}
    assert slots
    second = subprocess.run(
        [INSURDESK, "scheduler", "--once"],
        env=_env(bg_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    # Only the runner's own lines: the sweep also logs a "deadline_sweep" line (to the same
    # stdout) when it found reminders or breaches, which is not a run.
    ran_again = [
        line for line in second.stdout.splitlines() if line.startswith("ran deadline_sweep for ")
    ]
    assert all(line.split(" for ")[1] not in {s.isoformat() for s in slots} for line in ran_again)


def test_scheduler_jobs_lists_the_registered_jobs(bg_settings: Settings) -> None:
    listing = subprocess.run(
        [INSURDESK, "scheduler", "jobs"],
        env=_env(bg_settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert names == [
        "deadline_sweep",
        "daily_digest",
        "outbox_retention",
        "privacy_reencrypt",
        "privacy_retention",
        "attachment_sweep",
    ]
