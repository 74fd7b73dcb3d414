"""Rows in every OAuth table for a tenant, so the isolation suite (tests/tenancy) covers them."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from core.auth.hashing import digest, generate_handle
from core.auth.models import AuthorizationCode, RefreshToken, RevokedToken
from core.auth.services import create_client
from core.db import utcnow


def add_auth_rows(session: Session, *, person_id: uuid.UUID, unit_id: uuid.UUID) -> None:
    """One client, and one spent authorization code, revoked refresh token and revoked jti."""
    client, _ = create_client(
        session,
        name="fixture client",
        scopes=["org:read"],
        unit_ids=[unit_id],
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=("https://client.example/cb",),
    )
    now = utcnow()
    code = AuthorizationCode(
        code_hash=digest(generate_handle()),
        oauth_client_id=client.id,
        person_id=person_id,
        redirect_uri="https://client.example/cb",
        scope="org:read",
        code_challenge="x" * 43,
        expires_at=now - timedelta(minutes=1),
        used_at=now,
    )
    session.add(code)
    session.flush()
    session.add(
        RefreshToken(
            token_hash=digest(generate_handle()),
            oauth_client_id=client.id,
            person_id=person_id,
            family_id=code.id,
            scope="org:read",
            expires_at=now + timedelta(days=1),
            revoked_at=now,
        )
    )
    session.add(RevokedToken(jti=generate_handle(18), expires_at=now + timedelta(minutes=15)))
    session.flush()
