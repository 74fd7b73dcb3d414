"""Errors found by the whole-document fuzzing stay fixed (regressions, one test each)."""

from __future__ import annotations

import httpx

from tests.factories import TenantWorld
from tests.integrators.conftest import problem


def test_a_bad_body_field_named_like_a_dependency_is_a_400(
    api: httpx.Client, admin: dict[str, str], world: TenantWorld
) -> None:
    # Litestar took a body field called "settings" (also a dependency) for a server fault.
    answer = api.put(
        f"/api/v1/plugin-settings/group_policy/{world.units['bj'].id}",
        headers=admin,
        json={"settings": -1e-05, "reason": 1},
    )
    body = problem(answer, 400)
    assert body["type"] == "/problems/validation-error"
    assert body["errors"][0]["key"] == "settings" and body["errors"][0]["source"] == "body"
