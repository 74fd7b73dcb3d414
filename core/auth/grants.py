"""Grants, PKCE, client assertions, introspection and revocation, on authlib's classes.

- client credentials (integrators), authorization code with PKCE S256 required (people, through
  a confidential or public client) and refresh tokens, rotated at every use;
- ``private_key_jwt`` client authentication (RFC 7523) next to ``client_secret_basic``,
  ``client_secret_post`` and ``none`` (public clients, PKCE);
- introspection (RFC 7662) and revocation (RFC 7009) of access and refresh tokens.

Storage goes through the request's :class:`core.auth.server.TenantUnit`, i.e. the session of
the tenant that owns the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from core.auth.audit import record_token_event
from core.auth.hashing import digest
from core.auth.models import (
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    as_utc,
)
from core.auth.server import (
    AUTHORIZATION_CODE_TTL,
    INTROSPECTION_AUTH_METHODS,
    REVOCATION_AUTH_METHODS,
    AuthorizationServer,
    active_person,
    current_unit,
    revoke_family,
    revoke_jti,
)
from core.auth.tokens import TokenError, token_state
from core.db import utcnow
from core.people.models import Person

SECRET_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
MAX_ASSERTION_LIFETIME = 3600 + 60
"""Longest ``exp - now`` accepted on a client assertion, in seconds (bounds the jti store;
authlib's clients sign assertions valid for one hour)."""


# --- grants -------------------------------------------------------------------------------


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """Integrators: a confidential client gets a token for itself (``kind = client``)."""

    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_METHODS


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """People sign in at ``/oauth/authorize``; the client trades the code for tokens."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        """Keep the code's digest with its client, person, redirect URI, scope and challenge."""
        session = current_unit().session
        now = utcnow()
        session.add(
            AuthorizationCode(
                code_hash=digest(code),
                oauth_client_id=request.client.id,
                person_id=request.user.id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope or "",
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method="S256",
                created_at=now,
                expires_at=now + AUTHORIZATION_CODE_TTL,
            )
        )
        session.flush()

    def query_authorization_code(self, code: str, client: OAuthClient) -> Any:
        """The unused, unexpired code of ``client``; a replayed code revokes what it gave."""
        unit = current_unit()
        row = unit.session.scalars(
            select(AuthorizationCode).where(
                AuthorizationCode.code_hash == digest(code),
                AuthorizationCode.oauth_client_id == client.id,
            )
        ).one_or_none()
        if row is None:
            return None
        if row.used_at is not None:
            revoke_family(unit, row.id, reason="authorization code replayed")
            return None
        if as_utc(row.expires_at) <= utcnow():
            return None
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Mark the code used, atomically: of two concurrent exchanges only one succeeds."""
        result = current_unit().session.execute(
            update(AuthorizationCode)
            .where(
                AuthorizationCode.id == authorization_code.id,
                AuthorizationCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise InvalidGrantError("Invalid 'code' in request.")

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Person | None:
        """The person who signed in, if still active."""
        return active_person(current_unit().session, authorization_code.person_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Refresh with rotation: each refresh token works once; a reused one revokes its family."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        """The live refresh token with this value, if any."""
        unit = current_unit()
        row = unit.session.scalars(
            select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token))
        ).one_or_none()
        if row is None:
            return None
        if row.rotated_at is not None and row.revoked_at is None:
            revoke_family(unit, row.family_id, reason="rotated refresh token reused")
            return None
        if row.is_revoked() or row.is_expired():
            return None
        return row

    def authenticate_user(self, refresh_token: RefreshToken) -> Person | None:
        """The token's person, if still active."""
        return active_person(current_unit().session, refresh_token.person_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Retire the presented token, atomically (a concurrent refresh loses)."""
        result = current_unit().session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == refresh_token.id,
                RefreshToken.rotated_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(rotated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise InvalidGrantError()


class S256CodeChallenge(CodeChallenge):
    """PKCE, required on every authorization request, with the S256 method only."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        """Refuse a request without ``code_challenge`` or with a method other than S256."""
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE (S256) is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': use S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge_method(self, authorization_code: Any) -> str:
        """Always S256."""
        return "S256"


# --- client authentication by signed assertion (RFC 7523) ---------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt``: the client signs an assertion with a key from its registered JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self.issuer = issuer.rstrip("/")

    def get_audiences(self) -> list[str]:
        """The token endpoint URL and the issuer are both accepted as ``aud``."""
        base = self.issuer
        return [f"{base}/oauth/token", base, f"{base}/oauth/introspect", f"{base}/oauth/revoke"]

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        """The client's registered public keys."""
        if not client.jwks:
            raise InvalidClientError(description="The client has no registered keys.")
        return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]

    def verify_claims(self, claims: jwt.Claims) -> None:
        """authlib's checks, plus a bounded lifetime (the jti store must not grow forever)."""
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp - time.time() > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError(description="The assertion lives too long.")
        super().verify_claims(claims)

    def validate_jti(self, claims: jwt.Claims, jti: Any) -> bool:
        """Each assertion is accepted once: its jti is kept until it expires."""
        if not isinstance(jti, str) or len(jti) > 200:
            return False
        session = current_unit().session
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        return revoke_jti(session, f"assertion:{claims['sub']}:{jti}", expires)


# --- introspection and revocation ---------------------------------------------------------


@dataclass
class AccessTokenRecord(TokenMixin):
    """A verified JWT access token, as authlib's endpoints see a token."""

    claims: dict[str, Any]
    revoked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check_client(self, client: OAuthClient) -> bool:
        """True when the token was issued to ``client``."""
        return bool(self.claims.get("client_id") == client.client_id)

    def get_scope(self) -> str:
        """The token's scope."""
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        """Seconds until expiry."""
        return max(0, int(self.claims["exp"] - time.time()))

    def is_expired(self) -> bool:
        """True after ``exp``."""
        return bool(self.claims["exp"] <= time.time())

    def is_revoked(self) -> bool:
        """True when the jti was revoked."""
        return self.revoked


def _query_token(server: AuthorizationServer, token: str, hint: str | None) -> Any:
    """An access token (verified JWT) or a refresh token of the bound tenant, else None."""
    unit = current_unit()
    if unit.tenant is None:
        return None
    if hint != "refresh_token" and token.count(".") == 2:
        try:
            claims = server.verifier.verify(token)
        except TokenError:
            return None
        if claims["tenant"] != str(unit.tenant.id):
            return None
        try:
            token_state(unit.session, claims)
        except TokenError:  # revoked, or its client or person disabled
            return AccessTokenRecord(claims=claims, revoked=True)
        return AccessTokenRecord(claims=claims, revoked=False)
    if hint == "access_token":
        return None
    return unit.session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == digest(token))
    ).one_or_none()


