"""Client credentials over real HTTP with authlib's OAuth2Client, and what the token says."""

from __future__ import annotations

import time

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import RSAKey
from sqlalchemy import text

from core.auth.services import disable_client
from core.db import Database
from tests.auth.helpers import Endpoints, bearer, claims_of, header_of, register
from tests.factories import TenantWorld


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_token_is_a_signed_jwt_bound_to_the_tenant(
    database: Database, world: TenantWorld, urls: Endpoints, method: str
) -> None:
    client_id, secret = register(database, world, auth_method=method)
    with OAuth2Client(client_id, secret, token_endpoint_auth_method=method) as oauth:
        token = oauth.fetch_token(urls.token, grant_type="client_credentials", scope="org:read")
        assert token["token_type"].lower() == "bearer"
        assert token["scope"] == "org:read"
        assert "refresh_token" not in token
        claims = claims_of(token["access_token"])
        assert header_of(token["access_token"])["typ"] == "at+jwt"
        assert claims["iss"] == urls.base
        assert claims["aud"] == "insurdesk-api"
        assert claims["sub"] == client_id and claims["client_id"] == client_id
        assert claims["kind"] == "client"
        assert claims["tenant"] == str(world.id)
        assert claims["tenant_slug"] == world.tenant.slug
        assert claims["exp"] - claims["iat"] == 900
        assert claims["jti"]

        me = oauth.get(urls.me)
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["tenant"] == str(world.id)
    assert body["kind"] == "client"
    assert body["scopes"] == ["org:read"]
    assert body["client_unit_ids"] == [str(world.units["bj"].id)]


def test_without_scope_the_client_gets_all_its_scopes(
    database: Database, world: TenantWorld, urls: Endpoints
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(urls.token, grant_type="client_credentials")
    assert token["scope"] == "cases:read org:read"


def test_scope_the_client_was_not_registered_for_is_refused(
    database: Database, world: TenantWorld, urls: Endpoints
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth, pytest.raises(OAuthError) as err:
        oauth.fetch_token(urls.token, grant_type="client_credentials", scope="org:write")
    assert err.value.error == "invalid_scope"


@pytest.mark.parametrize(
    ("registered", "used"),
    [("client_secret_basic", "client_secret_post"), ("client_secret_post", "client_secret_basic")],
)
def test_a_client_authenticates_only_with_its_registered_method(
    database: Database, world: TenantWorld, urls: Endpoints, registered: str, used: str
) -> None:
    client_id, secret = register(database, world, auth_method=registered)
    oauth = OAuth2Client(client_id, secret, token_endpoint_auth_method=used)
    with oauth, pytest.raises(OAuthError) as err:
        oauth.fetch_token(urls.token, grant_type="client_credentials")
    assert err.value.error == "invalid_client"


def test_wrong_secret_and_unknown_client_are_invalid_client(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, _ = register(database, world)
    for cid, secret in [
        (client_id, "x" * 43),
        (f"{world.tenant.slug}.nope", "x" * 43),
        ("no-such-tenant.abc", "x" * 43),
    ]:
        response = http.post(
            urls.token, data={"grant_type": "client_credentials"}, auth=(cid, secret)
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["cache-control"] == "no-store"


def test_oauth_errors_are_rfc6749_json_not_problem_details(
    urls: Endpoints, http: httpx.Client
) -> None:
    response = http.post(urls.token, data={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "type" not in response.json()
    garbled = http.post(
        urls.token,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic /w=="},
    )
    assert garbled.status_code in (400, 401)
    assert "error" in garbled.json()


def test_client_secret_is_stored_only_as_a_digest(database: Database, world: TenantWorld) -> None:
    client_id, secret = register(database, world)
    assert secret is not None and len(secret) >= 43
    with database.platform_session() as session:
        row = (
            session.execute(
                text("SELECT * FROM oauth_clients WHERE client_id = :c"), {"c": client_id}
            )
            .mappings()
            .one()
        )
    assert not any(secret in str(value) for value in row.values())
    assert str(row["secret_hash"]).startswith("sha256$")


def test_a_disabled_clients_tokens_stop_working_at_once(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(urls.token, grant_type="client_credentials")
    access = token["access_token"]
    assert http.get(urls.me, headers=bearer(access)).status_code == 200
    with database.tenant_transaction(world.id) as session:
        disable_client(session, client_id)
    refused = http.get(urls.me, headers=bearer(access))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "client disabled"
    watcher_id, watcher_secret = register(database, world)
    with OAuth2Client(watcher_id, watcher_secret) as watcher:
        assert watcher.introspect_token(urls.introspect, token=access).json() == {"active": False}
    with OAuth2Client(client_id, secret) as oauth, pytest.raises(OAuthError) as err:
        oauth.fetch_token(urls.token, grant_type="client_credentials")
    assert err.value.error == "invalid_client"


def test_private_key_jwt_client_authentication(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    key = RSAKey.generate_key(2048, private=True)
    client_id, secret = register(
        database,
        world,
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    assert secret is None
    with OAuth2Client(client_id, key, token_endpoint_auth_method="private_key_jwt") as oauth:
        oauth.register_client_auth_method(PrivateKeyJWT(urls.token))
        token = oauth.fetch_token(urls.token, grant_type="client_credentials")
    assert claims_of(token["access_token"])["sub"] == client_id

    assertion = private_key_jwt_sign(key, client_id=client_id, token_endpoint=urls.token)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    assert http.post(urls.token, data=form).status_code == 200
    replayed = http.post(urls.token, data=form)
    assert replayed.status_code in (400, 401)
    assert replayed.json()["error"] == "invalid_client"

    other = RSAKey.generate_key(2048, private=True)
    forged = dict(
        form,
        client_assertion=private_key_jwt_sign(
            other, client_id=client_id, token_endpoint=urls.token
        ),
    )
    assert http.post(urls.token, data=forged).json()["error"] == "invalid_client"

    long_lived = dict(
        form,
        client_assertion=private_key_jwt_sign(
            key,
            client_id=client_id,
            token_endpoint=urls.token,
            claims={"exp": int(time.time()) + 86400},
        ),
    )
    assert http.post(urls.token, data=long_lived).json()["error"] == "invalid_client"
