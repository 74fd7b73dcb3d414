"""API clients of a tenant: register, rotate secrets, disable, list.

Functions take a tenant session (:meth:`core.db.Database.tenant_transaction`); a platform
session works too when ``tenant_id`` is passed (manifests). Secrets are returned once and
stored only as digests (:mod:`core.auth.hashing`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from authlib.common.security import is_secure_transport
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.auth.hashing import MIN_SECRET_LENGTH, generate_handle, generate_secret, hash_secret
from core.auth.models import AUTH_METHODS, GRANT_TYPES, OAuthClient
from core.db import utcnow
from core.orgs.models import OrgUnit
from core.people.permissions import unknown_permissions
from core.tenancy.models import Tenant

_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _tenant(session: Session, tenant_id: uuid.UUID | None) -> Tenant:
    tid = tenant_id or session.info.get("tenant_id")
    tenant = session.get(Tenant, tid) if tid else None
    if tenant is None:
        raise Problem(404, f"tenant {tid} was not found", slug="not-found")
    return tenant


def _invalid(detail: str, slug: str = "invalid-client", **extra: Any) -> Problem:
    return Problem(422, detail, slug=slug, **extra)


def _check_redirect_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc or parts.fragment:
        raise _invalid(f"redirect URI {uri!r} must be absolute and have no fragment")
    if parts.scheme == "http" and not is_secure_transport(uri):
        raise _invalid(f"redirect URI {uri!r} must use https (http only on loopback)")


def _check_jwks(jwks: dict[str, Any] | None) -> dict[str, Any]:
    if not jwks or not isinstance(jwks, dict) or not jwks.get("keys"):
        raise _invalid("private_key_jwt clients need a JWKS with at least one public key")
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise _invalid(f"the JWKS cannot be read: {exc}") from None
    if any(key.is_private for key in keys.keys):
        raise _invalid("the JWKS holds a private key; register public keys only")
    return {"keys": [dict(key.as_dict(private=False)) for key in keys.keys]}


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    result = sorted(set(scopes))
    bad = unknown_permissions(result)
    if bad:
        raise Problem(
            422, f"unknown scopes: {', '.join(bad)}", slug="unknown-permission", scopes=bad
        )
    return result


def _check_units(session: Session, tenant: Tenant, unit_ids: Iterable[uuid.UUID]) -> list[str]:
    units = sorted(set(unit_ids), key=str)
    found = (
        set(
            session.scalars(
                select(OrgUnit.id).where(OrgUnit.tenant_id == tenant.id, OrgUnit.id.in_(units))
            )
        )
        if units
        else set()
    )
    missing = [str(u) for u in units if u not in found]
    if missing:
        raise Problem(
            422,
            f"unknown organization units: {', '.join(missing)}",
            slug="unknown-unit",
            units=missing,
        )
    return [str(u) for u in units]


def create_client(
    session: Session,
    *,
    name: str,
    scopes: Iterable[str],
    unit_ids: Iterable[uuid.UUID],
    grant_types: Sequence[str] = ("client_credentials",),
    redirect_uris: Sequence[str] = (),
    auth_method: str = "client_secret_basic",
    jwks: dict[str, Any] | None = None,
    secret: str | None = None,
    client_id: str | None = None,
    tenant_id: uuid.UUID | None = None,
) -> tuple[OAuthClient, str | None]:
    """Register a client; return it and its secret (shown once; None without a secret).

    :param scopes: permission names from :data:`core.people.permissions.PERMISSIONS`.
    :param unit_ids: org units the client acts for (and those below them).
    :param secret: used as-is (demo manifests), at least 32 characters; generated otherwise.
    :param client_id: a fixed id ``<tenant slug>.<8-64 of [A-Za-z0-9_-]>`` (demo manifests);
        generated otherwise.
    :param tenant_id: only with a platform session.
    :raises Problem: 422 for unknown scopes or units and inconsistent settings; 409 for a
        client id already taken.
    """
    tenant = _tenant(session, tenant_id)
    scopes = _check_scopes(scopes)
    units = _check_units(session, tenant, unit_ids)
    grants = list(dict.fromkeys(grant_types))
    if not grants or any(g not in GRANT_TYPES for g in grants):
        raise _invalid(f"grant types must be among {', '.join(GRANT_TYPES)}")
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise _invalid("refresh_token only comes with authorization_code")
    if auth_method not in AUTH_METHODS:
        raise _invalid(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    if "authorization_code" in grants and not redirect_uris:
        raise _invalid("authorization_code clients need at least one redirect URI")
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    public = auth_method == "none"
    if public and "client_credentials" in grants:
        raise _invalid("a public client (auth method none) cannot use client_credentials")
    stored_jwks = _check_jwks(jwks) if auth_method == "private_key_jwt" else None
    uses_secret = auth_method in ("client_secret_basic", "client_secret_post")
    if secret is not None and not uses_secret:
        raise _invalid(f"a {auth_method} client has no secret")
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise _invalid(f"a client secret needs at least {MIN_SECRET_LENGTH} characters")
    if client_id is None:
        client_id = f"{tenant.slug}.{generate_handle(12)}"
    elif not client_id.startswith(tenant.slug + ".") or not _SUFFIX.match(
        client_id[len(tenant.slug) + 1 :]
    ):
        raise _invalid(f"client id must be '{tenant.slug}.' and 8-64 of [A-Za-z0-9_-]")
    if find_client(session, client_id, tenant_id=tenant.id) is not None:
        raise Problem(409, f"client id {client_id!r} is taken", slug="duplicate")
    plain = (secret or generate_secret()) if uses_secret else None
    client = OAuthClient(
        tenant_id=tenant.id,
        client_id=client_id,
        name=name,
        secret_hash=hash_secret(plain) if plain else None,
        token_endpoint_auth_method=auth_method,
        jwks=stored_jwks,
        grant_types=grants,
        redirect_uris=list(redirect_uris),
        scopes=scopes,
        unit_ids=units,
    )
    session.add(client)
    session.flush()
    return client, plain


def find_client(
    session: Session, client_id: str, *, tenant_id: uuid.UUID | None = None
) -> OAuthClient | None:
    """The client ``client_id`` of the tenant, or None (manifests use it to stay idempotent)."""
    tenant = _tenant(session, tenant_id)
    return session.scalars(
        select(OAuthClient).where(
            OAuthClient.tenant_id == tenant.id, OAuthClient.client_id == client_id
        )
    ).one_or_none()


def get_client(
    session: Session, client_id: str, *, tenant_id: uuid.UUID | None = None
) -> OAuthClient:
    """The client ``client_id`` of the tenant, or a 404 problem."""
    client = find_client(session, client_id, tenant_id=tenant_id)
    if client is None:
        raise not_found("client", client_id)
    return client


def update_client(
    session: Session,
    client_id: str,
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    unit_ids: Iterable[uuid.UUID] | None = None,
    redirect_uris: Sequence[str] | None = None,
    tenant_id: uuid.UUID | None = None,
) -> bool:
    """Change what is given; return True if anything changed. Tokens already issued keep
    their scopes until they expire (at most ``access_token_ttl``)."""
    client = get_client(session, client_id, tenant_id=tenant_id)
    tenant = _tenant(session, tenant_id)
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if scopes is not None:
        changes["scopes"] = _check_scopes(scopes)
    if unit_ids is not None:
        changes["unit_ids"] = _check_units(session, tenant, unit_ids)
    if redirect_uris is not None:
        for uri in redirect_uris:
            _check_redirect_uri(uri)
        if "authorization_code" in client.grant_types and not redirect_uris:
            raise _invalid("authorization_code clients need at least one redirect URI")
        changes["redirect_uris"] = list(redirect_uris)
    changed = False
    for attr, value in changes.items():
        if getattr(client, attr) != value:
            setattr(client, attr, value)
            changed = True
    session.flush()
    return changed


def rotate_client_secret(session: Session, client_id: str, *, secret: str | None = None) -> str:
    """Give the client a new secret (returned once); the old one stops working at once."""
    client = get_client(session, client_id)
    if client.token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
        raise _invalid(f"a {client.token_endpoint_auth_method} client has no secret")
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise _invalid(f"a client secret needs at least {MIN_SECRET_LENGTH} characters")
    plain = secret or generate_secret()
    client.secret_hash = hash_secret(plain)
    client.secret_rotated_at = utcnow()
    session.flush()
    return plain


def disable_client(session: Session, client_id: str) -> OAuthClient:
    """Disable the client: no new tokens, and its tokens are refused from the next request."""
    client = get_client(session, client_id)
    client.active = False
    session.flush()
    return client


def list_clients(
    session: Session, *, include_disabled: bool = True, tenant_id: uuid.UUID | None = None
) -> list[OAuthClient]:
    """The tenant's clients, oldest first."""
    tenant = _tenant(session, tenant_id)
    stmt = select(OAuthClient).where(OAuthClient.tenant_id == tenant.id)
    if not include_disabled:
        stmt = stmt.where(OAuthClient.active.is_(True))
    return list(session.scalars(stmt.order_by(OAuthClient.created_at, OAuthClient.client_id)))