class IntrospectionEndpoint(_IntrospectionEndpoint):
    """RFC 7662. Any authenticated client may ask; only its own tenant's tokens are active."""

    CLIENT_AUTH_METHODS = INTROSPECTION_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        """Access or refresh token of the client's tenant."""
        return _query_token(self.server, token_string, token_type_hint)

    def create_endpoint_response(self, request: OAuth2Request) -> Any:
        """authlib's answer, recorded in the tenant's audit log (who asked, about what)."""
        status, body, headers = super().create_endpoint_response(request)
        unit = current_unit()
        record_token_event(
            unit.session,
            action="oauth.token_introspected",
            client_id=request.client.client_id,
            details={
                "active": bool(body.get("active")),
                "token_client_id": body.get("client_id"),
                "token_type": body.get("token_type"),
                "jti": body.get("jti"),
                "scopes": sorted(str(body.get("scope") or "").split()),
            },
            source=unit.source,
        )
        return status, body, headers

    def check_permission(self, token: Any, client: OAuthClient, request: OAuth2Request) -> bool:
        """Tokens were already limited to the client's tenant by the lookup."""
        return True

    def introspect_token(self, token: Any) -> dict[str, Any]:
        """The RFC 7662 response members, plus ``tenant``, ``tenant_slug`` and ``kind``."""
        if isinstance(token, AccessTokenRecord):
            c = token.claims
            body: dict[str, Any] = {
                k: c[k]
                for k in (
                    "scope",
                    "client_id",
                    "sub",
                    "aud",
                    "iss",
                    "exp",
                    "iat",
                    "jti",
                    "tenant",
                    "tenant_slug",
                    "kind",
                )
                if k in c
            }
            return {"active": True, "token_type": "Bearer", **body}
        unit = current_unit()
        client = unit.session.get(OAuthClient, (token.tenant_id, token.oauth_client_id))
        assert unit.tenant is not None
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": token.scope,
            "client_id": client.client_id if client else None,
            "sub": str(token.person_id),
            "iss": self.server.settings.issuer,
            "exp": int(as_utc(token.expires_at).timestamp()),
            "iat": int(as_utc(token.created_at).timestamp()),
            "tenant": str(unit.tenant.id),
            "tenant_slug": unit.tenant.slug,
            "kind": "person",
        }


class RevocationEndpoint(_RevocationEndpoint):
    """RFC 7009: a client revokes its own access or refresh tokens."""

    CLIENT_AUTH_METHODS = REVOCATION_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        """Access or refresh token of the client's tenant."""
        token = _query_token(self.server, token_string, token_type_hint)
        if token is None or token.is_revoked():
            return None  # nothing to revoke: answered 200, like any unknown token
        return token

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        """Access token: its jti is refused until it expires. Refresh token: the whole
        family (every refresh token from the same sign-in and their access tokens)."""
        unit = current_unit()
        if isinstance(token, AccessTokenRecord):
            revoke_jti(
                unit.session,
                token.claims["jti"],
                datetime.fromtimestamp(int(token.claims["exp"]), UTC),
            )
            details: dict[str, Any] = {
                "token_type": "access_token",
                "jti": token.claims["jti"],
                "scopes": sorted(str(token.claims.get("scope", "")).split()),
            }
        else:
            revoke_family(unit, token.family_id, reason="revoked by client")
            details = {
                "token_type": "refresh_token",
                "family_id": str(token.family_id),
                "scopes": sorted(str(token.scope or "").split()),
            }
        record_token_event(
            unit.session,
            action="oauth.token_revoked",
            client_id=request.client.client_id,
            details=details,
            source=unit.source,
        )


def register_grants(server: AuthorizationServer) -> None:
    """Register every grant, the PKCE extension, ``private_key_jwt`` and the endpoints."""
    server.register_client_auth_method("private_key_jwt", PrivateKeyJWT(server.settings.issuer))
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_endpoint(RevocationEndpoint)
