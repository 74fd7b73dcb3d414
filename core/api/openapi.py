"""The finished OpenAPI document: what Litestar generates, plus what integrators need.

Litestar builds paths, operations and schemas from the handlers. :func:`finish` then adds, in
one place rather than on every handler:

* a shared ``ProblemDetails`` schema (RFC 9457) and the error responses of every ``/api/``
  operation (400, 401, 403, 404, 409, 422, 429; 412/428 where ``If-Match`` applies; 413/415
  where a body is sent), with ``WWW-Authenticate``, ``Retry-After`` and ``RateLimit-*``
  headers; RFC 6749 error bodies (``OAuthError``) on the OAuth endpoints;
* the ``Idempotency-Key`` header on every ``POST`` and ``PATCH`` under ``/api/``, and ``ETag``
  on the answers of resources updated with ``If-Match``;
* the scopes each operation needs, in its ``security`` requirement (the token endpoint and
  the other public endpoints need none);
* the form bodies and answers of ``/oauth/token``, ``/oauth/introspect`` and ``/oauth/revoke``;
* request examples, and component names a client generator turns into readable classes
  (``Page_core.cases.schemas.CaseOut_`` becomes ``CaseOutPage``).

It runs once, on the first request for ``/schema/openapi.json``
(:class:`FinishedJsonRenderPlugin`).
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterator
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from core.settings import Settings

PROBLEM = "application/problem+json"
API_PREFIX = "/api/"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_PROBLEM_TEXT = {
    "400": "The request is malformed or fails validation (``errors`` lists each problem).",
    "401": "No valid bearer token: missing, expired, revoked, or its client is disabled.",
    "403": "The token lacks the permission at this unit (``permission`` names it).",
    "404": "Not found: does not exist, belongs to another tenant, or lies outside your units.",
    "409": "Conflicts with existing data, or the same Idempotency-Key is still being served.",
    "412": "If-Match is stale: the resource changed since you read it (current ETag sent).",
    "413": "The request body is too large.",
    "415": "The request's content type is not accepted.",
    "422": "Understood but refused (a rule, an unknown reference, a reused Idempotency-Key).",
    "428": "If-Match is required (integrators must send it on every update).",
    "429": "Rate limit exceeded: retry after ``Retry-After`` seconds.",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ProblemDetails",
    "type": "object",
    "description": "An error, as RFC 9457 problem details (``application/problem+json``). "
    "``type`` is stable (``/problems/<slug>``); extension members such as ``errors``, "
    "``permission`` or ``retry_after`` may follow.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable problem type."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "instance": {"type": "string", "description": "The request path."},
        "errors": {
            "type": "array",
            "description": "Validation errors (400).",
            "items": {"type": "object", "additionalProperties": True},
        },
    },
    "additionalProperties": True,
    "example": {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "case 0193a1b2-7c4d-7e00-8000-000000000000 was not found",
        "instance": "/api/v1/cases/0193a1b2-7c4d-7e00-8000-000000000000",
    },
}

OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OAuthError",
    "type": "object",
    "description": "An RFC 6749 error of the OAuth endpoints (what OAuth libraries parse).",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "examples": ["invalid_client", "invalid_grant"]},
        "error_description": {"type": "string"},
    },
    "additionalProperties": True,
}

TOKEN_SCHEMA: dict[str, Any] = {
    "title": "TokenResponse",
    "type": "object",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": {"type": "string", "description": "A JWT (RFC 9068), ``typ: at+jwt``."},
        "token_type": {"type": "string", "examples": ["Bearer"]},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
        "refresh_token": {"type": "string"},
    },
    "additionalProperties": True,
}

INTROSPECTION_SCHEMA: dict[str, Any] = {
    "title": "IntrospectionResponse",
    "type": "object",
    "required": ["active"],
    "properties": {
        "active": {"type": "boolean"},
        "scope": {"type": "string"},
        "client_id": {"type": "string"},
        "sub": {"type": "string"},
        "aud": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "iss": {"type": "string"},
        "exp": {"type": "integer"},
        "iat": {"type": "integer"},
        "jti": {"type": "string"},
        "token_type": {"type": "string"},
        "tenant": {"type": "string"},
        "tenant_slug": {"type": "string"},
        "kind": {"type": "string"},
    },
    "additionalProperties": True,
}

_RATE_HEADERS = {
    "RateLimit-Limit": "The size of the tighter bucket (requests per minute).",
    "RateLimit-Remaining": "Requests left in it now.",
    "RateLimit-Reset": "Seconds until it is full again.",
    "RateLimit-Policy": "The policy: ``<limit>;w=60``.",
}

IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes retries safe: the same key with the same request returns the first "
    "(successful) response again, with ``Idempotent-Replayed: true``; with another request, "
    "422. Keys are kept 24 hours per caller. 1-255 visible ASCII characters (a UUID is "
    "a good choice).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "example": "5f2b7c1e-8a3d-4e0b-9a61-2c7f0d4e9b13",
}

# (path regex, scope for reads, scope for writes); the first match wins.
_SCOPES: list[tuple[str, str | None, str | None]] = [
    (r"^/api/v1/me$", None, None),
    (r"^/api/v1/webhook-event-types$", None, None),
    (r"^/api/v1/case-statistics", "stats:read", "stats:read"),
    (r"^/api/v1/cases/[^/]+/assign$", "cases:assign", "cases:assign"),
    (r"^/api/v1/cases/auto-assign$", "cases:assign", "cases:assign"),
    (r"^/api/v1/(cases|case-views|case-categories)", "cases:read", "cases:write"),
    (r"^/api/v1/customers", "customers:read", "customers:write"),
    (r"^/api/v1/policies", "policies:read", "policies:write"),
    (r"^/api/v1/org-units", "org:read", "org:write"),
    (r"^/api/v1/people", "people:read", "people:write"),
    (r"^/api/v1/(roles|role-assignments)", "roles:read", "roles:write"),
    (r"^/api/v1/plugin", "plugins:read", "plugins:admin"),
    (r"^/api/v1/clients", "clients:admin", "clients:admin"),
    (r"^/api/v1/webhooks", "webhooks:admin", "webhooks:admin"),
    (r"^/api/v1/audit", "audit:read", "audit:read"),
    (
        r"^/api/v1/(deliveries|notification-templates|ops/)",
        "notifications:admin",
        "notifications:admin",
    ),
]

_EXAMPLES: dict[str, dict[str, Any]] = {
    "registerCase": {
        "complaint": {
            "summary": "A complaint received on the hotline",
            "value": {
                "type": "complaint",
                "channel": "hotline",
                "subject": "理赔款迟迟未到账",
                "unit_id": "0193a1b2-7c4d-7e00-8000-0000000000b1",
                "customer_id": "0193a1b2-7c4d-7e00-8000-0000000000c1",
                "description": "客户反映车险理赔款已审批两周仍未到账。",
            },
        }
    },
    "createCustomer": {
        "policyholder": {
            "value": {
                "kind": "policyholder",
                "name": "张伟",
                "unit_id": "0193a1b2-7c4d-7e00-8000-0000000000b1",
                "phone": "13800138000",
                "preferred_channel": "phone",
            }
        }
    },
    "registerClient": {
        "integrator": {
            "summary": "A core system that files and follows cases",
            "value": {
                "name": "核心业务系统",
                "scopes": ["cases:read", "cases:write", "customers:read"],
                "unit_ids": ["0193a1b2-7c4d-7e00-8000-0000000000b1"],
            },
        }
    },
    "createWebhook": {
        "cases": {
            "value": {
                "url": "https://erp.example.com/hooks/insurdesk",
                "event_types": ["case.created", "case.transitioned", "deadline.breached"],
                "description": "ERP case sync",
            }
        }
    },
}


def finish(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Complete ``schema`` in place (see the module docstring) and return it."""
    _rename_components(schema)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ProblemDetails"] = copy.deepcopy(PROBLEM_SCHEMA)
    schemas["OAuthError"] = copy.deepcopy(OAUTH_ERROR_SCHEMA)
    schemas["TokenResponse"] = copy.deepcopy(TOKEN_SCHEMA)
    schemas["IntrospectionResponse"] = copy.deepcopy(INTROSPECTION_SCHEMA)
    headers = components.setdefault("headers", {})
    for name, text in _RATE_HEADERS.items():
        headers[name] = {
            "description": text,
            "schema": {"type": "integer" if name != "RateLimit-Policy" else "string"},
        }
    headers["Retry-After"] = {"description": "Seconds to wait.", "schema": {"type": "integer"}}
    headers["ETag"] = {
        "description": "The version of the resource: send it back as If-Match to change it.",
        "schema": {"type": "string"},
    }
    headers["WWW-Authenticate"] = {"description": "Bearer challenge.", "schema": {"type": "string"}}
    headers["Idempotent-Replayed"] = {
        "description": "``true`` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key.",
        "schema": {"type": "string"},
    }
    components.setdefault("parameters", {})["IdempotencyKey"] = IDEMPOTENCY_PARAMETER
    responses = components.setdefault("responses", {})
    for status, text in _PROBLEM_TEXT.items():
        responses[f"Problem{status}"] = _problem_response(status, text)
    responses["OAuthError"] = {
        "description": "An RFC 6749 error.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}},
    }
    etag_paths = {
        path
        for path, item in schema.get("paths", {}).items()
        for _, op in _operations(item)
        if any(_param_name(p) == "If-Match" for p in op.get("parameters", []))
    }
    for path, item in schema.get("paths", {}).items():
        for method, op in _operations(item):
            if path.startswith(API_PREFIX):
                _finish_api_operation(path, method, op, etag=path in etag_paths)
            else:
                _finish_public_operation(path, method, op)
    oauth2 = components.get("securitySchemes", {}).get("oauth2")
    if isinstance(oauth2, dict):
        oauth2["description"] = (
            (oauth2.get("description") or "")
            + " A token may be restricted to resources with the RFC 8707 `resource` "
            "parameter at the token endpoint (e.g. `<issuer>/api/v1/cases`); each operation's "
            "security requirement names the scope it needs."
        ).strip()
    _describe(schema, settings)
    return schema


