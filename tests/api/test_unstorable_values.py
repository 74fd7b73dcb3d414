"""Values PostgreSQL cannot take (NUL bytes, numbers out of range) are a 400, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/plugin-settings", {"plugin": "group\x00policy"}),
        ("/api/v1/people", {"username": "ad\x00min"}),
        ("/api/v1/policies", {"number": "P\x00"}),
    ],
)
def test_nul_bytes_in_filters_are_a_client_error(
    api: httpx.Client,
    tenant_a: TenantWorld,
    person_token: TokenFor,
    path: str,
    params: dict[str, str],
) -> None:
    answer = api.get(path, params=params, headers=auth(person_token(tenant_a, "admin")))
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith("application/problem+json")
