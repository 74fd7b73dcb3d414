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


def test_statistics_for_year_one_are_a_422_not_a_500(
    api: httpx.Client, admin: dict[str, str]
) -> None:
    # 0001-01-01 at +08:00 is before the first representable UTC instant
    for start, end in [("0001-01-01", "0001-01-01"), ("9999-12-31", "9999-12-31")]:
        answer = api.get(
            "/api/v1/case-statistics", headers=admin, params={"start": start, "end": end}
        )
        assert problem(answer, 422)["type"] == "/problems/invalid-period"
