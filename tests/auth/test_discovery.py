"""Discovery metadata (RFC 8414), the JWKS, and signing-key rotation."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from core.auth.keys import KeyStore, ensure_signing_key, rotate_signing_key
from core.auth.tokens import access_token_claims, sign_access_token
from core.db import Database
from tests.auth.helpers import Endpoints, bearer, header_of, register
from tests.factories import TenantWorld


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
def test_metadata_is_valid_rfc8414(urls: Endpoints, http: httpx.Client, path: str) -> None:
    response = http.get(urls.base + path)
    assert response.status_code == 200
    metadata = AuthorizationServerMetadata(response.json())
    metadata.validate()
    assert metadata["issuer"] == urls.base
    assert metadata["token_endpoint"] == urls.token
    assert metadata["authorization_endpoint"] == urls.authorize
    assert metadata["introspection_endpoint"] == urls.introspect
    assert metadata["revocation_endpoint"] == urls.revoke
    assert metadata["jwks_uri"] == f"{urls.base}/oauth/jwks"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert set(metadata["grant_types_supported"]) == {
        "client_credentials",
        "authorization_code",
        "refresh_token",
    }
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "cases:read" in metadata["scopes_supported"]


def test_openapi_document_lists_the_oauth_endpoints(urls: Endpoints, http: httpx.Client) -> None:
    document = http.get(f"{urls.base}/schema/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert {"/oauth/token", "/oauth/introspect", "/oauth/revoke", "/api/v1/me"} <= set(paths)


def test_jwks_publishes_the_key_that_signs_tokens(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(urls.token, grant_type="client_credentials")["access_token"]
    jwks = http.get(f"{urls.base}/oauth/jwks").json()
    kid = header_of(token)["kid"]
    published = {k["kid"]: k for k in jwks["keys"]}
    assert kid in published
    assert published[kid]["use"] == "sig"
    assert all("d" not in k and "p" not in k for k in jwks["keys"])  # public halves only


def test_ensure_signing_key_is_idempotent(database: Database) -> None:
    assert ensure_signing_key(database) == ensure_signing_key(database)


def test_rotation_publishes_first_then_signs_and_keeps_old_tokens_valid(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth:
        old_token = oauth.fetch_token(urls.token, grant_type="client_credentials")["access_token"]
    old_kid = header_of(old_token)["kid"]

    later = rotate_signing_key(database, activate_after=timedelta(hours=1))
    published = {k["kid"] for k in http.get(f"{urls.base}/oauth/jwks").json()["keys"]}
    assert {old_kid, later} <= published
    assert KeyStore(database).signing_key().kid == old_kid  # not yet: published first

    now_kid = rotate_signing_key(database, activate_after=timedelta(0))
    store = KeyStore(database)
    new_key = store.signing_key()
    assert new_key.kid == now_kid
    assert {old_kid, now_kid} <= {
        k["kid"] for k in http.get(f"{urls.base}/oauth/jwks").json()["keys"]
    }
    # The live server has not reloaded its keys yet: an unknown kid makes it reload once.
    claims = access_token_claims(
        issuer=urls.base,
        ttl=900,
        tenant_id=world.id,
        tenant_slug=world.tenant.slug,
        kind="client",
        subject=client_id,
        client_id=client_id,
        scope="org:read",
    )
    assert http.get(urls.me, headers=bearer(sign_access_token(claims, new_key))).status_code == 200
    assert http.get(urls.me, headers=bearer(old_token)).status_code == 200
