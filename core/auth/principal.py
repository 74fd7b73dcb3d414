"""Who is calling: the authenticated principal carried through a request."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, made from a verified access token.

    ``tenant_id`` comes from the token only; nothing a client sends in a header or path can
    change it. ``scopes`` are the token's scopes; what a principal may do at a unit is the
    intersection of its scopes with the permissions it holds there (:mod:`core.auth.guards`).
    """

    tenant_id: uuid.UUID
    subject: str
    kind: Literal["person", "client"]
    scopes: frozenset[str]
    person_id: uuid.UUID | None = None
    client_id: str | None = None
    token_id: str | None = None
    # For clients: the units the client may act for (and those below); empty = none.
    client_unit_ids: tuple[uuid.UUID, ...] = field(default=())
    username: str | None = None
    """A person's username, when the authentication read it (for actor labels)."""


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
"""The principal of the request being served (set by the authentication middleware)."""
