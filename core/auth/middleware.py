"""Bearer-token authentication for every ``/api/`` path.

Per request: the JWT is checked against the platform's public keys (cached in memory, a
reload on an unknown ``kid``), then one small query, through the session of the token's
tenant, reads whether the jti was revoked, whether the client (and, for a person, the
person) is still active, the client's units, and the caller's roles
(:func:`core.auth.tokens.token_state` with ``with_access``). So a revoked token, a disabled
client and a deactivated person stop working at once, and the request's
:class:`core.auth.guards.Access` (``scope[ACCESS_KEY]``) costs no further query. Work that
must follow authentication in the same short transaction (the database rate limiter's
buckets) is passed in as ``hooks``: one transaction and one connection checkout for both. No
password hashing happens here.

The tenant of the request comes from the token's ``tenant`` claim and nothing else.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.middleware._utils import should_bypass_middleware
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import AuditActor, record
from core.auth.guards import Access, load_access, person_access
from core.auth.principal import Principal, current_principal
from core.auth.server import AuthContext, auth_context
from core.auth.tokens import TokenError, audience_allows, token_state
from core.db import Database
from core.people.models import Person
from core.settings import Settings

log = structlog.get_logger("insurdesk.auth")

PROTECTED_PREFIX = "/api/"


ACCESS_KEY = "insurdesk.access"
"""ASGI scope key of the request's :class:`core.auth.guards.Access` (read with the token)."""

AuthHook = Callable[[Session, Principal, dict[str, Any]], Any]
"""Work run after a token is accepted, in the same transaction of the token's tenant; its
result is stored in the ASGI scope under the hook's key. It must not raise: an exception is
logged, its result is None and the transaction is rolled back instead of committed."""


@dataclass(frozen=True)
class Authenticated:
    """An accepted token: its principal, the caller's access and the hooks' results."""

    principal: Principal
    access: Access
    extras: dict[str, Any]


def authenticate_claims(
    ctx: AuthContext, claims: dict[str, Any], hooks: Mapping[str, AuthHook] | None = None
) -> Authenticated:
    """Check the token's live state in its tenant, resolve the caller's access and run
    ``hooks``, all in one transaction.

    :raises TokenError: revoked token, disabled client, inactive person.
    """
    tenant_id = uuid.UUID(str(claims["tenant"]))
    kind = claims["kind"]
    extras: dict[str, Any] = {}
    with ctx.db.tenant_session(tenant_id) as session:
        session.begin()
        state = token_state(session, claims, with_access=True)
        principal = Principal(
            tenant_id=tenant_id,
            subject=str(claims["sub"]),
            kind=kind,
            scopes=frozenset(str(claims.get("scope", "")).split()),
            person_id=state.person_id,
            client_id=str(claims["client_id"]),
            token_id=str(claims["jti"]),
            client_unit_ids=state.unit_ids if kind == "client" else (),
            username=state.username,
        )
        if state.grants is not None:
            access = person_access(principal, state.grants)
        else:
            access = load_access(session, principal)
        failed = False
        for key, hook in (hooks or {}).items():
            try:
                extras[key] = None if failed else hook(session, principal, claims)
            except Exception as exc:  # a hook must not refuse an accepted token
                log.warning("auth_hook_failed", hook=key, error=repr(exc))
                extras[key] = None
                failed = True
        if failed:
            session.rollback()
        else:
            session.commit()
    return Authenticated(principal, access, extras)


REFUSAL_AUDIT_SECONDS = 300.0
"""A refused token (revoked, disabled client or person) is recorded once per this period per
process, so a client retrying with it cannot flood the audit log."""
_recent_refusals: dict[str, float] = {}
_refusals_lock = threading.Lock()


def _first_refusal(jti: str) -> bool:
    now = time.monotonic()
    with _refusals_lock:
        last = _recent_refusals.get(jti)
        if last is not None and now - last < REFUSAL_AUDIT_SECONDS:
            return False
        if len(_recent_refusals) >= 4096:
            _recent_refusals.clear()
        _recent_refusals[jti] = now
        return True


