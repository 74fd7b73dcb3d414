"""Bearer-token authentication for every ``/api/`` path.

Per request: the JWT is checked against the platform's public keys (cached in memory, a
reload on an unknown ``kid``); then the token's live state: whether the jti was revoked,
whether the client (and, for a person, the person) is still active, the client's units, and
the caller's roles (:func:`core.auth.tokens.token_state` with ``with_access``, one small query
through the session of the token's tenant). On PostgreSQL an accepted token's state is kept
in the process's :class:`core.auth.state_cache.AuthStateCache`, so the next request with the
same token reads nothing: every write to the tables that state comes from drops the tenant's
entries, in this process before the write's commit is answered and in every other process when
PostgreSQL's notice of the commit arrives (docs/decisions/0011-auth-state-cache.md). So a
revoked token, a disabled client, a deactivated person and a removed role stop working from the
next request, as when the state was read every time. On SQLite, and on PostgreSQL while the
cache's ``LISTEN`` connection is down, the state is read on every request.

The request's :class:`core.auth.guards.Access` (``scope[ACCESS_KEY]``) costs no further query.
Work that must follow authentication in a short transaction of the token's tenant (the database
rate limiter's buckets) is passed in as ``hooks``: it runs in the transaction that read the
state, or, when the state came from the cache, in one of its own. No password hashing happens
here.

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
from core.auth.state_cache import AuthStateCache
from core.auth.tokens import TokenError, audience_allows, token_state
from core.db import Database
from core.people.models import Person
from core.settings import Settings

log = structlog.get_logger("insurdesk.auth")

PROTECTED_PREFIX = "/api/"


ACCESS_KEY = "insurdesk.access"
"""ASGI scope key of the request's :class:`core.auth.guards.Access` (read with the token)."""

AuthHook = Callable[[Session, Principal, dict[str, Any]], Any]
"""Work run after a token is accepted, in a transaction of the token's tenant: the one that read
the token's state, or, when that state came from the cache, a transaction of its own (begun
only if the hook uses the session). Its result is stored in the ASGI scope under the hook's
key. It must not raise: an exception is logged, its result is None and the transaction is
rolled back instead of committed."""


QuickHook = Callable[[Principal, dict[str, Any]], Any]
"""What an :data:`AuthHook` of the same key would answer, if it can be answered without the
database (e.g. the rate limiter's tokens from this process's leases), else None. Tried on a
cache hit before any transaction: when every hook has a quick answer, the request does no
database work to authenticate."""


@dataclass(frozen=True)
class Authenticated:
    """An accepted token: its principal, the caller's access and the hooks' results."""

    principal: Principal
    access: Access
    extras: dict[str, Any]


def authenticate_claims(
    ctx: AuthContext,
    claims: dict[str, Any],
    hooks: Mapping[str, AuthHook] | None = None,
    cache: AuthStateCache | None = None,
) -> Authenticated:
    """Check the token's live state in its tenant, resolve the caller's access and run
    ``hooks``, all in one transaction; an accepted state is kept in ``cache`` (if given).

    :raises TokenError: revoked token, disabled client, inactive person.
    """
    tenant_id = uuid.UUID(str(claims["tenant"]))
    kind = claims["kind"]
    generation = cache.generation(tenant_id) if cache is not None else None
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
        extras = _run_hooks(session, principal, claims, hooks)
    if cache is not None and generation is not None:
        cache.put(claims, generation, principal, access)
    return Authenticated(principal, access, extras)


def run_auth_hooks(
    ctx: AuthContext, principal: Principal, claims: dict[str, Any], hooks: Mapping[str, AuthHook]
) -> dict[str, Any]:
    """Run ``hooks`` for a token whose state came from the cache, in a transaction of its
    tenant of their own (which begins only if a hook uses the session)."""
    with ctx.db.tenant_session(principal.tenant_id) as session:
        return _run_hooks(session, principal, claims, hooks)


def _run_hooks(
    session: Session,
    principal: Principal,
    claims: dict[str, Any],
    hooks: Mapping[str, AuthHook] | None,
) -> dict[str, Any]:
    """Run ``hooks`` in ``session``'s transaction and end it: committed, or rolled back if a
    hook failed (the hooks after it are not run; their results are None)."""
    extras: dict[str, Any] = {}
    failed = False
    for key, hook in (hooks or {}).items():
        try:
            extras[key] = None if failed else hook(session, principal, claims)
        except Exception as exc:  # a hook must not refuse an accepted token
            log.warning("auth_hook_failed", hook=key, error=repr(exc))
            extras[key] = None
            failed = True
    if session.in_transaction():
        if failed:
            session.rollback()
        else:
            session.commit()
    return extras


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


def verified_claims(ctx: AuthContext, token: str, resource: str | None = None) -> dict[str, Any]:
    """The verified claims of ``token`` whose audience, given the request path ``resource``,
    covers it (a database read if the signing keys must be reloaded).

    :raises TokenError: the token does not verify or is not for this resource.
    """
    claims = ctx.verifier.verify(token)
    _check_audience(ctx, claims, resource)
    return claims


