"""Tenant-managed API clients: who may manage which client, and the audited changes.

A client acts for organization units (``unit_ids``, empty: the whole tenant). Managing it needs
``clients:admin`` at every one of those units (for a tenant-wide client: at the top of the
tree); a client the caller cannot manage does not exist for them (404). Nobody grants what they
do not hold: every scope given to a client must hold for the caller at each of its units.

Storage is :mod:`core.auth.services`; every change is written to the tenant's audit log
(:mod:`core.audit`) with the caller, the client id, the scopes and the source address.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.auth import services as clients
from core.auth.audit import record_by
from core.auth.guards import Access
from core.auth.models import OAuthClient
from core.auth.principal import Principal
from core.orgs.services import unit_paths

PERMISSION = "clients:admin"


@dataclass(frozen=True)
class Caller:
    """Who is asking, for permission checks and the audit log."""

    access: Access
    source: str | None = None

    @property
    def principal(self) -> Principal:
        """The authenticated principal."""
        return self.access.principal

    @property
    def label(self) -> str:
        """``client:<client_id>`` or ``person:<id>``."""
        p = self.principal
        return f"person:{p.subject}" if p.kind == "person" else f"client:{p.client_id}"


def can_manage(session: Session, access: Access, client: OAuthClient) -> bool:
    """True when the caller holds ``clients:admin`` at every unit the client acts for."""
    paths = unit_paths(session, client.unit_ids)
    return bool(paths) and all(access.can(PERMISSION, p) for p, _ in paths)


def _require_manage(session: Session, access: Access, unit_ids: Sequence[uuid.UUID]) -> None:
    access.require_anywhere(PERMISSION)
    paths = unit_paths(session, unit_ids)
    if unit_ids and len(paths) < len(set(unit_ids)):
        clients._check_units(session, clients._tenant(session, None), unit_ids)  # 422
    for path, code in paths:
        if not access.can(PERMISSION, path):
            raise Problem(
                403,
                f"{PERMISSION!r} does not hold at unit {code}"
                + ("" if unit_ids else " (a client for the whole tenant needs it at the top)"),
                slug="forbidden",
                permission=PERMISSION,
                unit=code,
            )


def _require_grantable(
    session: Session, access: Access, scopes: Iterable[str], unit_ids: Sequence[uuid.UUID]
) -> None:
    paths = unit_paths(session, unit_ids)
    for scope in sorted(set(scopes)):
        for path, code in paths:
            if not access.can(scope, path):
                raise Problem(
                    403,
                    f"you cannot grant {scope!r}: you do not hold it at unit {code}",
                    slug="cannot-grant",
                    scope=scope,
                    unit=code,
                )


def get_visible(session: Session, caller: Caller, client_id: str) -> OAuthClient:
    """The client, if the caller may manage it; else a 404 (also for another tenant's id)."""
    caller.access.require_anywhere(PERMISSION)
    client = clients.find_client(session, client_id)
    if client is None or not can_manage(session, caller.access, client):
        raise not_found("client", client_id)
    return client


def list_visible(
    session: Session, caller: Caller, *, active: bool | None = None
) -> list[OAuthClient]:
    """The clients the caller may manage, oldest first."""
    caller.access.require_anywhere(PERMISSION)
    found = clients.list_clients(session)
    return [
        c
        for c in found
        if (active is None or c.active is active) and can_manage(session, caller.access, c)
    ]


def register(
    session: Session,
    caller: Caller,
    *,
    name: str,
    scopes: Sequence[str],
    unit_ids: Sequence[uuid.UUID],
    grant_types: Sequence[str],
    redirect_uris: Sequence[str],
    auth_method: str,
    jwks: dict[str, Any] | None,
) -> tuple[OAuthClient, str | None]:
    """Register a client the caller may manage, with scopes the caller holds (audited)."""
    _require_manage(session, caller.access, unit_ids)
    _require_grantable(session, caller.access, scopes, unit_ids)
    client, secret = clients.create_client(
        session,
        name=name,
        scopes=scopes,
        unit_ids=unit_ids,
        grant_types=grant_types,
        redirect_uris=redirect_uris,
        auth_method=auth_method,
        jwks=jwks,
    )
    _audit(session, caller, "client.registered", client, name=name, grant_types=list(grant_types))
    return client, secret


def update(
    session: Session,
    caller: Caller,
    client: OAuthClient,
    *,
    name: str | None,
    scopes: Sequence[str] | None,
    unit_ids: Sequence[uuid.UUID] | None,
    redirect_uris: Sequence[str] | None,
) -> OAuthClient:
    """Change a client; new units and scopes must be ones the caller may give (audited)."""
    before = {"scopes": list(client.scopes), "unit_ids": list(client.unit_ids)}
    units = list(unit_ids) if unit_ids is not None else [uuid.UUID(u) for u in client.unit_ids]
    if unit_ids is not None:
        _require_manage(session, caller.access, units)
    if scopes is not None or unit_ids is not None:
        _require_grantable(
            session, caller.access, scopes if scopes is not None else client.scopes, units
        )
    changed = clients.update_client(
        session,
        client.client_id,
        name=name,
        scopes=scopes,
        unit_ids=unit_ids,
        redirect_uris=redirect_uris,
    )
    if changed:
        _audit(session, caller, "client.updated", client, before=before)
    return client


def rotate_secret(session: Session, caller: Caller, client: OAuthClient) -> str:
    """A new secret (returned once); the old one stops working at once (audited)."""
    secret = clients.rotate_client_secret(session, client.client_id)
    _audit(session, caller, "client.secret_rotated", client)
    return secret


def disable(session: Session, caller: Caller, client: OAuthClient) -> OAuthClient:
    """Disable the client: its tokens are refused from the next request (audited)."""
    if client.active:
        clients.disable_client(session, client.client_id)
        _audit(session, caller, "client.disabled", client)
    return client


def _audit(
    session: Session, caller: Caller, action: str, client: OAuthClient, **details: Any
) -> None:
    record_by(
        session,
        caller.principal,
        action=action,
        target=("oauth_client", client.client_id),
        details={
            "client_id": client.client_id,
            "scopes": sorted(client.scopes),
            "unit_ids": list(client.unit_ids),
            "active": client.active,
            **details,
        },
        source=caller.source,
    )