def record_refused_token(
    ctx: AuthContext, claims: dict[str, Any], why: str, source: str | None
) -> None:
    """Record ``auth.token_refused`` in the token's tenant: a correctly signed token that is
    no longer accepted (revoked, client disabled, person deactivated). Tokens that do not
    verify (bad signature, expired) name no tenant that can be trusted: they are only in the
    structured log."""
    jti = str(claims.get("jti", ""))
    if not _first_refusal(jti):
        return
    tenant_id = uuid.UUID(str(claims["tenant"]))
    client_id = str(claims.get("client_id", ""))
    with ctx.db.tenant_transaction(tenant_id) as session:
        person_id = None
        label = f"client:{client_id}"
        if claims.get("kind") == "person":
            try:
                person_id = uuid.UUID(str(claims["sub"]))
            except ValueError:
                person_id = None
            username = (
                session.scalar(select(Person.username).where(Person.id == person_id))
                if person_id
                else None
            )
            label = f"person:{username or claims.get('sub')}"
        record(
            session,
            action="auth.token_refused",
            actor=AuditActor(
                "person" if person_id else "client", label[:200], person_id, client_id
            ),
            target=("oauth_client", client_id),
            details={"client_id": client_id, "jti": jti, "reason": why},
            source=source,
        )
    log.info("token_refused", tenant=str(tenant_id), client_id=client_id, reason=why)


def authenticate_bearer(
    ctx: AuthContext,
    token: str,
    source: str | None = None,
    hooks: Mapping[str, AuthHook] | None = None,
    resource: str | None = None,
) -> tuple[Authenticated, dict[str, Any]]:
    """Verify ``token`` (and, given the request path ``resource``, that its audience covers
    it), check its state and run ``hooks`` (blocking: run in a thread). A verified token
    refused by its tenant's state is recorded (:func:`record_refused_token`).
    """
    claims = ctx.verifier.verify(token)
    if resource is not None and not audience_allows(
        claims.get("aud"), ctx.settings.issuer, resource
    ):
        raise TokenError("token audience does not include this resource")
    try:
        return authenticate_claims(ctx, claims, hooks), claims
    except TokenError as exc:
        record_refused_token(ctx, claims, exc.detail, source)
        raise


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates ``/api/`` requests; other paths (OAuth, health, schema) pass through."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        db: Database,
        hooks: Mapping[str, AuthHook] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.ctx = auth_context(settings, db)
        self.hooks = dict(hooks or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, set ``scope['user']``/``scope['auth']`` and the context variable."""
        path = scope.get("path", "")
        if not path.startswith(PROTECTED_PREFIX) or should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=scope,
            scopes=self.scopes,
        ):
            await self.app(scope, receive, send)
            return
        done, claims = await self._authenticate(ASGIConnection(scope))
        scope["user"] = done.principal
        scope["auth"] = claims
        scope[ACCESS_KEY] = done.access  # type: ignore[literal-required]
        for key, value in done.extras.items():
            scope[key] = value  # type: ignore[literal-required]
        reset = current_principal.set(done.principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(reset)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """The principal of the request's bearer token, or a 401."""
        done, claims = await self._authenticate(connection)
        return AuthenticationResult(user=done.principal, auth=claims)

    async def _authenticate(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> tuple[Authenticated, dict[str, Any]]:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("missing bearer token")
        try:
            source = connection.client.host if connection.client else None
            return await self.ctx.db.run(
                authenticate_bearer, self.ctx, token, source, self.hooks, connection.url.path
            )
        except TokenError as exc:
            raise NotAuthorizedException(exc.detail) from None


def auth_middleware(
    settings: Settings, db: Database, hooks: Mapping[str, AuthHook] | None = None
) -> DefineMiddleware:
    """The authentication middleware of the app (see :class:`BearerTokenMiddleware`)."""
    return DefineMiddleware(BearerTokenMiddleware, settings=settings, db=db, hooks=hooks)
