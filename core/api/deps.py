"""Request dependencies shared by every controller: the tenant session and the caller's access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Request
from litestar.di import Provide
from sqlalchemy.orm import Session

from core.auth.guards import Access, load_access
from core.auth.principal import Principal
from core.db import Database


def provide_session(request: Request[Principal, Any, Any], db: Database) -> Iterator[Session]:
    """A session bound to the tenant of the authenticated principal (never a client header).

    Handlers commit their writes explicitly; anything uncommitted is rolled back here.
    """
    session = db.tenant_session(request.user.tenant_id)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def provide_access(request: Request[Principal, Any, Any], session: Session) -> Access:
    """The caller's permissions for this request."""
    return load_access(session, request.user)


API_DEPENDENCIES: dict[str, Provide] = {
    "session": Provide(provide_session),
    "access": Provide(provide_access, sync_to_thread=True),
}
"""Dependencies for controllers under ``/api/v1`` (set on each controller or router)."""
