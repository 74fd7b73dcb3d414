"""People sign in: authorization code with PKCE (S256), refresh token rotation, the login form."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from core.db import Database
from tests.auth.helpers import Endpoints, bearer, claims_of, register
from tests.factories import PASSWORD, TenantWorld

REDIRECT = "https://portal.example/callback"


@pytest.fixture(scope="module")
def public_client(database: Database, world: TenantWorld) -> str:
    """A public client (no secret): authorization code + refresh, PKCE."""
    client_id, secret = register(
        database,
        world,
        name="客服工作台",
        auth_method="none",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(REDIRECT,),
        scopes=["cases:read", "cases:write", "org:read"],
    )
    assert secret is None
    return client_id


def _oauth(client_id: str, secret: str | None = None, **kwargs: object) -> OAuth2Client:
    method = "client_secret_basic" if secret else "none"
    return OAuth2Client(
        client_id,
        secret,
        redirect_uri=REDIRECT,
        scope="cases:read org:read",
        code_challenge_method="S256",
        token_endpoint_auth_method=method,
        **kwargs,
    )


def _sign_in(
    http: httpx.Client,
    oauth: OAuth2Client,
    urls: Endpoints,
    verifier: str,
    username: str = "agent_bj",
    password: str = PASSWORD,
) -> httpx.Response:
    url, _state = oauth.create_authorization_url(urls.authorize, code_verifier=verifier)
    page = http.get(url)
    assert page.status_code == 200, page.text
    assert "<form method='post'>" in page.text
    return http.post(url, data={"username": username, "password": password, "action": "allow"})


def _authorization_response(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return location


def test_authorization_code_with_pkce_gives_a_person_token(
    public_client: str, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    verifier = secrets.token_urlsafe(48)
    with _oauth(public_client) as oauth:
        location = _authorization_response(_sign_in(http, oauth, urls, verifier))
        token = oauth.fetch_token(
            urls.token, authorization_response=location, code_verifier=verifier
        )
        assert token["refresh_token"]
        claims = claims_of(token["access_token"])
        person = world.people["agent_bj"]
        assert claims["kind"] == "person"
        assert claims["sub"] == str(person.id)
        assert claims["client_id"] == public_client
        assert claims["tenant"] == str(world.id)
        assert claims["scope"] == "cases:read org:read"
        me = oauth.get(urls.me).json()
    assert me["kind"] == "person"
    assert me["person_id"] == str(person.id)
    assert me["tenant"] == str(world.id)
    assert me["client_unit_ids"] == []


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(
    public_client: str, urls: Endpoints, http: httpx.Client
) -> None:
    verifier = secrets.token_urlsafe(48)
    with _oauth(public_client) as oauth:
        location = _authorization_response(_sign_in(http, oauth, urls, verifier))
        first = dict(
            oauth.fetch_token(urls.token, authorization_response=location, code_verifier=verifier)
        )
        second = dict(oauth.refresh_token(urls.token, refresh_token=first["refresh_token"]))
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert http.get(urls.me, headers=bearer(second["access_token"])).status_code == 200

        with pytest.raises(OAuthError) as err:  # the old one again: stolen, says the server
            oauth.refresh_token(urls.token, refresh_token=first["refresh_token"])
        assert err.value.error == "invalid_grant"
        with pytest.raises(OAuthError):  # ... so the whole family is gone
            oauth.refresh_token(urls.token, refresh_token=second["refresh_token"])
    refused = http.get(urls.me, headers=bearer(second["access_token"]))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "token revoked"


def test_confidential_client_authorization_code(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, secret = register(
        database,
        world,
        grant_types=("authorization_code",),
        redirect_uris=(REDIRECT,),
    )
    verifier = secrets.token_urlsafe(48)
    with _oauth(client_id, secret) as oauth:
        location = _authorization_response(
            _sign_in(http, oauth, urls, verifier, username="auditor")
        )
        token = oauth.fetch_token(
            urls.token, authorization_response=location, code_verifier=verifier
        )
    assert "refresh_token" not in token  # not registered for refresh_token
    assert claims_of(token["access_token"])["sub"] == str(world.people["auditor"].id)


def test_a_code_works_once_and_its_replay_revokes_what_it_gave(
    public_client: str, urls: Endpoints, http: httpx.Client
) -> None:
    verifier = secrets.token_urlsafe(48)
    with _oauth(public_client) as oauth:
        location = _authorization_response(_sign_in(http, oauth, urls, verifier))
        token = oauth.fetch_token(
            urls.token, authorization_response=location, code_verifier=verifier
        )
        with pytest.raises(OAuthError) as err:
            oauth.fetch_token(urls.token, authorization_response=location, code_verifier=verifier)
        assert err.value.error == "invalid_grant"
        with pytest.raises(OAuthError):
            oauth.refresh_token(urls.token, refresh_token=token["refresh_token"])
    assert http.get(urls.me, headers=bearer(token["access_token"])).status_code == 401


def test_wrong_code_verifier_is_refused(
    public_client: str, urls: Endpoints, http: httpx.Client
) -> None:
    verifier = secrets.token_urlsafe(48)
    with _oauth(public_client) as oauth:
        location = _authorization_response(_sign_in(http, oauth, urls, verifier))
        with pytest.raises(OAuthError) as err:
            oauth.fetch_token(
                urls.token, authorization_response=location, code_verifier=secrets.token_urlsafe(48)
            )
    assert err.value.error == "invalid_grant"


def _authorize_params(client: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client,
        "redirect_uri": REDIRECT,
        "scope": "cases:read",
        "state": "s1",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v}


@pytest.mark.parametrize(
    "pkce",
    [
        {},  # no code_challenge at all
        {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "a" * 43},  # method defaults to plain
    ],
    ids=["missing", "plain", "implicit-plain"],
)
def test_pkce_s256_is_required(
    public_client: str, urls: Endpoints, http: httpx.Client, pkce: dict[str, str]
) -> None:
    response = http.get(urls.authorize, params=_authorize_params(public_client, **pkce))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["s1"]


@pytest.mark.parametrize(
    ("username", "password"),
    [("agent_bj", "wrong password"), ("nobody", PASSWORD)],
    ids=["wrong-password", "unknown-user"],
)
def test_failed_sign_in_re_renders_the_form_without_saying_why(
    public_client: str, urls: Endpoints, http: httpx.Client, username: str, password: str
) -> None:
    params = _authorize_params(
        public_client,
        code_challenge=create_s256_code_challenge(secrets.token_urlsafe(48)),
        code_challenge_method="S256",
    )
    response = http.post(
        urls.authorize, params=params, data={"username": username, "password": password}
    )
    assert response.status_code == 401
    assert "location" not in response.headers
    assert "Invalid username or password" in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_a_person_of_another_tenant_cannot_sign_in_through_this_client(
    public_client: str, database: Database, urls: Endpoints, http: httpx.Client
) -> None:
    from core.people.services import create_person
    from tests.factories import make_tenant

    other = make_tenant(database, "other")
    with database.tenant_transaction(other.id) as session:
        create_person(session, username="only_in_other", display_name="x", password=PASSWORD)
    params = _authorize_params(
        public_client,
        code_challenge=create_s256_code_challenge(secrets.token_urlsafe(48)),
        code_challenge_method="S256",
    )
    response = http.post(
        urls.authorize, params=params, data={"username": "only_in_other", "password": PASSWORD}
    )
    assert response.status_code == 401
    assert "location" not in response.headers


def test_cancel_returns_access_denied(
    public_client: str, urls: Endpoints, http: httpx.Client
) -> None:
    params = _authorize_params(
        public_client,
        code_challenge=create_s256_code_challenge(secrets.token_urlsafe(48)),
        code_challenge_method="S256",
    )
    response = http.post(urls.authorize, params=params, data={"action": "deny"})
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["access_denied"]


@pytest.mark.parametrize(
    "change",
    [{"client_id": "nobody.xxxxxxxx"}, {"redirect_uri": "https://evil.example/cb"}],
    ids=["unknown-client", "unregistered-redirect"],
)
def test_bad_client_or_redirect_uri_is_never_redirected_to(
    public_client: str, urls: Endpoints, http: httpx.Client, change: dict[str, str]
) -> None:
    params = _authorize_params(
        public_client, code_challenge="a" * 43, code_challenge_method="S256", **change
    )
    response = http.get(urls.authorize, params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


def test_client_credentials_client_cannot_use_the_authorize_endpoint(
    database: Database, world: TenantWorld, urls: Endpoints, http: httpx.Client
) -> None:
    client_id, _ = register(database, world, redirect_uris=(REDIRECT,))
    params = _authorize_params(client_id, code_challenge="a" * 43, code_challenge_method="S256")
    response = http.get(urls.authorize, params=params)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == [
        "unauthorized_client"
    ]
