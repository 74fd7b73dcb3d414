"""``insurdesk worker``: the outbox relay and Dramatiq workers of a deployment with a broker.

``insurdesk worker`` runs both in one process (threads). With the ``dramatiq`` command line
instead, run the relay alone and let Dramatiq run the workers::

    insurdesk worker --no-consume
    dramatiq core.outbox.dramatiq_app --processes 4 --threads 8 --queues insurdesk.outbox

``insurdesk worker status`` prints the outbox and queue figures as JSON.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated

import typer

from core.settings import load_settings

cli = typer.Typer(
    help="Background work: the outbox relay and the Dramatiq workers (needs "
    "INSURDESK_BROKER_URL; the embedded default runs them inside `insurdesk serve`).",
    no_args_is_help=False,
)


@cli.callback(invoke_without_command=True)
def worker(
    ctx: typer.Context,
    threads: Annotated[int, typer.Option(help="Worker threads.", min=1, max=256)] = 8,
    relay: Annotated[bool, typer.Option("--relay/--no-relay", help="Run the outbox relay.")] = True,
    consume: Annotated[
        bool,
        typer.Option("--consume/--no-consume", help="Run Dramatiq workers (consume the queue)."),
    ] = True,
    namespace: Annotated[
        str, typer.Option(help="Queue-name prefix on the broker (one per deployment).")
    ] = "insurdesk",
) -> None:
    """Run the relay and the workers until SIGINT or SIGTERM."""
    if ctx.invoked_subcommand is not None:
        return
    from core.db import Database
    from core.models import import_all_models
    from core.outbox.broker import is_embedded
    from core.outbox.runtime import BackgroundRuntime, RuntimeOptions

    settings = load_settings()
    if is_embedded(settings.broker_url):
        typer.echo(
            "INSURDESK_BROKER_URL is empty: the embedded worker runs inside `insurdesk serve`. "
            "Set it to amqp://... (RabbitMQ) or redis://... to run workers separately.",
            err=True,
        )
        raise typer.Exit(2)
    import_all_models()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    options = RuntimeOptions(
        relay=relay, consume=consume, worker_threads=threads, namespace=namespace
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = BackgroundRuntime(settings, db, options).start()
    typer.echo(f"worker running: broker={runtime.broker.kind} queue={runtime.broker.queue_name}")
    try:
        stop.wait()
    finally:
        runtime.stop()
        db.dispose()


@cli.command("status")
def status(
    namespace: Annotated[str, typer.Option(help="Queue-name prefix on the broker.")] = "insurdesk",
) -> None:
    """Print outbox figures (by status, lag) and the broker's queue depth as JSON."""
    from core.db import Database
    from core.models import import_all_models
    from core.outbox.broker import make_broker, queue_depth
    from core.outbox.services import outbox_stats

    settings = load_settings()
    import_all_models()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    with db.platform_session() as session:
        stats = outbox_stats(session)
    handle = make_broker(settings.broker_url, namespace=namespace)
    depth = None if handle.kind == "stub" else queue_depth(handle)
    handle.close()
    db.dispose()
    typer.echo(
        json.dumps(
            {
                "broker": handle.kind,
                "queue": handle.queue_name,
                "queue_depth": depth,
                "outbox": dict(stats.by_status),
                "outbox_lag_seconds": round(stats.oldest_pending_age_seconds, 3),
            }
        )
    )
