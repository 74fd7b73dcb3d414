"""OAuth 2.0 tables: clients, signing keys, authorization codes, refresh tokens, revoked jtis.

Nothing secret is stored in clear except the signing keys' private halves (issue 7 wraps them
with the platform master key): client secrets, authorization codes and refresh tokens are kept
as SHA-256 digests (they are high-entropy random values, see docs/auth.md).

Rows of tenant tables refer to a client by its row id (``oauth_client_id``, a composite foreign
key like every other reference between tenant tables), never by the public ``client_id`` string.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, new_id, tenant_fk, utcnow

AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)
"""Token endpoint authentication methods a client can be registered with."""

GRANT_TYPES: tuple[str, ...] = ("client_credentials", "authorization_code", "refresh_token")
"""Grant types the authorization server supports."""


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite hands some back naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class OAuthClient(TenantScoped, Timestamped, ClientMixin, Base):
    """An API client of one tenant (an integrator's system, or a people-facing app).

    ``client_id`` is ``<tenant slug>.<random>``: the token endpoint finds the tenant from it
    alone and then loads the client through that tenant's session.
    """

    __tablename__ = "oauth_clients"
    __table_args__ = (UniqueConstraint("client_id"),)

    client_id: Mapped[str] = mapped_column(String(160))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(100), default=None)
    token_endpoint_auth_method: Mapped[str] = mapped_column(
        String(32), default="client_secret_basic"
    )
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    unit_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Ids (as strings) of the org units the client may act for, with the units below them."""
    active: Mapped[bool] = mapped_column(default=True)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(default=1)
    """The ETag of the client's record in the API (optimistic concurrency)."""

    __mapper_args__ = {"version_id_col": version}

    # --- authlib ClientMixin ------------------------------------------------------------------

    def get_client_id(self) -> str:
        """The public client identifier."""
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        """The redirect URI used when a request names none: only if exactly one is registered."""
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The granted scope: all the client's scopes when none is asked for, else the request.

        A request for a scope the client was not registered with returns None, which authlib
        answers with ``invalid_scope``.
        """
        if not scope:
            return list_to_scope(sorted(self.scopes))
        requested = scope_to_list(scope)
        if not set(requested) <= set(self.scopes):
            return None
        return list_to_scope(sorted(set(requested)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact match against the registered redirect URIs."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """Compare the presented secret with the stored digest (constant time)."""
        from core.auth.hashing import verify_secret

        return verify_secret(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """A client authenticates with the one method it was registered with, everywhere."""
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        """Only ``code``, and only for clients allowed the authorization code grant."""
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        """True when the client was registered for ``grant_type``."""
        return grant_type in self.grant_types

    @property
    def unit_uuids(self) -> tuple[uuid.UUID, ...]:
        """``unit_ids`` as UUIDs."""
        return tuple(uuid.UUID(u) for u in self.unit_ids)


class SigningKey(Base):
    """A key the authorization server signs access tokens with (platform table).

    Life cycle: published in the JWKS from creation, used for signing from ``activate_at``
    until a successor activates (``retire_at``), kept in the JWKS until the tokens it signed
    have expired (``expires_at``), then deleted.
    """

    __tablename__ = "signing_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kid: Mapped[str] = mapped_column(String(100), unique=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    private_wrapped: Mapped[str] = mapped_column(Text)
    """Base64 of the private key (PEM) wrapped by the platform master key
    (:mod:`core.privacy.keys`, bound to the ``kid``); never stored in clear."""
    master_key_id: Mapped[str] = mapped_column(String(100))
    """Which master key wrapped it."""
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activate_at: Mapped[datetime] = mapped_column(default=utcnow)
    retire_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class AuthorizationCode(TenantScoped, AuthorizationCodeMixin, Base):
    """A one-time code from the authorization endpoint (PKCE S256 challenge attached)."""

    __tablename__ = "oauth_authorization_codes"
    __table_args__ = (
        UniqueConstraint("tenant_id", "code_hash"),
        tenant_fk("oauth_client_id", "oauth_clients"),
        tenant_fk("person_id", "people"),
    )

    code_hash: Mapped[str] = mapped_column(String(64))
    oauth_client_id: Mapped[uuid.UUID]
    person_id: Mapped[uuid.UUID]
    redirect_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    scope: Mapped[str] = mapped_column(Text, default="")
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10), default="S256")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)

    def get_redirect_uri(self) -> str | None:
        """The redirect URI the code was requested with (authlib AuthorizationCodeMixin)."""
        return self.redirect_uri

    def get_scope(self) -> str:
        """The scope granted with the code."""
        return self.scope


class RefreshToken(TenantScoped, TokenMixin, Base):
    """A refresh token (stored as a digest), rotated at every use.

    Tokens descending from one authorization code share ``family_id``; presenting a token
    that was already rotated revokes the whole family (refresh token reuse detection).
    """

    __tablename__ = "oauth_refresh_tokens"
    __table_args__ = (
        UniqueConstraint("tenant_id", "token_hash"),
        tenant_fk("oauth_client_id", "oauth_clients"),
        tenant_fk("person_id", "people"),
        Index("ix_oauth_refresh_tokens_family", "tenant_id", "family_id"),
    )

    token_hash: Mapped[str] = mapped_column(String(64))
    oauth_client_id: Mapped[uuid.UUID]
    person_id: Mapped[uuid.UUID]
    family_id: Mapped[uuid.UUID]
    scope: Mapped[str] = mapped_column(Text, default="")
    access_token_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    access_token_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)

    # --- authlib TokenMixin -------------------------------------------------------------------

    def check_client(self, client: OAuthClient) -> bool:
        """True when the token was issued to ``client``."""
        return self.oauth_client_id == client.id and self.tenant_id == client.tenant_id

    def get_scope(self) -> str:
        """The scope granted to the token."""
        return self.scope

    def get_expires_in(self) -> int:
        """Seconds until expiry (0 when expired)."""
        return max(0, int((as_utc(self.expires_at) - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        """True once ``expires_at`` has passed."""
        return as_utc(self.expires_at) <= utcnow()

    def is_revoked(self) -> bool:
        """True when revoked or already rotated."""
        return self.revoked_at is not None or self.rotated_at is not None


class RevokedToken(TenantScoped, Base):
    """A JWT id that must not be accepted again until ``expires_at``.

    Holds access tokens revoked through RFC 7009 and the ids of client assertions already
    used (``private_key_jwt`` replay protection, ``jti`` prefixed with ``assertion:``).
    """

    __tablename__ = "oauth_revoked_tokens"
    __table_args__ = (UniqueConstraint("tenant_id", "jti"),)

    jti: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
