"""Privacy API tests reuse the API fixtures: live server, two tenants, real tokens."""

from tests.api.conftest import api, person_token, tenant_a, tenant_b

__all__ = ["api", "person_token", "tenant_a", "tenant_b"]

from tests.outbox.fixtures import (  # noqa: F401  (fixtures of the background tests)
    bg_db,
    bg_settings,
    smtp,
    webhooks,
    world,
)
