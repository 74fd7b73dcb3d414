"""Request and response bodies of the clients API (msgspec)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from core.api.schemas import Input, Name, Output
from core.auth.models import OAuthClient
from core.people.permissions import PERMISSIONS

Scope = enum.StrEnum(  # type: ignore[misc]
    "Scope", {name.replace(":", "_").upper(): name for name in sorted(PERMISSIONS)}
)
"""A permission name, as an OAuth scope (``cases:read`` …)."""

GrantType = Literal["client_credentials", "authorization_code", "refresh_token"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
RedirectUri = Annotated[str, msgspec.Meta(min_length=8, max_length=2000)]

Scopes = Annotated[list[Scope], msgspec.Meta(max_length=len(PERMISSIONS))]
UnitIds = Annotated[list[uuid.UUID], msgspec.Meta(max_length=100)]
RedirectUris = Annotated[list[RedirectUri], msgspec.Meta(max_length=10)]


class ClientCreate(Input):
    """Register an API client: an integrator's system (client credentials, the default) or an
    app that signs people in (authorization code with PKCE, with redirect URIs)."""

    name: Name
    scopes: Annotated[
        Scopes,
        msgspec.Meta(
            description="What the client may do: permission names. You can only grant what "
            "you hold yourself at the client's units.",
            examples=[["cases:read", "cases:write", "customers:read"]],
        ),
    ]
    unit_ids: Annotated[
        UnitIds,
        msgspec.Meta(
            description="Organization units the client acts for (and those below them); "
            "empty: the whole tenant (needs clients:admin at the top).",
        ),
    ] = msgspec.field(default_factory=list)
    grant_types: Annotated[list[GrantType], msgspec.Meta(min_length=1, max_length=3)] = (
        msgspec.field(default_factory=lambda: ["client_credentials"])
    )
    redirect_uris: RedirectUris = msgspec.field(default_factory=list)
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    jwks: dict[str, Any] | None = None
    """Public keys (a JWKS) of a ``private_key_jwt`` client."""


class ClientUpdate(Input):
    """Change what is given; tokens already issued keep their scopes until they expire."""

    name: Name | None = None
    scopes: Scopes | None = None
    unit_ids: UnitIds | None = None
    redirect_uris: RedirectUris | None = None


class ClientOut(Output):
    """An API client (never its secret)."""

    client_id: str
    name: str
    scopes: list[str]
    unit_ids: list[uuid.UUID]
    grant_types: list[str]
    redirect_uris: list[str]
    token_endpoint_auth_method: str
    active: bool
    has_secret: bool
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    version: int

    @classmethod
    def of(cls, client: OAuthClient) -> ClientOut:
        """The representation of ``client``."""
        return cls(
            client_id=client.client_id,
            name=client.name,
            scopes=list(client.scopes),
            unit_ids=[uuid.UUID(u) for u in client.unit_ids],
            grant_types=list(client.grant_types),
            redirect_uris=list(client.redirect_uris),
            token_endpoint_auth_method=client.token_endpoint_auth_method,
            active=client.active,
            has_secret=client.secret_hash is not None,
            created_at=client.created_at,
            updated_at=client.updated_at,
            secret_rotated_at=client.secret_rotated_at,
            version=client.version,
        )


class ClientCreated(Output):
    """A new client and its secret: shown this once, stored only as a digest."""

    client: ClientOut
    client_secret: str | None
    """None for ``private_key_jwt`` and public (``none``) clients."""


class ClientSecret(Output):
    """A rotated secret: shown this once; the previous one stopped working."""

    client_id: str
    client_secret: str
    rotated_at: datetime
