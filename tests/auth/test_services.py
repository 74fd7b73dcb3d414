"""Client registration rules (core.auth.services)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from core.api.problems import Problem
from core.auth.hashing import verify_secret
from core.auth.services import (
    create_client,
    list_clients,
    rotate_client_secret,
    update_client,
)
from core.db import Database
from tests.factories import TenantWorld, make_tenant


def _create(database: Database, world: TenantWorld, **kwargs: Any) -> Any:
    kwargs.setdefault("name", "c")
    kwargs.setdefault("scopes", ["org:read"])
    kwargs.setdefault("unit_ids", [])
    with database.tenant_transaction(world.id) as session:
        return create_client(session, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "slug"),
    [
        ({"scopes": ["org:read", "everything:all"]}, "unknown-permission"),
        ({"unit_ids": [uuid.uuid4()]}, "unknown-unit"),
        ({"secret": "too-short"}, "invalid-client"),
        ({"grant_types": ("password",)}, "invalid-client"),
        ({"grant_types": ("authorization_code",)}, "invalid-client"),  # no redirect URI
        (
            {"grant_types": ("authorization_code",), "redirect_uris": ("http://evil.example/cb",)},
            "invalid-client",
        ),
        ({"auth_method": "none"}, "invalid-client"),  # public + client_credentials
        ({"auth_method": "private_key_jwt"}, "invalid-client"),  # no JWKS
        ({"client_id": "another-tenant.abcdefgh"}, "invalid-client"),
    ],
)
def test_invalid_registrations_are_422(
    database: Database, world: TenantWorld, kwargs: dict[str, Any], slug: str
) -> None:
    with pytest.raises(Problem) as err:
        _create(database, world, **kwargs)
    assert err.value.status == 422
    assert err.value.slug == slug


def test_units_of_another_tenant_are_unknown(database: Database, world: TenantWorld) -> None:
    other = make_tenant(database, "other")
    with pytest.raises(Problem) as err:
        _create(database, world, unit_ids=[other.units["bj"].id])
    assert err.value.slug == "unknown-unit"


def test_private_keys_are_refused_in_a_jwks(database: Database, world: TenantWorld) -> None:
    key = RSAKey.generate_key(2048, private=True)
    with pytest.raises(Problem):
        _create(
            database,
            world,
            auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=True)]},
        )
    client, secret = _create(
        database, world, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    assert secret is None and client.secret_hash is None
    assert "d" not in client.jwks["keys"][0]


def test_fixed_demo_id_and_secret(database: Database, world: TenantWorld) -> None:
    demo_secret = "a-demo-secret-that-is-long-enough-1234"
    client_id = f"{world.tenant.slug}.demo-portal"
    client, secret = _create(database, world, client_id=client_id, secret=demo_secret)
    assert client.client_id == client_id and secret == demo_secret
    assert verify_secret(client.secret_hash, demo_secret)
    with pytest.raises(Problem) as err:
        _create(database, world, client_id=client_id)
    assert err.value.status == 409


def test_rotate_update_and_list(database: Database, world: TenantWorld) -> None:
    client, secret = _create(database, world)
    with database.tenant_transaction(world.id) as session:
        new = rotate_client_secret(session, client.client_id)
        assert update_client(session, client.client_id, scopes=["org:read", "cases:read"])
        assert not update_client(session, client.client_id, scopes=["cases:read", "org:read"])
        listed = {c.client_id: c for c in list_clients(session)}
    assert new != secret
    stored = listed[client.client_id]
    assert verify_secret(stored.secret_hash, new) and not verify_secret(stored.secret_hash, secret)
    assert stored.scopes == ["cases:read", "org:read"]
