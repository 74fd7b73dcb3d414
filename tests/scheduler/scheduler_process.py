"""A scheduler replica for the two-process test: runs a one-second job for a while.

Environment: ``INSURDESK_DATABASE_URL``, ``INSURDESK_ADMIN_DATABASE_URL``, ``TEST_JOB``
(job name), ``TEST_RUNS_FILE`` (each run appends ``job slot owner``), ``TEST_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import os
import threading

from core.db import Database
from core.models import import_all_models
from core.scheduler.jobs import Job, JobContext
from core.scheduler.runner import Scheduler
from core.settings import load_settings


def main() -> None:
    """Run the scheduler with the test's jobs for ``TEST_SECONDS``."""
    import_all_models()
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    path = os.environ["TEST_RUNS_FILE"]
    name = os.environ["TEST_JOB"]
    owner = f"pid{os.getpid()}"

    def record(ctx: JobContext) -> None:
        with open(path, "a", encoding="utf-8") as fh:  # O_APPEND: whole lines, no interleaving
            fh.write(f"{name} {ctx.slot.isoformat()} {owner}\n")

    jobs = [Job(name, every=dt.timedelta(seconds=1), run=record)]
    stop = threading.Event()
    threading.Timer(float(os.environ.get("TEST_SECONDS", "6")), stop.set).start()
    print("scheduler ready", flush=True)
    Scheduler(db, jobs, owner=owner, interval=0.05).run(stop)
    db.dispose()


if __name__ == "__main__":
    main()
