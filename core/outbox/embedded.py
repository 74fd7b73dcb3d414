"""The embedded default: ``serve`` runs the relay, a worker and the scheduler in process.

With ``INSURDESK_BROKER_URL`` empty (or ``stub``) the app's lifespan starts a
:class:`~core.outbox.runtime.BackgroundRuntime` on Dramatiq's ``StubBroker`` (an in-memory
queue) with an in-process ``Worker`` and the scheduler, as threads, and stops them on
shutdown. Nothing is lost if the process dies: the outbox rows are in the database, and rows
whose in-memory messages vanished are re-dispatched by the next start's relay
(``redispatch_after``). With a broker URL set, ``serve`` runs none of this: start
``insurdesk worker`` and ``insurdesk scheduler`` (docs/background.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.to_thread

from core.db import Database
from core.outbox.broker import is_embedded
from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
from core.settings import Settings

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def embedded_lifespans(settings: Settings, db: Database) -> list[Lifespan]:
    """The app lifespan managers of the embedded background runtime (none with a broker URL)."""
    if not is_embedded(settings.broker_url):
        return []

    @asynccontextmanager
    async def background(app: Any) -> AsyncIterator[None]:
        host = app.state.get("plugins")
        runtime = BackgroundRuntime(
            settings,
            db,
            RuntimeOptions(scheduler=True, worker_threads=4),
            plugin_host=host,
        )
        await anyio.to_thread.run_sync(runtime.start)
        app.state["background"] = runtime
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(runtime.stop)

    return [background]
