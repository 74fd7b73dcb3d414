"""Optimistic concurrency for updates: ``ETag`` on reads and writes, ``If-Match`` on updates.

Rules (docs/integrators.md):

* every representation that can be updated carries a strong ``ETag``;
* an update with an ``If-Match`` that is not the current ETag is a ``412`` problem
  (``stale-version``, with the current ``ETag``), never a lost update; ``If-Match: *`` matches
  any current version;
* integrators (tokens of ``kind = client``) must send ``If-Match`` on every update: without it
  the answer is ``428`` (``precondition-required``). People's tokens (the console) may omit it;
  cases require it of everyone (:func:`core.cases.flows.check_if_match`);
* the check and the write are one step: rows with a ``version`` column (``version_id_col``)
  are updated with ``WHERE version = <read>`` by the ORM (:func:`flush_or_412`); rows without
  one are claimed with ``UPDATE … WHERE updated_at = <read>`` first (:func:`claim_unchanged`),
  so of two concurrent updates sent with the same ETag exactly one wins.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from litestar import Response
from litestar.params import HeaderParameter
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from core.api.problems import Problem
from core.auth.principal import Principal
from core.db import utcnow

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        required=False,
        max_length=1000,
        description="The ETag of the version you read (required of integrators: 428 without, "
        "412 when stale).",
    ),
]
"""The ``If-Match`` request header, for handler signatures."""


def version_etag(version: int) -> str:
    """The strong ETag of a row with an integer version."""
    return f'"{version}"'


def with_etag(body: Any, version: int, status: int = 200, **headers: str) -> Response[Any]:
    """A response carrying ``body`` with the strong ETag of ``version`` (and ``headers``)."""
    return Response(body, status_code=status, headers={"ETag": version_etag(version), **headers})


def timestamp_etag(ident: object, updated_at: datetime) -> str:
    """The strong ETag of a row versioned by its ``updated_at`` (no version column)."""
    raw = f"{ident}:{updated_at.isoformat()}".encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:20] + '"'


def requires_if_match(principal: Principal | None) -> bool:
    """Integrators must send ``If-Match`` on updates; people's tokens may omit it."""
    return principal is not None and principal.kind == "client"


def check_if_match(
    if_match: str | None, current: str, *, required: bool, what: str = "the record"
) -> None:
    """Refuse a missing (428, when ``required``) or stale (412) ``If-Match``.

    :param current: the current strong ETag (quoted).
    """
    if if_match is None or not if_match.strip():
        if required:
            raise Problem(
                428,
                f"send If-Match with the ETag of {what} (from GET or the last change) to change it",
                slug="precondition-required",
            )
        return
    tags = [t.strip() for t in if_match.split(",") if t.strip()]
    if "*" in tags:
        return
    if not any(t == current or f'"{t}"' == current for t in tags):
        raise Problem(
            412,
            f"{what} changed since you read it; read it again and retry",
            slug="stale-version",
            headers={"ETag": current},
        )


def claim_unchanged(session: Session, obj: Any, *, what: str = "the record") -> None:
    """Take the row of ``obj`` for this transaction if its ``updated_at`` is still the one read.

    Issues ``UPDATE … SET updated_at = now WHERE id = … AND updated_at = <read>``; a row that
    another transaction changed in between matches nothing and the answer is a 412.
    """
    model = type(obj)
    seen = obj.updated_at
    now = utcnow()
    result = session.execute(
        update(model)
        .where(model.tenant_id == obj.tenant_id, model.id == obj.id, model.updated_at == seen)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Problem(
            412,
            f"{what} was changed concurrently; read it again and retry",
            slug="stale-version",
        )
    obj.updated_at = now


def flush_or_412(session: Session, *, what: str = "the record") -> None:
    """Flush; a row whose version changed underneath (``version_id_col``) becomes a 412."""
    try:
        session.flush()
    except StaleDataError as exc:
        raise Problem(
            412, f"{what} was changed concurrently; read it again and retry", slug="stale-version"
        ) from exc
