"""The OpenAPI document is complete enough for a generated client, and one generated from it
by openapi-python-client (offline, no hand edits) creates and reads a case."""

from __future__ import annotations

import importlib
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.people.permissions import PERMISSIONS
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import Integrator, register_client

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def document(live_server: LiveServer) -> dict[str, Any]:
    """``/schema/openapi.json`` of the live server."""
    answer = httpx.get(f"{live_server.url}/schema/openapi.json", timeout=20)
    assert answer.status_code == 200
    return dict(answer.json())


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of every operation."""
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref``."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_operation_has_a_unique_id(document: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(document)]
    assert all(ids) and len(ids) == len(set(ids))
    assert len(ids) >= 80


def test_errors_are_documented_as_problem_details(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        if not path.startswith("/api/"):
            continue
        for status in ("400", "401", "403", "404", "422", "429"):
            response = resolve(document, op["responses"][status])
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ProblemDetails"}, (path, method)
        if any(p.get("name") == "If-Match" for p in op.get("parameters", [])):
            assert {"412", "428"} <= set(op["responses"]), (path, method)
        assert "RateLimit-Remaining" in resolve(document, op["responses"]["429"])["headers"]
    problem = document["components"]["schemas"]["ProblemDetails"]
    assert problem["required"] == ["type", "title", "status", "detail"]


def test_creates_take_an_idempotency_key_and_scopes_are_stated(
    document: dict[str, Any],
) -> None:
    for path, method, op in operations(document):
        if path.startswith("/api/"):
            if method in ("post", "patch"):
                refs = [p.get("$ref") for p in op.get("parameters", [])]
                assert "#/components/parameters/IdempotencyKey" in refs, (path, method)
            [requirement] = op["security"]
            assert set(requirement) == {"oauth2"}
            assert set(requirement["oauth2"]) <= set(PERMISSIONS)
        else:
            assert op["security"] == [], (path, method)
    assert document["paths"]["/api/v1/cases"]["post"]["security"] == [{"oauth2": ["cases:write"]}]
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert set(flows["clientCredentials"]["scopes"]) == set(PERMISSIONS)
    token = document["paths"]["/oauth/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert "resource" in form["properties"]
    assert token["responses"]["400"] == {"$ref": "#/components/responses/OAuthError"}


def test_component_names_are_identifiers_with_examples(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name), name
        assert schema.get("title") == name
    body = document["paths"]["/api/v1/cases"]["post"]["requestBody"]["content"]
    assert body["application/json"]["examples"]["complaint"]["value"]["type"] == "complaint"


def _generate(document_path: Path, out: Path) -> list[str]:
    from openapi_python_client import generate
    from openapi_python_client.config import Config, ConfigFile, MetaType

    config = Config.from_sources(
        ConfigFile(post_hooks=[], package_name_override="insurdesk_client"),
        MetaType.NONE,
        document_path,
        "utf-8",
        True,
        out,
    )
    return [f"{e.header}: {e.detail}" for e in generate(config=config)]


def test_a_generated_client_creates_and_reads_a_case(
    live_server: LiveServer,
    api: httpx.Client,
    admin: dict[str, str],
    world: TenantWorld,
    tmp_path: Path,
) -> None:
    source = tmp_path / "openapi.json"
    source.write_bytes(httpx.get(f"{live_server.url}/schema/openapi.json", timeout=20).content)
    package = tmp_path / "generated" / "insurdesk_client"
    warnings = _generate(source, package)
    assert warnings == []  # every operation and schema understood, nothing dropped

    integrator: Integrator = register_client(
        api, admin, live_server, scopes=["cases:read", "cases:write"]
    )
    for name in [m for m in sys.modules if m.startswith("insurdesk_client")]:
        del sys.modules[name]
    sys.path.insert(0, str(package.parent))
    try:
        client_mod = importlib.import_module("insurdesk_client")
        register = importlib.import_module("insurdesk_client.api.cases.register_case")
        get_case = importlib.import_module("insurdesk_client.api.cases.get_case")
        models = importlib.import_module("insurdesk_client.models")
    finally:
        sys.path.remove(str(package.parent))

    client = client_mod.AuthenticatedClient(base_url=live_server.url, token=integrator.token)
    with client:
        body = models.CaseCreate(
            type_=models.CaseType.COMPLAINT,
            channel=models.Channel.API,
            subject="生成的客户端提交的投诉",
            unit_id=world.units["bj"].id,
            description="通过 openapi-python-client 生成的客户端登记",
        )
        key = str(uuid.uuid4())
        created = register.sync_detailed(client=client, body=body, idempotency_key=key)
        assert created.status_code == 201, created.content
        detail = created.parsed
        assert isinstance(detail, models.CaseDetailOut)
        assert detail.case.type_ == models.CaseType.COMPLAINT
        replayed = register.sync_detailed(client=client, body=body, idempotency_key=key)
        assert replayed.parsed.case.id == detail.case.id

        read = get_case.sync(case_id=detail.case.id, client=client)
        assert isinstance(read, models.CaseDetailOut)
        assert read.case.number == detail.case.number and read.case.subject == body.subject
        missing = get_case.sync(case_id=uuid.uuid4(), client=client)
        assert isinstance(missing, models.ProblemDetails) and missing.status == 404
