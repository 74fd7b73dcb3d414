"""The audit API tests reuse the API fixtures: live server, two tenants, real tokens."""

from tests.api.conftest import api, person_token, tenant_a, tenant_b

__all__ = ["api", "person_token", "tenant_a", "tenant_b"]
