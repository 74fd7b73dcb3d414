"""The platform's OAuth 2.0 authorization server: authlib's framework-agnostic server on Litestar.

How the tenant is found: every ``client_id`` is ``<tenant slug>.<random>``. The first time a
request names a client (:meth:`AuthorizationServer.query_client`), the slug is looked up in the
``tenants`` platform table and the rest of the request runs in *that tenant's* session: the
client row, codes, refresh tokens and people are read and written through it (ORM filter and,
on PostgreSQL, row-level security). A request can never bind a second tenant.

Each OAuth request runs in one :class:`TenantUnit` (one session, one transaction) in a worker
thread; it is committed when the response is a success, rolled back otherwise (except for the
revocations that a replayed code or refresh token triggers, which are kept).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from authlib.oauth2 import AuthorizationServer as _AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from litestar import Response
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.audit import record
from core.auth.audit import record_token_event
from core.auth.hashing import digest, generate_handle
from core.auth.keys import KeyStore
from core.auth.models import (
    AUTH_METHODS,
    GRANT_TYPES,
    OAuthClient,
    RefreshToken,
    RevokedToken,
    as_utc,
)
from core.auth.tokens import (
    AccessTokenVerifier,
    access_token_claims,
    check_resource,
    resource_base,
    sign_access_token,
)
from core.db import Database, new_id, utcnow
from core.people.models import Person
from core.people.permissions import PERMISSIONS
from core.settings import Settings
from core.tenancy.models import Tenant

log = structlog.get_logger("insurdesk.auth")

REFRESH_TOKEN_TTL = timedelta(days=30)
"""Lifetime of a refresh token (each use replaces it with a new one)."""
AUTHORIZATION_CODE_TTL = timedelta(minutes=5)
"""Lifetime of an authorization code (RFC 6749 recommends at most 10 minutes)."""
SIGNING_ALGORITHMS = ("RS256", "ES256")
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
REVOCATION_AUTH_METHODS = [*INTROSPECTION_AUTH_METHODS, "none"]


# --- the unit of work of one OAuth request ------------------------------------------------


class TenantUnit:
    """The tenant-bound work of one OAuth request: one tenant, one session, one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.tenant: Tenant | None = None
        self._session: Session | None = None
        self.commit_anyway = False
        """Set when a refused request must still persist what it did (replay revocations)."""
        self.issued_claims: dict[str, Any] | None = None
        """Claims of the access token issued in this request (read by ``save_token``)."""
        self.source: str | None = None
        """The caller's network address (for the audit log)."""
        self.audience: str | list[str] | None = None
        """The ``aud`` of the token to issue: RFC 8707 resources asked for (None: the API)."""
        self.refusals: list[dict[str, Any]] = []
        """Refused requests to record in the audit log after the rollback."""
        self.audits: list[dict[str, Any]] = []
        """Other entries to record after a rollback (``record`` keyword arguments without
        ``source``): refused sign-ins."""

    def bind(self, tenant: Tenant) -> Session | None:
        """Open the session of ``tenant``; None if the request is already bound to another."""
        if self.tenant is None:
            self.tenant = tenant
            self._session = self.db.tenant_session(tenant.id)
            self._session.begin()
        elif self.tenant.id != tenant.id:
            return None
        return self._session

    @property
    def session(self) -> Session:
        """The tenant session (only once a client has been named)."""
        if self._session is None:
            raise RuntimeError("no tenant bound to this OAuth request yet")
        return self._session

    def finish(self, commit: bool) -> None:
        """Commit or roll back, and close the session."""
        if self._session is None:
            return
        try:
            if commit:
                self._session.commit()
            else:
                self._session.rollback()
        finally:
            self._session.close()
            self._session = None


_current_unit: ContextVar[TenantUnit | None] = ContextVar("oauth_tenant_unit", default=None)


def current_unit() -> TenantUnit:
    """The unit of the OAuth request being served."""
    unit = _current_unit.get()
    if unit is None:
        raise RuntimeError("not inside an OAuth request")
    return unit


def find_tenant(db: Database, slug: str) -> Tenant | None:
    """The active tenant with ``slug`` (a read of the ``tenants`` platform table)."""
    with Session(db.engine) as session:
        return session.scalars(
            select(Tenant).where(Tenant.slug == slug, Tenant.status == "active")
        ).one_or_none()


