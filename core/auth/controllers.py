"""HTTP endpoints of the authorization server, and ``GET /api/v1/me``.

``/oauth/*`` and the discovery documents are outside bearer authentication; their errors are
RFC 6749 JSON (``{"error": ..., "error_description": ...}``), which is what OAuth clients
parse, not problem details. Each handler reads the request (awaiting the form), then runs
authlib in a worker thread inside one tenant unit (:meth:`core.auth.server.AuthContext.run`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import msgspec
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from litestar import Request, Response, get, post, route
from litestar.di import NamedDependency
from sqlalchemy import select
from sqlalchemy.exc import DataError

from core.audit import AuditActor, record
from core.auth.keys import public_jwks
from core.auth.pages import INVALID_CREDENTIALS, error_page, login_page
from core.auth.passwords import hash_password, verify_password
from core.auth.principal import Principal
from core.auth.server import (
    AuthContext,
    LitestarOAuth2Request,
    TenantUnit,
    auth_context,
    server_metadata,
)
from core.db import Database, utcnow
from core.people.models import Person
from core.settings import Settings

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_DUMMY_HASH: list[str] = []


async def _oauth_request(
    request: Request[Any, Any, Any], settings: Settings, payload_from: Literal["query", "form"]
) -> LitestarOAuth2Request:
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        data = await request.form()
        form = [(k, v) for k, v in data.multi_items() if isinstance(v, str)]
    query = [(k, v) for k, v in request.query_params.multi_items() if isinstance(v, str)]
    uri = settings.issuer.rstrip("/") + request.url.path
    if request.url.query:
        uri += "?" + request.url.query
    return LitestarOAuth2Request(
        method=request.method,
        uri=uri,
        headers=request.headers,
        query=query,
        form=form,
        payload_from=payload_from,
        source=request.client.host if request.client else None,
    )


async def _serve(
    ctx: AuthContext,
    request: Request[Any, Any, Any],
    payload_from: Literal["query", "form"],
    work: Any,
) -> Response[Any]:
    """Build the authlib request and run ``work(oauth_request, unit)`` in a worker thread."""
    try:
        oauth_request = await _oauth_request(request, ctx.settings, payload_from)
    except InsecureTransportError as error:
        return ctx.server.handle_error_response(None, error)

    def run() -> Response[Any]:
        try:
            return ctx.run(lambda unit: work(oauth_request, unit))
        except (UnicodeError, DataError):  # a Basic header that is not UTF-8, a NUL byte in
            # a value PostgreSQL compares with a text column (the unit rolled back)
            return ctx.server.handle_error_response(
                oauth_request, InvalidRequestError("Malformed request.")
            )

    return await anyio.to_thread.run_sync(run)


@post(
    "/oauth/token",
    exclude_from_auth=True,
    tags=["oauth"],
    operation_id="oauthToken",
    summary="Token endpoint (RFC 6749): client credentials, authorization code, refresh",
    status_code=200,
)
async def token(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    db: NamedDependency[Database],
) -> Response[Any]:
    """Issue access tokens (signed JWTs) and rotating refresh tokens."""
    ctx = auth_context(settings, db)
    return await _serve(
        ctx, request, "form", lambda req, unit: ctx.server.create_token_response(req)
    )


def _authenticate_person(
    unit: TenantUnit, username: str, password: str
) -> tuple[Person | None, str]:
    """The active person of the unit's tenant with these credentials, and why not when not
    (``unknown_user``, ``no_password``, ``wrong_password``, ``inactive``: for the audit log
    only, never for the page); same cost either way."""
    person = None
    if username and len(username) <= 64:
        person = unit.session.scalars(
            select(Person).where(Person.username == username)
        ).one_or_none()
    if person is None or not person.password_hash:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password(uuid.uuid4().hex))
        verify_password(_DUMMY_HASH[0], password)  # equal time, no account enumeration
        return None, "unknown_user" if person is None else "no_password"
    if not verify_password(person.password_hash, password):
        return person, "wrong_password"
    if not person.active:
        return person, "inactive"
    return person, ""


def _sign_in_failed(
    unit: TenantUnit, person: Person | None, username: str, why: str, client_id: str
) -> None:
    """Keep a refused sign-in for the tenant's audit log (written after the rollback of the
    request). An unknown username is named by a keyed fingerprint only: people type passwords
    into the username field."""
    from core.privacy.crypto import keyring_of

    details: dict[str, Any] = {"client_id": client_id, "reason": why}
    if person is not None:
        target: tuple[str, object] | None = ("person", person.id)
        details["username"] = person.username
    else:
        target = None
        assert unit.tenant is not None
        details["username_fingerprint"] = (
            "fp:"
            + keyring_of(unit.session).blind_index(
                unit.session, unit.tenant.id, "audit.username", username[:200]
            )[:16]
        )
    unit.audits.append(
        {
            "action": "auth.sign_in_failed",
            "actor": AuditActor(
                "person" if person is not None else "client",
                f"person:{person.username}" if person is not None else f"client:{client_id}",
                person.id if person is not None else None,
                client_id,
            ),
            "target": target,
            "details": details,
        }
    )


def _authorize(
    ctx: AuthContext, oauth_request: LitestarOAuth2Request, unit: TenantUnit
) -> Response[Any]:
    server = ctx.server
    try:
        grant = server.get_consent_grant(request=oauth_request, end_user=None)
    except OAuth2Error as error:
        if error.redirect_uri:
            return server.handle_error_response(oauth_request, error)
        return error_page(error.error or "invalid_request", error.description)
    assert unit.tenant is not None
    page = {
        "client_name": grant.client.name,
        "tenant_name": unit.tenant.name,
        "scope": oauth_request.scope or "",
    }
    if oauth_request.method != "POST":
        return login_page(**page)
    form = oauth_request.form
    if form.get("action") == "deny":
        return server.create_authorization_response(
            request=oauth_request, grant_user=None, grant=grant
        )
    username = form.get("username", "")
    client_id = grant.client.client_id
    person, why = _authenticate_person(unit, username, form.get("password", ""))
    if person is None or why:
        unit.source = unit.source or oauth_request.source
        _sign_in_failed(unit, person, username, why, client_id)
        return login_page(**page, username=username, error=INVALID_CREDENTIALS, status=401)
    person.last_sign_in_at = utcnow()
    record(
        unit.session,
        action="auth.sign_in",
        actor=AuditActor("person", f"person:{person.username}", person.id, client_id),
        target=("person", person.id),
        details={"client_id": client_id, "scope": oauth_request.scope or ""},
        source=oauth_request.source,
    )
    return server.create_authorization_response(
        request=oauth_request, grant_user=person, grant=grant
    )


@route(
    "/oauth/authorize",
    http_method=["GET", "POST"],
    exclude_from_auth=True,
    tags=["oauth"],
    operation_id="oauthAuthorize",
    include_in_schema=False,
)
async def authorize(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    db: NamedDependency[Database],
) -> Response[Any]:
    """Authorization endpoint: sign-in form (GET), then the code, by redirect (POST)."""
    ctx = auth_context(settings, db)
    return await _serve(ctx, request, "query", lambda req, unit: _authorize(ctx, req, unit))


@post(
    "/oauth/introspect",
    exclude_from_auth=True,
    tags=["oauth"],
    status_code=200,
    operation_id="oauthIntrospect",
    summary="Token introspection (RFC 7662)",
)
async def introspect(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    db: NamedDependency[Database],
) -> Response[Any]:
    """Whether a token is active, for an authenticated client of the same tenant."""
    ctx = auth_context(settings, db)
    return await _serve(
        ctx,
        request,
        "form",
        lambda req, unit: ctx.server.create_endpoint_response("introspection", req),
    )


@post(
    "/oauth/revoke",
    exclude_from_auth=True,
    tags=["oauth"],
    status_code=200,
    operation_id="oauthRevoke",
    summary="Token revocation (RFC 7009)",
)
async def revoke(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    db: NamedDependency[Database],
) -> Response[Any]:
    """Revoke an access token (by jti) or a refresh token (and its family)."""
    ctx = auth_context(settings, db)

    def work(req: LitestarOAuth2Request, unit: TenantUnit) -> Response[Any]:
        response = ctx.server.create_endpoint_response("revocation", req)
        return response or ctx.server.handle_response(200, {}, list(_NO_STORE.items()))

    return await _serve(ctx, request, "form", work)


@get(
    "/oauth/jwks",
    exclude_from_auth=True,
    tags=["oauth"],
    operation_id="oauthJwks",
    summary="Public keys that sign access tokens (JWKS)",
    sync_to_thread=True,
)
def jwks(db: NamedDependency[Database]) -> Response[dict[str, Any]]:
    """Every key that signs, will sign, or signed still-valid tokens."""
    return Response(
        public_jwks(db),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


def _metadata_response(settings: Settings) -> Response[dict[str, Any]]:
    return Response(server_metadata(settings), headers={"Cache-Control": "public, max-age=3600"})


@get(
    "/.well-known/oauth-authorization-server",
    exclude_from_auth=True,
    tags=["oauth"],
    operation_id="oauthMetadata",
    summary="Authorization server metadata (RFC 8414)",
)
async def metadata(settings: NamedDependency[Settings]) -> Response[dict[str, Any]]:
    """Endpoints, grants, auth methods, scopes and PKCE methods of this server."""
    return _metadata_response(settings)


@get("/.well-known/openid-configuration", exclude_from_auth=True, include_in_schema=False)
async def openid_configuration(settings: NamedDependency[Settings]) -> Response[dict[str, Any]]:
    """The same metadata where OpenID-minded client libraries look for it (no ID tokens)."""
    return _metadata_response(settings)


class Me(msgspec.Struct, kw_only=True):
    """Who the bearer token belongs to."""

    tenant: uuid.UUID
    tenant_slug: str | None
    subject: str
    kind: str
    scopes: list[str]
    client_id: str | None
    person_id: uuid.UUID | None
    client_unit_ids: list[uuid.UUID]
    token_id: str | None
    expires_at: datetime


@get("/api/v1/me", tags=["auth"], operation_id="getMe", summary="The caller, as the token says")
async def me(request: Request[Principal, dict[str, Any], Any]) -> Me:
    """The authenticated principal: tenant, subject, kind and scopes of the token."""
    principal, claims = request.user, request.auth
    return Me(
        tenant=principal.tenant_id,
        tenant_slug=claims.get("tenant_slug"),
        subject=principal.subject,
        kind=principal.kind,
        scopes=sorted(principal.scopes),
        client_id=principal.client_id,
        person_id=principal.person_id,
        client_unit_ids=list(principal.client_unit_ids),
        token_id=principal.token_id,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


ROUTES = [token, authorize, introspect, revoke, jwks, metadata, openid_configuration, me]
