"""JWT access tokens (RFC 9068 profile): signing and verification with joserfc.

Claims of every access token:

========== ===============================================================================
``iss``    ``settings.issuer``
``sub``    the person's id (``kind = person``) or the client's ``client_id`` (``client``)
``aud``    ``insurdesk-api``, or the RFC 8707 resources asked for
``exp``    ``iat + settings.access_token_ttl``
``iat``    issue time; ``nbf`` equals it
``jti``    random id (revocation, introspection)
``client_id`` the OAuth client the token was issued to
``scope``  space-separated permission names (:data:`core.people.permissions.PERMISSIONS`)
``tenant`` the tenant's UUID: the only source of the request's tenant
``tenant_slug`` the tenant's slug
``kind``   ``person`` or ``client``
========== ===============================================================================

The header carries ``typ: at+jwt``, ``alg`` and the ``kid`` of the signing key.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from sqlalchemy import String, Uuid, bindparam, exists, func, select
from sqlalchemy.orm import Session

from core.auth.hashing import generate_handle
from core.auth.keys import KeyStore, LoadedKey

AUDIENCE = "insurdesk-api"
TOKEN_TYPE = "at+jwt"
KINDS = ("person", "client")
LEEWAY_SECONDS = 30
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""

Kind = Literal["person", "client"]


@dataclass(frozen=True)
class TokenState:
    """What the database says about a verified token's client and person."""

    person_id: uuid.UUID | None
    unit_ids: tuple[uuid.UUID, ...]
    username: str | None = None
    """The person's username (``with_access`` only)."""
    grants: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    """A person's ``(unit path, role permissions)`` at active units (``with_access`` only; on
    PostgreSQL read by the same statement, elsewhere by a second one in the same transaction)."""


def token_state(
    session: Session, claims: dict[str, Any], *, with_access: bool = False
) -> TokenState:
    """One query, in ``session`` (the token's tenant): revoked jti, active client and person.

    :param with_access: also read a person's username and role grants (what
        :func:`core.auth.guards.load_access` reads), so a request's authentication and its
        caller's permissions cost one statement.
    :raises TokenError: ``token revoked``, ``client disabled`` or ``person disabled``.
    """
    tenant_id = uuid.UUID(str(claims["tenant"]))
    person_id: uuid.UUID | None = None
    if claims["kind"] == "person":
        try:
            person_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise TokenError("token claim 'sub' invalid") from None
    folded = (
        with_access and person_id is not None and session.get_bind().dialect.name == "postgresql"
    )
    stmt = _state_statement(person_id is not None, with_access and person_id is not None, folded)
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "jti": str(claims["jti"]),
        "client_id": str(claims["client_id"]),
    }
    if person_id is not None:
        params["person"] = person_id
    # Core execution: every table of the statement is filtered by the tenant explicitly (and
    # by row-level security on PostgreSQL), so the ORM's per-statement tenant criteria, which
    # would cost as much as the rest of the authentication, are not needed here.
    row = session.connection().execute(stmt, params).one_or_none()
    if row is None or not row.active:
        raise TokenError("client disabled")
    if row.revoked:
        raise TokenError("token revoked")
    if person_id is not None and not row.person_active:
        raise TokenError("person disabled")
    unit_ids = tuple(uuid.UUID(u) for u in row.unit_ids or ())
    if not with_access or person_id is None:
        return TokenState(person_id, unit_ids)
    if folded:
        raw = row.grants
        pairs = (json.loads(raw) if isinstance(raw, str) else raw) or []
    else:
        from core.auth.guards import person_grants_query

        pairs = session.execute(person_grants_query(person_id)).all()
    grants_of = tuple((str(path), tuple(perms or ())) for path, perms in pairs)
    return TokenState(person_id, unit_ids, row.username, grants_of)


