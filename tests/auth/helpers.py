"""Helpers of the OAuth tests: endpoint URLs, client registration, JWT inspection."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from core.auth.services import create_client
from core.db import Database
from tests.factories import TenantWorld


@dataclass(frozen=True)
class Endpoints:
    """URLs of the live authorization server."""

    base: str

    @property
    def token(self) -> str:
        """Token endpoint."""
        return f"{self.base}/oauth/token"

    @property
    def authorize(self) -> str:
        """Authorization endpoint."""
        return f"{self.base}/oauth/authorize"

    @property
    def introspect(self) -> str:
        """Introspection endpoint."""
        return f"{self.base}/oauth/introspect"

    @property
    def revoke(self) -> str:
        """Revocation endpoint."""
        return f"{self.base}/oauth/revoke"

    @property
    def me(self) -> str:
        """``GET /api/v1/me``."""
        return f"{self.base}/api/v1/me"


def register(database: Database, world: TenantWorld, **kwargs: Any) -> tuple[str, str | None]:
    """Register a client in ``world`` with the real service; return (client_id, secret)."""
    kwargs.setdefault("name", f"client {uuid.uuid4().hex[:6]}")
    kwargs.setdefault("scopes", ["org:read", "cases:read"])
    kwargs.setdefault("unit_ids", [world.units["bj"].id])
    with database.tenant_transaction(world.id) as session:
        client, secret = create_client(session, **kwargs)
        return client.client_id, secret


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (to look at what the server put in it)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header of a JWT."""
    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}
