"""RFC 9457 problem details: one exception type, and the handlers that render every error.

Every error the API returns is ``application/problem+json`` with a stable ``type``
(``/problems/<slug>``, listed in docs/problems.md), a ``title``, the ``status`` and a
``detail`` a person can act on. Nothing a client sends may produce a 500.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DataError, IntegrityError

from core.db import CrossTenantWriteError

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("insurdesk.api")

_SLUG_BY_STATUS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("unprocessable", "Unprocessable content"),
    428: ("precondition-required", "Precondition required"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal error"),
    503: ("unavailable", "Service unavailable"),
}


class Problem(Exception):
    """An error to be answered as problem details.

    :param status: the HTTP status.
    :param slug: the stable problem type, rendered as ``/problems/<slug>``.
    :param detail: what went wrong, for a person.
    :param extra: extension members (e.g. ``errors``, ``plugin``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        default_slug, default_title = _SLUG_BY_STATUS.get(status, ("error", "Error"))
        self.status = status
        self.slug = slug or default_slug
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def not_found(what: str, ident: object) -> Problem:
    """The problem for an id that does not exist in the caller's tenant (or is not visible)."""
    return Problem(404, f"{what} {ident} was not found", slug="not-found")


def problem_document(problem: Problem, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 document of ``problem`` (``instance``: the request's path, when known)."""
    body: dict[str, Any] = {
        "type": f"/problems/{problem.slug}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(problem.extra)
    return body


def problem_response(request: Request[Any, Any, Any] | None, problem: Problem) -> Response[Any]:
    """Render ``problem`` as an ``application/problem+json`` response."""
    body = problem_document(problem, request.url.path if request is not None else None)
    return Response(
        content=body,
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


_BODY_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$\.data(?P<path>[^`]*)`)$", re.S)


def _body_validation_error(exc: HTTPException) -> Problem | None:
    """Litestar answers a body that fails validation with a 500 when the failing field shares
    its name with a dependency (e.g. a body field ``settings``); that is the client's error."""
    cause = exc.__cause__
    if not isinstance(exc, InternalServerException) or not isinstance(
        cause, msgspec.ValidationError
    ):
        return None
    found = _BODY_ERROR.match(str(cause))
    if found is None:
        return None
    key = found.group("path").lstrip(".") or None
    error: dict[str, Any] = {"message": found.group("message"), "source": "body"}
    if key:
        error["key"] = key
    return Problem(
        400,
        "the request body is invalid",
        slug="validation-error",
        title="Invalid request",
        errors=[error],
    )


def _from_http_exception(exc: HTTPException) -> Problem:
    body_error = _body_validation_error(exc)
    if body_error is not None:
        return body_error
    status = exc.status_code
    detail = exc.detail or _SLUG_BY_STATUS.get(status, ("error", "Error"))[1]
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException):
        extra["errors"] = _validation_errors(exc.extra)
        return Problem(400, detail, slug="validation-error", title="Invalid request", **extra)
    if isinstance(exc, NotAuthorizedException):
        return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="insurdesk"'})
    if isinstance(exc, PermissionDeniedException):
        return Problem(403, detail)
    if isinstance(exc, NotFoundException):
        return Problem(404, detail)
    return Problem(status, str(detail), headers=dict(exc.headers or {}))


def _validation_errors(extra: Any) -> list[dict[str, Any]]:
    if isinstance(extra, list):
        return [e if isinstance(e, dict) else {"message": str(e)} for e in extra]
    if isinstance(extra, dict):
        return [extra]
    return []


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[Any]:
    """Exception handler for :class:`Problem`."""
    return problem_response(request, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Exception handler turning Litestar's HTTP exceptions into problem details."""
    return problem_response(request, _from_http_exception(exc))


def handle_integrity_error(request: Request[Any, Any, Any], exc: IntegrityError) -> Response[Any]:
    """A uniqueness or reference violation the service did not catch first: 409."""
    log.warning("integrity_error", path=request.url.path, error=str(exc.orig))
    return problem_response(
        request, Problem(409, "the change conflicts with existing data", slug="conflict")
    )


def handle_data_error(request: Request[Any, Any, Any], exc: DataError) -> Response[Any]:
    """A value the database cannot store or compare (a NUL byte in text, a number out of
    range): only a client's input gets here, so it is a 400, never a 500."""
    log.info("data_error", path=request.url.path, error=str(exc.orig)[:200])
    return problem_response(
        request,
        Problem(
            400,
            "a value in the request cannot be stored or compared: text may not "
            "contain NUL characters and numbers must be within range",
            slug="invalid-value",
        ),
    )


def handle_cross_tenant(
    request: Request[Any, Any, Any], exc: CrossTenantWriteError
) -> Response[Any]:
    """A write that would cross tenants is answered as if the target did not exist."""
    log.error("cross_tenant_write_refused", path=request.url.path, error=str(exc))
    return problem_response(request, Problem(404, "the referenced record was not found"))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Last resort: log the error with its traceback and answer a 500 problem."""
    log.exception("unhandled_error", path=request.url.path, error=repr(exc))
    return problem_response(
        request,
        Problem(HTTP_500_INTERNAL_SERVER_ERROR, "an internal error occurred; it has been logged"),
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    IntegrityError: handle_integrity_error,
    DataError: handle_data_error,
    CrossTenantWriteError: handle_cross_tenant,
    Exception: handle_unexpected,
}
