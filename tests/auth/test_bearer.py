"""The bearer-token middleware on /api/ paths, introspection and revocation."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc.jwk import RSAKey

from core.auth.keys import KeyStore, LoadedKey
from core.auth.tokens import (
    AccessTokenVerifier,
    TokenError,
    access_token_claims,
    sign_access_token,
)
from core.db import Database
from tests.auth.helpers import Endpoints, bearer, register
from tests.factories import TenantWorld, make_tenant


def _client_token(database: Database, world: TenantWorld, urls: Endpoints, **kw: Any) -> str:
    client_id, secret = register(database, world, **kw)
    with OAuth2Client(client_id, secret) as oauth:
        return str(oauth.fetch_token(urls.token, grant_type="client_credentials")["access_token"])


def _crafted(
    database: Database,
    world: TenantWorld,
    urls: Endpoints,
    client_id: str,
    *,
    key: LoadedKey | None = None,
    **overrides: Any,
) -> str:
    """A token signed by the platform's own current key (or ``key``), with chosen claims."""
    signing = key or KeyStore(database).signing_key()
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
    claims.update(overrides)
    return sign_access_token(claims, signing)


def _refused(http: httpx.Client, urls: Endpoints, token: str | None) -> str:
    headers = bearer(token) if token is not None else {}
    response = http.get(urls.me, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    return str(response.json()["detail"])


def test_api_paths_need_a_bearer_token_and_others_do_not(
    urls: Endpoints, http: httpx.Client
) -> None:
    assert _refused(http, urls, None) == "missing bearer token"
    response = http.get(urls.me, headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401
    assert http.get(f"{urls.base}/healthz").status_code == 200
    assert http.get(f"{urls.base}/oauth/jwks").status_code == 200


def test_expired_token_is_refused(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, _ = register(database, world)
    good = _crafted(database, world, urls, client_id)
    assert http.get(urls.me, headers=bearer(good)).status_code == 200
    past = int(time.time()) - 3600
    expired = _crafted(database, world, urls, client_id, iat=past, nbf=past, exp=past + 900)
    assert _refused(http, urls, expired) == "token expired"


def test_a_token_verified_before_is_still_checked_at_every_use(
    database: Database, world: TenantWorld, urls: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, _ = register(database, world)
    keys = KeyStore(database)
    verifier = AccessTokenVerifier(keys, urls.base)
    token = _crafted(database, world, urls, client_id)
    first = verifier.verify(token)
    again = verifier.verify(token)  # its signature is not checked a second time
    assert again == first and again is not first
    cached = verifier.verify_cached(token)  # the middleware's way: no database read
    assert cached == first and cached is not first
    later = time.time() + 3600
    with monkeypatch.context() as m:  # expired since: refused
        m.setattr(time, "time", lambda: later)
        with pytest.raises(TokenError, match="token expired"):
            verifier.verify(token)
        with pytest.raises(TokenError, match="token expired"):
            verifier.verify_cached(token)
    assert verifier.verify(token) == first
    assert verifier.verify_cached(token) == first
    with monkeypatch.context() as m:  # its key is no longer published: refused
        m.setattr(keys, "verification_key", lambda kid: None)
        with pytest.raises(TokenError, match="token signature invalid"):
            verifier.verify(token)


def test_wrongly_signed_tokens_are_refused(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, _ = register(database, world)
    real = KeyStore(database).signing_key()
    forged_key = replace(real, key=RSAKey.generate_key(2048, private=True))  # same kid
    forged = _crafted(database, world, urls, client_id, key=forged_key)
    assert _refused(http, urls, forged) == "token signature invalid"
    unknown = replace(forged_key, kid="not-a-platform-key")
    assert _refused(http, urls, _crafted(database, world, urls, client_id, key=unknown)) == (
        "token signature invalid"
    )
    good = _crafted(database, world, urls, client_id)
    head, _payload, signature = good.split(".")
    tampered = _crafted(database, world, urls, client_id, tenant="0" * 32).split(".")[1]
    assert _refused(http, urls, f"{head}.{tampered}.{signature}") == "token signature invalid"
    assert _refused(http, urls, "not-a-jwt") == "token malformed"


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iss", "https://someone-else.example"), ("aud", "another-api"), ("kind", "robot")],
)
def test_tokens_for_another_issuer_or_audience_are_refused(
    database: Database,
    world: TenantWorld,
    urls: Endpoints,
    http: httpx.Client,
    claim: str,
    value: str,
) -> None:
    client_id, _ = register(database, world)
    overrides: dict[str, Any] = {claim: value}
    token = _crafted(database, world, urls, client_id, **overrides)
    assert _refused(http, urls, token) == f"token claim {claim!r} invalid"


def test_the_principal_tenant_comes_from_the_token_only(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    other = make_tenant(database, "other")
    token_a = _client_token(database, world, urls)
    token_b = _client_token(database, other, urls)
    me_a = http.get(urls.me, headers={**bearer(token_a), "X-Tenant": str(other.id)}).json()
    me_b = http.get(urls.me, headers=bearer(token_b)).json()
    assert me_a["tenant"] == str(world.id)
    assert me_b["tenant"] == str(other.id)
    # A token that claims tenant B for a client of tenant A finds no such client in B.
    client_id, _ = register(database, world)
    crossed = _crafted(database, world, urls, client_id, tenant=str(other.id))
    assert _refused(http, urls, crossed) == "client disabled"


def test_missing_scope_is_forbidden(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    token = _client_token(database, world, urls, scopes=["cases:read"])
    response = http.get(f"{urls.base}/api/v1/org-units", headers=bearer(token))
    assert response.status_code == 403
    allowed = _client_token(database, world, urls, scopes=["org:read"])
    assert http.get(f"{urls.base}/api/v1/org-units", headers=bearer(allowed)).status_code == 200


def test_introspection_reports_only_the_callers_tenant(
    database: Database, world: TenantWorld, urls: Endpoints
) -> None:
    other = make_tenant(database, "other")
    token = _client_token(database, world, urls)
    same_id, same_secret = register(database, world)
    other_id, other_secret = register(database, other)
    with OAuth2Client(same_id, same_secret) as same:
        report = same.introspect_token(urls.introspect, token=token).json()
        assert report["active"] is True
        assert report["tenant"] == str(world.id)
        assert report["kind"] == "client"
        assert report["scope"] == "cases:read org:read"
        garbage = same.introspect_token(urls.introspect, token="garbage").json()
        assert garbage == {"active": False}
    with OAuth2Client(other_id, other_secret) as foreign:
        assert foreign.introspect_token(urls.introspect, token=token).json() == {"active": False}
    with OAuth2Client(same_id, "wrong" * 10) as bad:
        assert bad.introspect_token(urls.introspect, token=token).status_code == 401


def test_revoked_access_token_is_refused_and_inactive(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, secret = register(database, world)
    with OAuth2Client(client_id, secret) as oauth:
        access = oauth.fetch_token(urls.token, grant_type="client_credentials")["access_token"]
        assert http.get(urls.me, headers=bearer(access)).status_code == 200
        revoked = oauth.revoke_token(urls.revoke, token=access, token_type_hint="access_token")
        assert revoked.status_code == 200
        assert oauth.revoke_token(urls.revoke, token=access).status_code == 200  # idempotent
        assert oauth.revoke_token(urls.revoke, token="unknown").status_code == 200
        report = oauth.introspect_token(urls.introspect, token=access).json()
    assert report == {"active": False}
    assert _refused(http, urls, access) == "token revoked"


def test_a_client_cannot_revoke_another_clients_token(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    access = _client_token(database, world, urls)
    thief_id, thief_secret = register(database, world)
    with OAuth2Client(thief_id, thief_secret) as thief:
        response = thief.revoke_token(urls.revoke, token=access)
    assert response.status_code == 400
    assert http.get(urls.me, headers=bearer(access)).status_code == 200


RFC_6749_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
}


def test_a_nul_byte_in_an_oauth_form_is_an_rfc_6749_error(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    """PostgreSQL refuses a NUL byte in text it compares; the OAuth endpoints answer that as
    any malformed request, in their own error format (found by the schema fuzzing)."""
    client_id, secret = register(database, world)
    token = _client_token(database, world, urls)
    for url, form in (
        (urls.introspect, {"token": "abc\x00def"}),
        (urls.revoke, {"token": "abc\x00def"}),
        (urls.token, {"grant_type": "refresh_token", "refresh_token": "abc\x00def"}),
    ):
        for basic in ((client_id, secret), (client_id + "\x00", secret)):
            response = http.post(url, data=form, auth=basic)
            assert response.status_code < 500, (url, basic[0], response.text)
            assert not response.headers["content-type"].startswith("application/problem")
            if response.status_code >= 400:
                assert response.json()["error"] in RFC_6749_ERRORS
    with OAuth2Client(client_id, secret) as oauth:  # the endpoint still works afterwards
        assert oauth.introspect_token(urls.introspect, token=token).json()["active"] is True