def active_person(session: Session, person_id: Any) -> Person | None:
    """The person, if they exist in the session's tenant and are active."""
    person = session.get(Person, (session.info["tenant_id"], person_id))
    return person if person is not None and person.active else None


def revoke_family(unit: TenantUnit, family_id: Any, *, reason: str) -> None:
    """Revoke every refresh token of a family, and the access tokens issued with them."""
    session, now = unit.session, utcnow()
    rows = session.scalars(select(RefreshToken).where(RefreshToken.family_id == family_id)).all()
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = now
        expires = row.access_token_expires_at
        if row.access_token_jti and expires is not None and as_utc(expires) > now:
            revoke_jti(session, row.access_token_jti, as_utc(expires))
    unit.commit_anyway = True
    log.warning("oauth_token_family_revoked", family=str(family_id), reason=reason)


RevokedTable: Table = RevokedToken.__table__  # type: ignore[assignment]


def _named_client(request: Any) -> str | None:
    """The client id a request names (authenticated or not): the authenticated client, the
    Basic user name, the ``client_id`` form field, or the assertion's subject."""
    client = getattr(request, "client", None)
    if client is not None:
        return str(client.client_id)
    import base64

    header = str(request.headers.get("Authorization") or "")
    if header.lower().startswith("basic "):
        try:
            user = base64.b64decode(header[6:].strip()).decode("utf-8").split(":", 1)[0]
            from urllib.parse import unquote

            return unquote(user)[:160] or None
        except (ValueError, UnicodeError):
            return None
    data = request.payload.data if getattr(request, "payload", None) is not None else {}
    named = data.get("client_id")
    return str(named)[:160] if named else None


def revoke_jti(session: Session, jti: str, expires_at: datetime) -> bool:
    """Record ``jti`` as revoked until ``expires_at``; False if it already was.

    ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL), so two concurrent
    requests cannot both record it and neither fails.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(RevokedTable)
        .values(
            tenant_id=session.info["tenant_id"],
            id=new_id(),
            jti=jti,
            expires_at=expires_at,
            revoked_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "jti"])
        .returning(RevokedTable.c.id)
    )
    return session.execute(stmt).first() is not None


# --- the request wrapper ------------------------------------------------------------------


class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: dict[str, list[str]] = {}
        for key, value in pairs:
            self._data.setdefault(key, value)
            self._datalist.setdefault(key, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class LitestarOAuth2Request(OAuth2Request):
    """An authlib request built from what a Litestar handler read (query, form, headers).

    ``uri`` is built on the configured issuer, not on what the proxy forwarded, so the
    https check authlib makes applies to the public URL.
    """

    def __init__(
        self,
        *,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        payload_from: Literal["query", "form"],
        source: str | None = None,
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.source = source
        self._query = _Payload(query)
        self._form = _Payload(form)
        self.payload = self._query if payload_from == "query" else self._form

    @property
    def args(self) -> dict[str, str]:
        """Query parameters (first value of each)."""
        return self._query.data

    @property
    def form(self) -> dict[str, str]:
        """Form parameters (first value of each)."""
        return self._form.data


# --- the server ---------------------------------------------------------------------------


class InvalidTargetError(OAuth2Error):
    """RFC 8707: the requested resource is invalid, unknown or malformed."""

    error = "invalid_target"
    status_code = 400


class _TokenGenerator(BearerTokenGenerator):
    """Bearer tokens whose access token is a signed JWT (:mod:`core.auth.tokens`)."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        super().__init__(
            self._access_token,
            self._refresh_token,
            lambda client, grant_type: settings.access_token_ttl,
        )
        self.settings = settings
        self.keys = keys

    def _access_token(
        self, client: OAuthClient, grant_type: str, user: Person | None, scope: str
    ) -> str:
        unit = current_unit()
        assert unit.tenant is not None
        claims = access_token_claims(
            issuer=self.settings.issuer,
            ttl=self.settings.access_token_ttl,
            tenant_id=unit.tenant.id,
            tenant_slug=unit.tenant.slug,
            kind="person" if user is not None else "client",
            subject=str(user.id) if user is not None else client.client_id,
            client_id=client.client_id,
            scope=scope or "",
            audience=unit.audience,
        )
        unit.issued_claims = claims
        record_token_event(
            unit.session,
            action="oauth.token_issued",
            client_id=client.client_id,
            details={
                "grant_type": grant_type,
                "scopes": sorted(str(scope or "").split()),
                "kind": claims["kind"],
                "sub": claims["sub"],
                "jti": claims["jti"],
                "aud": claims["aud"],
                "expires_at": claims["exp"],
            },
            source=unit.source,
        )
        log.info(
            "oauth_token_issued",
            client_id=client.client_id,
            grant_type=grant_type,
            kind=claims["kind"],
            sub=claims["sub"],
            jti=claims["jti"],
            tenant=claims["tenant"],
        )
        return sign_access_token(claims, self.keys.signing_key())

    def _refresh_token(self, **_: Any) -> str:
        return generate_handle(32)