def _check_audience(ctx: AuthContext, claims: dict[str, Any], resource: str | None) -> None:
    if resource is not None and not audience_allows(
        claims.get("aud"), ctx.settings.issuer, resource
    ):
        raise TokenError("token audience does not include this resource")


def authenticate_verified(
    ctx: AuthContext,
    claims: dict[str, Any],
    source: str | None = None,
    hooks: Mapping[str, AuthHook] | None = None,
    cache: AuthStateCache | None = None,
) -> Authenticated:
    """Authenticate a verified token: from ``cache`` if it holds the token's state (then only
    ``hooks`` touch the database), else by reading the state (:func:`authenticate_claims`). A
    token refused by its tenant's state is recorded (:func:`record_refused_token`)."""
    hit = cache.get(claims) if cache is not None else None
    if hit is not None:
        extras = run_auth_hooks(ctx, hit.principal, claims, hooks) if hooks else {}
        return Authenticated(hit.principal, hit.access, extras)
    return _read_state(ctx, claims, source, hooks, cache)


def _read_state(
    ctx: AuthContext,
    claims: dict[str, Any],
    source: str | None,
    hooks: Mapping[str, AuthHook] | None,
    cache: AuthStateCache | None,
) -> Authenticated:
    try:
        return authenticate_claims(ctx, claims, hooks, cache)
    except TokenError as exc:
        record_refused_token(ctx, claims, exc.detail, source)
        raise


def authenticate_bearer(
    ctx: AuthContext,
    token: str,
    source: str | None = None,
    hooks: Mapping[str, AuthHook] | None = None,
    resource: str | None = None,
    cache: AuthStateCache | None = None,
) -> tuple[Authenticated, dict[str, Any]]:
    """Verify ``token`` (and, given the request path ``resource``, that its audience covers
    it), check its state (through ``cache``, if given) and run ``hooks`` (blocking: run it with
    :meth:`core.db.Database.run`). A verified token refused by its tenant's state is recorded
    (:func:`record_refused_token`).
    """
    claims = verified_claims(ctx, token, resource)
    return authenticate_verified(ctx, claims, source, hooks, cache), claims


class BearerTokenMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates ``/api/`` requests; other paths (OAuth, health, schema) pass through."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        db: Database,
        hooks: Mapping[str, AuthHook] | None = None,
        cache: AuthStateCache | None = None,
        quick_hooks: Mapping[str, QuickHook] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.ctx = auth_context(settings, db)
        self.hooks = dict(hooks or {})
        self.quick_hooks = dict(quick_hooks or {})
        self.cache = cache

    def _quick_extras(self, principal: Principal, claims: dict[str, Any]) -> dict[str, Any] | None:
        """Every hook's answer without the database, or None if one needs it."""
        extras: dict[str, Any] = {}
        for key in self.hooks:
            quick = self.quick_hooks.get(key)
            answer = quick(principal, claims) if quick is not None else None
            if answer is None:
                return None
            extras[key] = answer
        return extras

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
        source = connection.client.host if connection.client else None
        scope = connection.scope  # the path as connection.url.path gives it, without the URL
        resource = scope.get("root_path", "") + scope["path"]
        cache, db = self.cache, self.ctx.db
        try:
            if cache is not None and cache.active:
                claims = self.ctx.verifier.verify_cached(token)
                if claims is not None:  # no database read so far: pure CPU
                    _check_audience(self.ctx, claims, resource)
                    hit = cache.get(claims)
                    if hit is None:
                        done = await db.run(
                            _read_state, self.ctx, claims, source, self.hooks, cache
                        )
                        return done, claims
                    extras = self._quick_extras(hit.principal, claims)
                    if extras is None:
                        extras = await db.run(
                            run_auth_hooks, self.ctx, hit.principal, claims, self.hooks
                        )
                    return Authenticated(hit.principal, hit.access, extras), claims
            return await db.run(
                authenticate_bearer, self.ctx, token, source, self.hooks, resource, cache
            )
        except TokenError as exc:
            raise NotAuthorizedException(exc.detail) from None


def auth_middleware(
    settings: Settings,
    db: Database,
    hooks: Mapping[str, AuthHook] | None = None,
    cache: AuthStateCache | None = None,
    quick_hooks: Mapping[str, QuickHook] | None = None,
) -> DefineMiddleware:
    """The authentication middleware of the app (see :class:`BearerTokenMiddleware`).

    :param cache: the process's token-state cache (started and closed by the app), or None to
        read every request's token state.
    :param quick_hooks: answers of ``hooks`` that need no database, tried on a cache hit.
    """
    return DefineMiddleware(
        BearerTokenMiddleware,
        settings=settings,
        db=db,
        hooks=hooks,
        cache=cache,
        quick_hooks=quick_hooks,
    )
