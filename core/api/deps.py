"""Request dependencies shared by every controller: the tenant session and the caller's access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.orm import Session

from core.api.handlers import run_with_database
from core.auth.guards import Access, load_access
from core.auth.middleware import ACCESS_KEY
from core.auth.principal import Principal
from core.db import Database


async def provide_session(request: Request[Principal, Any, Any]) -> AsyncIterator[Session]:
    """A session bound to the tenant of the authenticated principal (never a client header).

    Handlers commit their writes explicitly; anything uncommitted is rolled back here, where
    its transaction runs (:meth:`Database.end`). The database is the app's (``app.state``,
    not a dependency: Litestar resolves sibling dependencies in a task group per request).
    """
    db: Database = request.app.state["db"]
    session = db.tenant_session(request.user.tenant_id)
    try:
        yield session
    finally:
        await db.end(session)


async def provide_access(
    request: Request[Principal, Any, Any], session: NamedDependency[Session]
) -> Access:
    """The caller's permissions for this request: read by the authentication middleware with
    the token's state (no further query), else loaded here."""
    access = request.scope.get(ACCESS_KEY)
    if isinstance(access, Access) and access.principal is request.user:
        return access
    return await run_with_database(load_access, session, request.user)


API_DEPENDENCIES: dict[str, Provide] = {
    "session": Provide(provide_session),
    "access": Provide(provide_access),
}
"""Dependencies for controllers under ``/api/v1`` (set on each controller or router)."""