class AuthorizationServer(_AuthorizationServer):
    """authlib's authorization server with Litestar requests and tenant-bound storage."""

    def __init__(self, settings: Settings, db: Database, keys: KeyStore) -> None:
        super().__init__(scopes_supported=sorted(PERMISSIONS))
        self.settings = settings
        self.db = db
        self.keys = keys
        self.verifier = AccessTokenVerifier(keys, settings.issuer)
        self.register_token_generator("default", _TokenGenerator(settings, keys))

    # storage

    def query_client(self, client_id: str) -> OAuthClient | None:
        """Find the tenant from the client id's slug, then the client in that tenant."""
        if not isinstance(client_id, str) or len(client_id) > 160 or "." not in client_id:
            return None
        unit = current_unit()
        slug = client_id.rpartition(".")[0]
        tenant = unit.tenant if unit.tenant and unit.tenant.slug == slug else None
        tenant = tenant or find_tenant(self.db, slug)
        if tenant is None:
            return None
        session = unit.bind(tenant)
        if session is None:
            return None
        client = session.scalars(
            select(OAuthClient).where(OAuthClient.client_id == client_id)
        ).one_or_none()
        return client if client is not None and client.active else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Store the refresh token (as a digest); access tokens are self-contained JWTs."""
        refresh = token.get("refresh_token")
        if not refresh:
            return
        unit = current_unit()
        claims = unit.issued_claims or {}
        if request.authorization_code is not None:
            family = request.authorization_code.id
        elif request.refresh_token is not None:
            family = request.refresh_token.family_id
        else:
            family = new_id()
        now = utcnow()
        unit.session.add(
            RefreshToken(
                token_hash=digest(refresh),
                oauth_client_id=request.client.id,
                person_id=request.user.id,
                family_id=family,
                scope=token.get("scope", ""),
                access_token_jti=claims.get("jti"),
                access_token_expires_at=(
                    datetime.fromtimestamp(claims["exp"], UTC) if "exp" in claims else None
                ),
                created_at=now,
                expires_at=now + REFRESH_TOKEN_TTL,
            )
        )
        unit.session.flush()

    # framework integration

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        """Requests are built by the controllers (they must await the form first)."""
        if isinstance(request, OAuth2Request):
            unit = _current_unit.get()
            if unit is not None and isinstance(request, LitestarOAuth2Request):
                unit.source = request.source
            return request
        raise TypeError("build a LitestarOAuth2Request in the controller")

    def create_token_response(self, request: Any = None) -> Response[Any]:
        """authlib's token endpoint, after reading the RFC 8707 ``resource`` parameters (and
        ``audience``, as some libraries send it): the token's ``aud`` becomes those resources.
        One that is not this platform's API is ``invalid_target``."""
        request = self.create_oauth2_request(request)
        try:
            current_unit().audience = self._audience(request)
        except OAuth2Error as error:
            return self.handle_error_response(request, error)
        return super().create_token_response(request)

    def _audience(self, request: OAuth2Request) -> list[str] | None:
        lists = request.payload.datalist if request.payload is not None else {}
        asked = [*lists.get("resource", []), *lists.get("audience", [])]
        if not asked:
            return None
        found: list[str] = []
        for value in asked:
            resource = check_resource(str(value), self.settings.issuer)
            if resource is None:
                raise InvalidTargetError(  # never echo the value: RFC 6749 descriptions are ASCII
                    "a resource is not this platform's API; use "
                    f"{resource_base(self.settings.issuer)}[/<collection>]"
                )
            found.append(resource)
        return sorted(set(found))

    def handle_error_response(self, request: Any, error: Any) -> Response[Any]:
        """An RFC 6749 error; a refused token, introspection or revocation request of a known
        tenant is kept for its audit log (recorded after the rollback)."""
        unit = _current_unit.get()
        if unit is not None and unit.tenant is not None and request is not None:
            endpoint = str(getattr(request, "uri", "")).split("?", 1)[0].rsplit("/", 1)[-1]
            action = {
                "token": "oauth.token_refused",
                "introspect": "oauth.introspection_refused",
                "revoke": "oauth.revocation_refused",
            }.get(endpoint)
            if action is not None:
                unit.refusals.append(
                    {
                        "action": action,
                        "client_id": _named_client(request),
                        "details": {
                            "error": getattr(error, "error", None),
                            "grant_type": request.payload.data.get("grant_type")
                            if getattr(request, "payload", None) is not None
                            else None,
                            "scopes": sorted(str(request.payload.data.get("scope") or "").split())
                            if getattr(request, "payload", None) is not None
                            else [],
                        },
                    }
                )
        return super().handle_error_response(request, error)

    def create_json_request(self, request: Any) -> Any:
        """No JSON endpoints (dynamic client registration is not offered)."""
        raise NotImplementedError

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]] | dict[str, str]
    ) -> Response[Any]:
        """An authlib ``(status, body, headers)`` triple as a Litestar response."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        media_type = "application/json" if body else "text/plain"
        out: dict[str, str] = {}
        for name, value in pairs:
            if name.lower() == "content-type":
                media_type = value
            else:
                out[name] = value
        if isinstance(body, dict):
            content: bytes = json.dumps(body).encode("utf-8")
        else:
            content = (body or "").encode("utf-8") if isinstance(body, str) else bytes(body or b"")
        return Response(content=content, status_code=status, headers=out, media_type=media_type)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's hooks become log entries (never with a secret or token)."""
        client = kwargs.get("client")
        if name == "after_revoke_token":
            log.info("oauth_token_revoked", client_id=getattr(client, "client_id", None))