def _problem_response(status: str, text: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": text,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }
    if status == "401":
        response["headers"] = {
            "WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}
        }
    if status == "429":
        response["headers"] = {
            "Retry-After": {"$ref": "#/components/headers/Retry-After"},
            **{n: {"$ref": f"#/components/headers/{n}"} for n in _RATE_HEADERS},
        }
    if status == "412":
        response["headers"] = {"ETag": {"$ref": "#/components/headers/ETag"}}
    return response


def _operations(item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for method in METHODS:
        if isinstance(item.get(method), dict):
            yield method, item[method]


def _param_name(param: dict[str, Any]) -> str | None:
    return param.get("name") if isinstance(param, dict) else None


def _scope_for(path: str, method: str) -> str | None:
    for pattern, read, write in _SCOPES:
        if re.search(pattern, path):
            return read if method == "get" else write
    return None


def _finish_api_operation(path: str, method: str, op: dict[str, Any], *, etag: bool) -> None:
    params = [p for p in op.get("parameters", []) if _param_name(p) != "Idempotency-Key"]
    if method in ("post", "patch"):
        params.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if params:
        op["parameters"] = params
    has_if_match = any(_param_name(p) == "If-Match" for p in params)
    responses = op.setdefault("responses", {})
    for status, response in responses.items():
        if status.startswith("2") and isinstance(response, dict):
            headers = response.setdefault("headers", {})
            for name in _RATE_HEADERS:
                headers[name] = {"$ref": f"#/components/headers/{name}"}
            if etag:
                headers["ETag"] = {"$ref": "#/components/headers/ETag"}
            if method in ("post", "patch"):
                headers["Idempotent-Replayed"] = {
                    "$ref": "#/components/headers/Idempotent-Replayed"
                }
    wanted = ["400", "401", "403", "404", "409", "422", "429"]
    if has_if_match:
        wanted += ["412", "428"]
    if "requestBody" in op:
        wanted += ["413", "415"]
    for status in wanted:
        responses[status] = {"$ref": f"#/components/responses/Problem{status}"}
    scope = _scope_for(path, method)
    op["security"] = [{"oauth2": [scope] if scope else []}]
    if op.get("operationId") in _EXAMPLES and "requestBody" in op:
        for media in op["requestBody"].get("content", {}).values():
            media["examples"] = copy.deepcopy(_EXAMPLES[op["operationId"]])


_FORMS: dict[str, dict[str, Any]] = {
    "/oauth/token": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {
                "type": "string",
                "enum": ["client_credentials", "authorization_code", "refresh_token"],
            },
            "scope": {
                "type": "string",
                "description": "Space-separated scopes (a subset of "
                "the client's; all of them when omitted).",
            },
            "resource": {
                "type": "string",
                "description": "RFC 8707: restrict the token to an "
                "API resource, e.g. ``<issuer>/api/v1/cases``.",
            },
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "client_assertion_type": {"type": "string"},
            "client_assertion": {"type": "string"},
            "code": {"type": "string"},
            "redirect_uri": {"type": "string"},
            "code_verifier": {"type": "string"},
            "refresh_token": {"type": "string"},
        },
    },
    "/oauth/introspect": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    },
    "/oauth/revoke": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    },
}

