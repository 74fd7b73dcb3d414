"""``insurdesk scheduler``: run the periodic jobs (safe to run on several replicas)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from core.settings import load_settings

cli = typer.Typer(
    help="Periodic jobs (deadline sweep, daily digest, retention). Several replicas may run: "
    "each job slot runs once (a (job, slot) row claims it). The embedded default runs the "
    "scheduler inside `insurdesk serve`.",
    no_args_is_help=False,
)


@cli.callback(invoke_without_command=True)
def scheduler(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option(help="Seconds between looks for due job slots.", min=0.5)
    ] = 5.0,
    once: Annotated[
        bool, typer.Option("--once", help="Run the slots due now (catching up), then exit.")
    ] = False,
) -> None:
    """Run the scheduler until SIGINT or SIGTERM (or once, with ``--once``)."""
    if ctx.invoked_subcommand is not None:
        return
    from core.db import Database
    from core.models import import_all_models
    from core.scheduler.jobs import default_jobs
    from core.scheduler.runner import Scheduler

    settings = load_settings()
    import_all_models()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    from core.plugins.host import PluginHost
    from core.plugins.registry import build_registry

    plugins = PluginHost(build_registry(), db).start()
    runner = Scheduler(
        db, default_jobs(settings), interval=interval, settings=settings, plugins=plugins
    )
    try:
        if once:
            for job, slot in runner.tick():
                typer.echo(f"ran {job} for {slot.isoformat()}")
            return
        stop = threading.Event()

        def _stop(*_: object) -> None:
            stop.set()
            runner.wake.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stop)
        typer.echo(f"scheduler running as {runner.owner}: {', '.join(j.name for j in runner.jobs)}")
        runner.run(stop)
    finally:
        plugins.close()
        db.dispose()


@cli.command("jobs")
def jobs() -> None:
    """List the periodic jobs: name, period, catch-up rule, what it does."""
    from core.scheduler.jobs import default_jobs

    for job in default_jobs():
        typer.echo(f"{job.name:18} every {job.every}  catch-up={job.catch_up}  {job.description}")