@functools.cache
def _state_statement(person: bool, with_access: bool, folded: bool) -> Any:
    """The token-state statement of one shape, built once (binds: ``tenant``, ``jti``,
    ``client_id``, ``person``). Every table is filtered by the tenant explicitly."""
    from core.auth.guards import person_grants_query
    from core.auth.models import OAuthClient, RevokedToken
    from core.orgs.models import OrgUnit
    from core.people.models import Person, Role, RoleAssignment

    tenant = bindparam("tenant", type_=Uuid())
    person_id = bindparam("person", type_=Uuid())
    revoked = exists().where(
        RevokedToken.tenant_id == tenant, RevokedToken.jti == bindparam("jti", type_=String())
    )
    columns: list[Any] = [OAuthClient.active, OAuthClient.unit_ids, revoked.label("revoked")]

    def of_person(column: Any, label: str) -> Any:
        return (
            select(column)
            .where(Person.tenant_id == tenant, Person.id == person_id)
            .scalar_subquery()
            .label(label)
        )

    if person:
        columns.append(of_person(Person.active, "person_active"))
    if with_access:
        columns.append(of_person(Person.username, "username"))
    if folded:
        grants = (
            person_grants_query(person_id)
            .where(
                RoleAssignment.tenant_id == tenant,
                OrgUnit.tenant_id == tenant,
                Role.tenant_id == tenant,
            )
            .subquery()
        )
        columns.append(
            select(func.json_agg(func.json_build_array(grants.c.path, grants.c.permissions)))
            .scalar_subquery()
            .label("grants")
        )
    return select(*columns).where(
        OAuthClient.tenant_id == tenant,
        OAuthClient.client_id == bindparam("client_id", type_=String()),
    )


class TokenError(Exception):
    """An access token was refused; ``detail`` says why, for the 401 answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def access_token_claims(
    *,
    issuer: str,
    ttl: int,
    tenant_id: uuid.UUID,
    tenant_slug: str,
    kind: Kind,
    subject: str,
    client_id: str,
    scope: str,
    now: int | None = None,
    audience: str | list[str] | None = None,
) -> dict[str, Any]:
    """The claims of a new access token (see the module docstring).

    :param audience: RFC 8707 resources the token is restricted to (default: the whole API,
        ``insurdesk-api``).
    """
    issued = int(time.time()) if now is None else now
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience or AUDIENCE,
        "exp": issued + ttl,
        "iat": issued,
        "nbf": issued,
        "jti": generate_handle(18),
        "client_id": client_id,
        "scope": scope,
        "tenant": str(tenant_id),
        "tenant_slug": tenant_slug,
        "kind": kind,
    }


def sign_access_token(claims: dict[str, Any], key: LoadedKey) -> str:
    """Sign ``claims`` as a compact JWS with ``key`` (``typ: at+jwt``, ``kid`` set)."""
    header = {"alg": key.algorithm, "typ": TOKEN_TYPE, "kid": key.kid}
    return jwt.encode(header, claims, key.key, algorithms=[key.algorithm])


class AccessTokenVerifier:
    """Checks an access token: signature with a published key, then the standard claims.

    Only the platform's own keys are trusted, each with its own algorithm (no ``alg``
    confusion); ``typ`` must be ``at+jwt`` so no other JWT can pass for an access token.
    """

    VERIFIED_CACHE_SIZE = 4096
    """Tokens whose signature this verifier checked, kept so that the next request with the
    same token skips the signature (the claims are checked again every time)."""

    def __init__(self, keys: KeyStore, issuer: str, *, leeway: int = LEEWAY_SECONDS) -> None:
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self._registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
            tenant={"essential": True},
            kind={"essential": True, "values": list(KINDS)},
        )
        self._verified: dict[str, tuple[LoadedKey, dict[str, Any], int, float]] = {}
        """Per verified token: its key, its claims, when they were found valid, and the time
        from which its expiry refuses it (``exp`` plus the leeway)."""

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``.

        A token whose signature was verified before with a key that is still the published
        key of its ``kid`` (the same loaded key) is not verified again; its claims (expiry
        included) are checked at every call.

        :raises TokenError: with a detail such as ``token expired`` or
            ``token signature invalid``.
        """
        seen = self._verified.get(token)
        if seen is not None and self.keys.verification_key(seen[0].kid) is seen[0]:
            return self._checked(dict(seen[1]))
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise TokenError("token malformed") from None
        if header.get("typ") not in (TOKEN_TYPE, "application/" + TOKEN_TYPE):
            raise TokenError("token is not an access token")
        kid = header.get("kid")
        key = self.keys.verification_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("token signature invalid")
        try:
            decoded = jwt.decode(token, key.key, algorithms=[key.algorithm])
        except BadSignatureError:
            raise TokenError("token signature invalid") from None
        except (JoseError, ValueError):
            raise TokenError("token malformed") from None
        claims = self._checked(dict(decoded.claims))
        if len(self._verified) >= self.VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (key, dict(claims), int(time.time()), claims["exp"] + self.leeway)
        return claims

    def verify_cached(self, token: str) -> dict[str, Any] | None:
        """The verified claims of ``token`` if that needs no database read: its signature was
        verified before with a key that is still the published key of its ``kid`` in the key
        store's fresh cache. None otherwise: call :meth:`verify`. Its claims are not checked
        again while only the time could change the answer: after they were found valid and
        before its expiry (plus the leeway); otherwise as :meth:`verify` checks them.

        :raises TokenError: the claims are no longer valid (expired, say).
        """
        seen = self._verified.get(token)
        if seen is None or self.keys.cached_key(seen[0].kid) is not seen[0]:
            return None
        _key, claims, checked_at, refused_from = seen
        if checked_at <= time.time() < refused_from:
            # until the expiry (with the leeway) only time could change the answer, and it has
            # neither passed the expiry nor gone back before the check
            return dict(claims)
        return self._checked(dict(claims))

    def _checked(self, claims: dict[str, Any]) -> dict[str, Any]:
        """``claims`` of a correctly signed token, if they are valid now."""
        try:
            self._registry.validate(claims)
        except ExpiredTokenError:
            raise TokenError("token expired") from None
        except InvalidClaimError as exc:
            if exc.claim in ("nbf", "iat"):
                raise TokenError("token not yet valid") from None
            raise TokenError(f"token claim {exc.claim!r} invalid") from None
        except MissingClaimError as exc:
            raise TokenError(f"token claim {exc.claim!r} missing") from None
        try:
            uuid.UUID(str(claims["tenant"]))
        except ValueError:
            raise TokenError("token claim 'tenant' invalid") from None
        if not isinstance(claims.get("scope", ""), str):
            raise TokenError("token claim 'scope' invalid")
        if not audiences_valid(claims.get("aud"), self.issuer):
            raise TokenError("token claim 'aud' invalid")
        return claims