_OAUTH_OK: dict[str, dict[str, Any]] = {
    "/oauth/token": {"$ref": "#/components/schemas/TokenResponse"},
    "/oauth/introspect": {"$ref": "#/components/schemas/IntrospectionResponse"},
    "/oauth/revoke": {"type": "object"},
}


def _finish_public_operation(path: str, method: str, op: dict[str, Any]) -> None:
    op["security"] = []
    if path in _FORMS and method == "post":
        op["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _FORMS[path]}},
        }
        op["responses"] = {
            "200": {
                "description": "Success",
                "content": {"application/json": {"schema": _OAUTH_OK[path]}},
            },
            "400": {"$ref": "#/components/responses/OAuthError"},
            "401": {"$ref": "#/components/responses/OAuthError"},
        }
        op["description"] = (
            (op.get("description") or "")
            + "\n\nClient authentication: HTTP Basic (``client_secret_basic``), form fields "
            "(``client_secret_post``) or a signed assertion (``private_key_jwt``). Errors are "
            "RFC 6749 JSON, not problem details."
        ).strip()


_SEGMENT = re.compile(r"[^0-9A-Za-z]+")


def _pascal(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in _SEGMENT.split(text) if p)


def _new_name(name: str) -> str:
    page = re.fullmatch(r"Page_core\.(\w+)\.schemas\.(\w+)_", name)
    if page:
        return f"{page.group(2)}Page"
    dotted = re.fullmatch(r"(\w+)_schemas_(\w+)", name)
    if dotted:
        return _pascal(dotted.group(1)) + dotted.group(2)
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name) else _pascal(name)


