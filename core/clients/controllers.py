"""HTTP API of a tenant's OAuth clients: register, list, read, change, rotate, disable.

Needs ``clients:admin`` at the client's units (:mod:`core.clients.services`). The secret is
in the answer to registration and rotation only. Another tenant's client, or one the caller
cannot manage, is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, Parameter
from sqlalchemy.orm import Session

from core.api.concurrency import (
    IfMatch,
    check_if_match,
    flush_or_412,
    requires_if_match,
    version_etag,
    with_etag,
)
from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, check_limit, decode_cursor, encode_cursor
from core.auth.guards import Access
from core.auth.principal import Principal
from core.clients import services
from core.clients.schemas import ClientCreate, ClientCreated, ClientOut, ClientSecret, ClientUpdate
from core.db import utcnow

ClientId = Annotated[
    str, Parameter(min_length=3, max_length=160, description="The public client id")
]


def _caller(request: Request[Principal, Any, Any], access: Access) -> services.Caller:
    return services.Caller(access, request.client.host if request.client else None)


class ClientController(Controller):
    """API clients of the caller's tenant."""

    path = "/api/v1/clients"
    tags = ["clients"]
    dependencies = API_DEPENDENCIES

    @post(
        "/",
        operation_id="registerClient",
        summary="Register an API client",
        status_code=201,
    )
    @uses_database
    def register(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[ClientCreate],
    ) -> Response[ClientCreated]:
        """Register a client for units you manage, with scopes you hold there. The answer holds
        the client secret: shown this once, stored only as a digest."""
        client, secret = services.register(
            session,
            _caller(request, access),
            name=data.name,
            scopes=[str(s) for s in data.scopes],
            unit_ids=data.unit_ids,
            grant_types=data.grant_types,
            redirect_uris=data.redirect_uris,
            auth_method=data.token_endpoint_auth_method,
            jwks=data.jwks,
        )
        session.commit()
        return with_etag(
            ClientCreated(client=ClientOut.of(client), client_secret=secret),
            client.version,
            201,
            Location=f"/api/v1/clients/{client.client_id}",
        )

    @get("/", operation_id="listClients", summary="List API clients")
    @uses_database
    def list_clients(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        active: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[ClientOut]:
        """The clients you may manage, oldest first; ``active`` filters."""
        limit = check_limit(limit)
        found = services.list_visible(session, _caller(request, access), active=active)
        found.sort(key=lambda c: c.id)
        if cursor:
            after = decode_cursor(cursor)
            found = [c for c in found if c.id > after]
        page = found[:limit]
        next_cursor = encode_cursor(page[-1].id) if len(found) > limit else None
        return Page(items=[ClientOut.of(c) for c in page], next_cursor=next_cursor)

    @get("/{client_id:str}", operation_id="getClient", summary="One API client")
    @uses_database
    def get_client(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        client_id: ClientId,
    ) -> Response[ClientOut]:
        """A client you may manage (its secret is never shown again)."""
        client = services.get_visible(session, _caller(request, access), client_id)
        return with_etag(ClientOut.of(client), client.version)

    @patch(
        "/{client_id:str}",
        operation_id="updateClient",
        summary="Change an API client's name, scopes, units or redirect URIs",
    )
    @uses_database
    def update_client(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        client_id: ClientId,
        data: JSONBody[ClientUpdate],
        if_match: IfMatch = None,
    ) -> Response[ClientOut]:
        """Change what is given. Tokens already issued keep their scopes until they expire
        (at most the access-token lifetime). ``If-Match`` required of integrators."""
        caller = _caller(request, access)
        client = services.get_visible(session, caller, client_id)
        check_if_match(
            if_match,
            version_etag(client.version),
            required=requires_if_match(request.user),
            what="the client",
        )
        services.update(
            session,
            caller,
            client,
            name=data.name,
            scopes=[str(s) for s in data.scopes] if data.scopes is not None else None,
            unit_ids=data.unit_ids,
            redirect_uris=data.redirect_uris,
        )
        flush_or_412(session, what="the client")
        session.commit()
        return with_etag(ClientOut.of(client), client.version)

    @post(
        "/{client_id:str}/secret",
        operation_id="rotateClientSecret",
        summary="Rotate an API client's secret",
        status_code=200,
    )
    @uses_database
    def rotate_secret(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        client_id: ClientId,
    ) -> Response[ClientSecret]:
        """A new secret, shown this once; the previous one stops working at once. Tokens
        already issued stay valid until they expire."""
        caller = _caller(request, access)
        client = services.get_visible(session, caller, client_id)
        secret = services.rotate_secret(session, caller, client)
        flush_or_412(session, what="the client")
        session.commit()
        return with_etag(
            ClientSecret(
                client_id=client.client_id,
                client_secret=secret,
                rotated_at=client.secret_rotated_at or utcnow(),
            ),
            client.version,
        )

    @post(
        "/{client_id:str}/disable",
        operation_id="disableClient",
        summary="Disable an API client",
        status_code=200,
    )
    @uses_database
    def disable(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        client_id: ClientId,
    ) -> Response[ClientOut]:
        """No more tokens for this client, and the ones it holds are refused from the next
        request (introspection says inactive). Disabling twice changes nothing."""
        caller = _caller(request, access)
        client = services.get_visible(session, caller, client_id)
        services.disable(session, caller, client)
        flush_or_412(session, what="the client")
        session.commit()
        return with_etag(ClientOut.of(client), client.version)


ROUTES = [ClientController]
