"""Bad input at every plugin endpoint never yields a 500 (Schemathesis over the live server).

Valid and invalid requests generated from the OpenAPI document, sent with a plugin admin's
client-credentials token; every answer is a non-5xx response, errors are problem details, and
successful answers match the documented schema.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from core.db import Database
from tests.conftest import LiveServer
from tests.factories import make_tenant
from tests.plugins.test_http_live import token_for

schemathesis = pytest.importorskip("schemathesis")

PLUGIN_PATHS = r"^/api/v1/(plugins|plugin-settings)"
EXAMPLES = 15


def _exercise(operation: Any, headers: dict[str, str], failures: list[str], mode: Any) -> int:
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call(headers=headers, timeout=15)
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except Exception as exc:  # collected and reported together
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:600])
            return
        if response.status_code >= 400:
            kind = response.headers.get("content-type", "")
            kind = "".join(kind) if isinstance(kind, list) else kind
            body = response.json() if kind.startswith("application/problem+json") else {}
            if not {"type", "title", "status", "detail"} <= set(body):
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"is not problem details: {response.text[:200]}"
                )

    # nothing invalid can be sent to an operation without parameters or body
    with contextlib.suppress(Unsatisfiable):
        run()
    return sent


def test_plugin_endpoints_never_answer_5xx(database: Database, live_server: LiveServer) -> None:
    from schemathesis import GenerationMode

    world = make_tenant(database, "pfuzz")
    token = token_for(database, live_server, world, ["plugins:read", "plugins:admin"])
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json")
    operations = [r.ok() for r in schema.include(path_regex=PLUGIN_PATHS).get_all_operations()]
    assert len(operations) == 12
    failures: list[str] = []
    sent = sum(
        _exercise(op, headers, failures, mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    assert sent >= len(operations) * 10
    assert not failures, "\n".join(failures[:20])