def _rename_components(schema: dict[str, Any]) -> None:
    schemas = schema.get("components", {}).get("schemas", {})
    renames: dict[str, str] = {}
    taken: set[str] = set()
    for name in list(schemas):
        new = _new_name(name)
        base, n = new, 2
        while new in taken:
            new, n = f"{base}{n}", n + 1
        taken.add(new)
        renames[name] = new
    schema["components"]["schemas"] = {renames[k]: v for k, v in schemas.items()}
    for new, body in schema["components"]["schemas"].items():
        if isinstance(body, dict):
            body["title"] = new
    if any(k != v for k, v in renames.items()):
        _rewrite_refs(
            schema,
            {f"#/components/schemas/{k}": f"#/components/schemas/{v}" for k, v in renames.items()},
        )


def _rewrite_refs(node: Any, refs: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in refs:
            node["$ref"] = refs[ref]
        for value in node.values():
            _rewrite_refs(value, refs)
    elif isinstance(node, list):
        for value in node:
            _rewrite_refs(value, refs)


def _describe(schema: dict[str, Any], settings: Settings) -> None:
    info = schema.setdefault("info", {})
    info["description"] = (
        (info.get("description") or "")
        + "\n\n**Tokens.** OAuth 2.0 client credentials at `/oauth/token` (discovery at "
        "`/.well-known/oauth-authorization-server`); every `/api/v1` call sends "
        "`Authorization: Bearer <token>`. Each operation lists the scope it needs.\n\n"
        "**Errors** are RFC 9457 problem details (`application/problem+json`, schema "
        "`ProblemDetails`), with a stable `type`.\n\n"
        "**Safe retries.** Send `Idempotency-Key` on every POST and PATCH: a retry gets the "
        "first response again.\n\n"
        "**Concurrency.** Read the `ETag`, send it as `If-Match` when you change the resource: "
        "412 when stale; integrators get 428 without it.\n\n"
        "**Rate limits.** Per client and per tenant (`RateLimit-*` headers on every answer, "
        "429 with `Retry-After`).\n\n"
        "**Webhooks.** Subscribe at `/api/v1/webhooks`; deliveries are signed (Standard "
        "Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`).\n\n"
        "The integrator's guide: docs/integrators.md."
    ).strip()
    schema.setdefault("tags", [])


class FinishedJsonRenderPlugin(JsonRenderPlugin):
    """Serves ``/schema/openapi.json``: Litestar's document passed through :func:`finish`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self._lock = threading.Lock()
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """Finish the document once, then serve the same bytes."""
        with self._lock:
            if self._rendered is None:
                finished = finish(copy.deepcopy(openapi_schema), self.settings)
                self._rendered = self.render_json(request, finished)
            return self._rendered


def finished_openapi_plugin(settings: Settings) -> FinishedJsonRenderPlugin:
    """The render plugin of the finished document (for ``OpenAPIConfig.render_plugins``)."""
    return FinishedJsonRenderPlugin(settings)


__all__ = ["FinishedJsonRenderPlugin", "finish", "finished_openapi_plugin"]
