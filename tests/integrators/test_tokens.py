"""Tokens as an integrator gets and uses them: RFC 8707 resource-restricted tokens, and a
token of one tenant that is useless on another's data. (Client credentials, PKCE, refresh,
private_key_jwt, introspection, revocation and key rotation are tested in tests/auth.)"""

from __future__ import annotations

import httpx
import pytest
from authlib.integrations.httpx_client import OAuthError

from tests.auth.helpers import claims_of
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import Integrator, problem, register_client


@pytest.fixture(scope="module")
def integrator(api: httpx.Client, admin: dict[str, str], live_server: LiveServer) -> Integrator:
    """A client reading cases and customers of the whole tenant."""
    return register_client(
        api, admin, live_server, scopes=["cases:read", "cases:write", "customers:read"]
    )


def test_a_token_restricted_to_one_resource(
    api: httpx.Client, integrator: Integrator, live_server: LiveServer
) -> None:
    cases = f"{live_server.url}/api/v1/cases"
    token = integrator.fresh_token(resource=cases)
    assert claims_of(token)["aud"] == [cases]
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/cases", headers=bearer).status_code == 200
    refused = problem(api.get("/api/v1/customers", headers=bearer), 401)
    assert refused["detail"] == "token audience does not include this resource"
    assert "Bearer" in api.get("/api/v1/customers", headers=bearer).headers["www-authenticate"]
    # several resources, and ``audience`` (as some libraries call it)
    form = {
        "grant_type": "client_credentials",
        "resource": [cases, f"{live_server.url}/api/v1/customers"],
    }
    both = httpx.post(
        f"{live_server.url}/oauth/token",
        data=form,
        auth=(integrator.client_id, integrator.secret),
    ).json()["access_token"]
    assert api.get("/api/v1/customers", headers={"Authorization": f"Bearer {both}"}).is_success
    alias = integrator.fresh_token(audience=f"{live_server.url}/api/v1/customers")
    assert api.get("/api/v1/customers", headers={"Authorization": f"Bearer {alias}"}).is_success
    # the whole API, as without the parameter
    wide = integrator.fresh_token(resource=f"{live_server.url}/api/v1")
    assert api.get("/api/v1/customers", headers={"Authorization": f"Bearer {wide}"}).is_success
    # introspection tells the audience
    with integrator.oauth() as oauth:
        seen = oauth.introspect_token(f"{live_server.url}/oauth/introspect", token=token).json()
    assert seen["active"] is True and seen["aud"] == [cases]


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example/api/v1/cases",
        "{base}/oauth/token",
        "{base}/api/v1/cases?x=1",
        "not a url",
    ],
)
def test_a_resource_that_is_not_the_api_is_invalid_target(
    integrator: Integrator, live_server: LiveServer, resource: str
) -> None:
    with pytest.raises(OAuthError) as err:
        integrator.fresh_token(resource=resource.format(base=live_server.url))
    assert err.value.error == "invalid_target"


def test_a_token_of_one_tenant_is_useless_on_another(
    api: httpx.Client,
    integrator: Integrator,
    world: TenantWorld,
    other: TenantWorld,
) -> None:
    theirs = other.cases["bj"]
    h = integrator.headers
    problem(api.get(f"/api/v1/cases/{theirs.id}", headers=h), 404)
    problem(api.get(f"/api/v1/cases/{theirs.id}/timeline", headers=h), 404)
    problem(
        api.post(
            f"/api/v1/cases/{theirs.id}/transitions",
            headers={**h, "If-Match": '"1"'},
            json={"action": "accept"},
        ),
        404,
    )
    problem(api.get(f"/api/v1/customers/{other.customers['bj'].id}", headers=h), 404)
    problem(
        api.post(
            "/api/v1/cases",
            headers=h,
            json={
                "type": "complaint",
                "channel": "api",
                "subject": "x",
                "unit_id": str(other.units["bj"].id),
            },
        ),
        404,
    )
    listed = api.get("/api/v1/cases", headers=h, params={"limit": 200}).json()["items"]
    assert {c["id"] for c in listed} >= {str(world.cases["bj"].id)}
    assert str(theirs.id) not in {c["id"] for c in listed}
    # no header, path or query can move the token to the other tenant
    forged = {**h, "X-Tenant": str(other.id), "X-Tenant-Slug": other.tenant.slug}
    me = api.get("/api/v1/me", headers=forged, params={"tenant": str(other.id)}).json()
    assert me["tenant"] == str(world.id)
