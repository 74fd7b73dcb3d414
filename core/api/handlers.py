"""Where a handler's synchronous database code runs (docs/decisions/0010).

Handlers are plain synchronous functions over a :class:`~sqlalchemy.orm.Session` (one code
path with the CLI and the workers, decision 0001). A handler that mostly talks to the
database is decorated with :func:`uses_database` under its route decorator; it then runs
through :meth:`core.db.Database.run`: on PostgreSQL in a greenlet on the event loop, its
statements awaited by the loop (no worker thread, no hand-off between threads per statement);
on SQLite in a worker thread. A handler that waits on something else (object storage,
outbound HTTP, password hashing) keeps Litestar's ``sync_to_thread=True``: in a worker thread
its sessions use the synchronous engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
from litestar.types import ASGIApp, Receive, Scope, Send

from core.db import Database

P = ParamSpec("P")
T = TypeVar("T")

current_database: ContextVar[Database] = ContextVar("current_database")
"""The app's database, set for each request by :func:`database_middleware`."""


def uses_database(fn: Callable[P, T]) -> Callable[P, Any]:
    """Make a synchronous handler an asynchronous one that runs it through the request's
    :meth:`Database.run` (a worker thread when no database is set for the request). The
    signature, annotations and docstring stay the handler's, so Litestar sees the same
    parameters and the OpenAPI document does not change."""

    @functools.wraps(fn)
    async def handler(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_with_database(fn, *args, **kwargs)

    return handler


async def run_with_database(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` where the request's database work runs (:meth:`Database.run`); dependencies
    that read through the request's session use it too, so a transaction they begin is
    continued by the handler on the same connection."""
    db = current_database.get(None)
    if db is None:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    return await db.run(fn, *args, **kwargs)


def database_middleware(db: Database) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware that makes ``db`` the database of every request it passes on."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            token = current_database.set(db)
            try:
                await app(scope, receive, send)
            finally:
                current_database.reset(token)

        return middleware

    return wrap
