"""Audit entries of the authorization server, API clients and webhooks (:mod:`core.audit`).

Every token issued, refused, introspected and revoked, and every change to a client or a
webhook, is an entry in the tenant's hash-chained audit log, written in the transaction of
the change, with the client id, the scopes and the caller's address. Nothing secret goes in:
no client secret, no token (a token is named by its ``jti``).

A refused token request whose client id names no tenant has no tenant log to go to; it is
only in the structured log (``oauth_audit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy.orm import Session

from core.audit import AuditActor, actor_from, record
from core.auth.principal import Principal

log = structlog.get_logger("insurdesk.audit")


def client_actor(client_id: str | None) -> AuditActor:
    """An OAuth client acting with its own credentials (at the token endpoints)."""
    label = (f"client:{client_id}" if client_id else "client:unknown")[:200]
    return AuditActor("client", label, None, client_id)


def record_by(
    session: Session,
    principal: Principal,
    *,
    action: str,
    target: tuple[str, object] | None = None,
    details: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> None:
    """Record an action of an authenticated API caller, in the session's transaction."""
    record(
        session,
        action=action,
        actor=actor_from(principal, session),
        target=target,
        details=details,
        source=source,
    )


def record_token_event(
    session: Session,
    *,
    action: str,
    client_id: str | None,
    details: Mapping[str, Any],
    source: str | None,
) -> None:
    """Record ``oauth.token_issued`` / ``_refused`` / ``_introspected`` / ``_revoked``."""
    record(
        session,
        action=action,
        actor=client_actor(client_id),
        target=("oauth_client", client_id) if client_id else None,
        details={"client_id": client_id, **details},
        source=source,
    )
    log.info("oauth_audit", action=action, client_id=client_id, source=source)
