"""Bad input at every endpoint of the foundation never yields a 500 (Schemathesis).

Schemathesis generates valid and invalid requests from the OpenAPI document and sends them
over real HTTP with a tenant admin's token; every answer must be a non-5xx response, errors
must be RFC 9457 problem details, and successful answers must match the documented schema.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from core.db import Database
from tests.api.conftest import TokenFor, auth
from tests.conftest import LiveServer
from tests.factories import make_tenant

FOUNDATION = r"^/api/v1/(org-units|people|roles|role-assignments|customers|policies)"
EXAMPLES_PER_OPERATION = 12


def _exercise(
    operation: Any, headers: dict[str, str], failures: list[str], mode: GenerationMode
) -> int:
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call(headers=headers, timeout=15)
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except Exception as exc:  # collected, reported together below
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:500])
            return
        if response.status_code >= 400:
            kind = "".join(response.headers.get("content-type", []))
            body = response.json() if kind.startswith("application/problem+json") else {}
            if not {"type", "title", "status", "detail"} <= set(body):
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"is not problem details: {response.text[:200]}"
                )

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # an operation with no valid request at all is a schema bug
        # nothing invalid can be sent to an operation without parameters or body
    return sent


def test_no_server_error_and_problem_details_everywhere(
    database: Database, live_server: LiveServer, person_token: TokenFor
) -> None:
    headers = auth(person_token(make_tenant(database, "fuzz"), "admin"))
    schema = schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json")
    operations = [r.ok() for r in schema.include(path_regex=FOUNDATION).get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    sent = sum(
        _exercise(op, headers, failures, mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    print(f"schemathesis: {len(operations)} operations, {sent} requests")
    assert sent >= len(operations) * 10
    assert not failures, "\n".join(failures[:20])
