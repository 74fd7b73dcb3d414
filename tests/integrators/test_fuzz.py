"""Schemathesis over the WHOLE OpenAPI document, with a valid token: no 5xx, every error a
problem-details body (RFC 6749 JSON on the OAuth endpoints), every answer matching the schema.

The run sends positive and negative requests for every operation of ``/schema/openapi.json``:
at least 2,000 per backend, in about a minute each (``FUZZ_EXAMPLES`` overrides the number per
operation and mode). It runs against a server of its own with rate limits off
(they are tested in test_rate_limits.py) and no background worker, so random webhook URLs are
never called.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from authlib.integrations.httpx_client import OAuth2Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from core.app import create_app
from core.auth.services import create_client
from core.db import Database
from core.people.permissions import ALL_PERMISSIONS
from core.settings import Settings
from tests.conftest import LiveServer
from tests.factories import make_tenant

pytestmark = pytest.mark.usefixtures("quiet_webhooks")

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = {"sqlite": 14, "postgres": 14}
"""Examples per operation and generation mode, per backend."""
MINIMUM = {"sqlite": 2000, "postgres": 2000}


@pytest.fixture(scope="module")
def fuzz_server(settings: Settings, database: Database) -> Iterator[LiveServer]:
    """The platform on its own port: rate limits off, no embedded worker."""
    server = LiveServer(None)
    app = create_app(
        replace(
            settings,
            issuer=server.url,
            rate_limit_backend="off",
            broker_url="redis://127.0.0.1:1/0",
        ),
        database,
    )
    server.server.config.app = app
    server.start()
    yield server
    server.stop()


def _problem_or_oauth_error(path: str, response: Any) -> str | None:
    kind = response.headers.get("content-type", "")
    kind = "".join(kind) if isinstance(kind, list) else kind
    try:
        body = response.json()
    except ValueError:
        body = None
    if path.startswith("/oauth/"):
        if isinstance(body, dict) and "error" in body:
            return None
        return f"{response.status_code} is not an RFC 6749 error: {response.text[:200]}"
    if (
        kind.startswith("application/problem+json")
        and isinstance(body, dict)
        and {"type", "title", "status", "detail"} <= set(body)
    ):
        return None
    return f"{response.status_code} is not problem details: {response.text[:200]}"


def _exercise(
    operation: Any, headers: dict[str, str], failures: list[str], mode: Any, examples: int
) -> int:
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call(headers=headers, timeout=30)
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except (Exception, BaseExceptionGroup) as exc:  # FailureGroup is a BaseExceptionGroup
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:800])
            return
        if response.status_code >= 400:
            wrong = _problem_or_oauth_error(case.path, response)
            if wrong:
                failures.append(f"{case.method} {case.formatted_path}: {wrong}")

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to send to some operations
        run()
    return sent


def test_the_whole_document(database: Database, fuzz_server: LiveServer, backend: str) -> None:
    from schemathesis import GenerationMode

    world = make_tenant(database, "fuzz-all")
    with database.tenant_transaction(world.id) as session:
        client, secret = create_client(
            session, name="fuzz", scopes=sorted(ALL_PERMISSIONS), unit_ids=[]
        )
        client_id = client.client_id
    with OAuth2Client(client_id, secret) as oauth:
        token = oauth.fetch_token(
            f"{fuzz_server.url}/oauth/token", grant_type="client_credentials"
        )["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/schema/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 80
    examples = int(os.environ.get("FUZZ_EXAMPLES", EXAMPLES[backend]))
    failures: list[str] = []
    started = time.monotonic()
    sent = sum(
        _exercise(op, headers, failures, mode, examples)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    took = time.monotonic() - started
    print(f"schemathesis[{backend}]: {len(operations)} operations, {sent} requests, {took:.0f} s")
    if "FUZZ_EXAMPLES" not in os.environ:
        assert sent >= MINIMUM[backend]
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