# --- one context per (settings, database) --------------------------------------------------


@dataclass
class AuthContext:
    """Everything authentication needs for one app: keys, verifier, authorization server."""

    settings: Settings
    db: Database
    keys: KeyStore
    verifier: AccessTokenVerifier
    server: AuthorizationServer

    @contextmanager
    def unit(self) -> Iterator[TenantUnit]:
        """Run an OAuth request in a fresh :class:`TenantUnit` (the caller finishes it)."""
        unit = TenantUnit(self.db)
        token = _current_unit.set(unit)
        try:
            yield unit
        finally:
            _current_unit.reset(token)

    def run(self, work: Callable[[TenantUnit], Response[Any]]) -> Response[Any]:
        """Call ``work`` in a unit; commit if it answered a success, else roll back (and then
        record the refusal in the tenant's audit log, in a transaction of its own)."""
        with self.unit() as unit:
            try:
                response = work(unit)
            except BaseException:
                unit.finish(False)
                raise
            unit.finish((response.status_code or 200) < 400 or unit.commit_anyway)
            if (unit.refusals or unit.audits) and unit.tenant is not None:
                self._record_refusals(unit)
            return response

    def _record_refusals(self, unit: TenantUnit) -> None:
        assert unit.tenant is not None
        with self.db.tenant_transaction(unit.tenant.id) as session:
            for entry in unit.audits:
                record(session, **entry, source=unit.source)
            for refusal in unit.refusals:
                record_token_event(
                    session,
                    action=refusal["action"],
                    client_id=refusal["client_id"],
                    details=refusal["details"],
                    source=unit.source,
                )


_KEYSTORES: weakref.WeakKeyDictionary[Database, KeyStore] = weakref.WeakKeyDictionary()
_CONTEXTS: weakref.WeakKeyDictionary[Database, dict[Settings, AuthContext]] = (
    weakref.WeakKeyDictionary()
)


def auth_context(settings: Settings, db: Database) -> AuthContext:
    """The (memoized) authentication context of ``settings`` and ``db``."""
    by_settings = _CONTEXTS.setdefault(db, {})
    ctx = by_settings.get(settings)
    if ctx is None:
        keys = _KEYSTORES.setdefault(db, KeyStore(db))
        from core.auth.grants import register_grants

        server = AuthorizationServer(settings, db, keys)
        register_grants(server)
        ctx = AuthContext(settings, db, keys, server.verifier, server)
        by_settings[settings] = ctx
    return ctx


def server_metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    base = settings.issuer.rstrip("/")
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/oauth/jwks",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "scopes_supported": sorted(PERMISSIONS),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": REVOCATION_AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "ui_locales_supported": ["zh-CN", "en"],
    }