def resource_base(issuer: str) -> str:
    """The URL under which every API resource lives: ``<issuer>/api/v1``."""
    return issuer.rstrip("/") + "/api/v1"


def check_resource(resource: str, issuer: str) -> str | None:
    """``resource`` normalized if it names this platform's API (RFC 8707), else None.

    Accepted: ``<issuer>/api/v1`` and ``<issuer>/api/v1/<collection>[/...]``; no query, no
    fragment.
    """
    base = resource_base(issuer)
    value = resource.strip()
    if "?" in value or "#" in value or len(value) > 500:
        return None
    value = value.rstrip("/")
    if value == base or value.startswith(base + "/"):
        return value
    return None


def audiences_valid(aud: Any, issuer: str) -> bool:
    """``aud`` is the API (``insurdesk-api``) or resources of this platform's API."""
    values = aud if isinstance(aud, list) else [aud]
    if not values or not all(isinstance(v, str) for v in values):
        return False
    return all(v == AUDIENCE or check_resource(v, issuer) == v for v in values)


def audience_allows(aud: Any, issuer: str, path: str) -> bool:
    """Whether a token with ``aud`` may be used on the API path ``path``."""
    values = aud if isinstance(aud, list) else [aud]
    if AUDIENCE in values:
        return True
    base = resource_base(issuer)
    prefix = base.partition("://")[2].partition("/")[2]  # e.g. "api/v1"
    for value in values:
        resource_path = "/" + prefix + value[len(base) :]
        if path == resource_path or path.startswith(resource_path.rstrip("/") + "/"):
            return True
    return False
