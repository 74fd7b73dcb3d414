"""Two scheduler processes at once run each periodic job slot once."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from core.settings import Settings


def test_two_scheduler_processes_run_each_slot_once(bg_settings: Settings, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
    env.update(
        INSURDESK_DATABASE_URL=bg_settings.effective_database_url,
        INSURDESK_ADMIN_DATABASE_URL=bg_settings.effective_admin_database_url,
        INSURDESK_LOG_LEVEL="WARNING",
        TEST_JOB=f"replica-{uuid.uuid4().hex[:8]}",
        TEST_RUNS_FILE=str(runs),
        TEST_SECONDS="6",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.scheduler.scheduler_process"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    lines = [line.split() for line in runs.read_text().splitlines()]
    slots = Counter(slot for _, slot, _ in lines)
    owners = Counter(owner for _, _, owner in lines)
    assert len(slots) >= 4  # a run per second while both were up
    assert max(slots.values()) == 1, f"a slot ran twice: {slots.most_common(3)}"
    ordered = sorted(dt.datetime.fromisoformat(s) for s in slots)
    gaps = {b - a for a, b in itertools.pairwise(ordered)}
    assert gaps == {dt.timedelta(seconds=1)}  # and none was skipped
    assert len(owners) in (1, 2)
