"""Cursor pagination: opaque, tamper-evident cursors over a stable key (the UUIDv7 id).

A cursor is the base64url JSON of the last item's key; a malformed cursor is a 400 problem,
never a 500. Pages are ``{"items": [...], "next_cursor": str | null}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Select
from sqlalchemy.orm import Session

from core.api.problems import Problem

T = TypeVar("T")
MAX_LIMIT = 200


class Page(msgspec.Struct, Generic[T]):
    """One page of a list: the items and the cursor of the next page (null on the last)."""

    items: list[T]
    next_cursor: str | None = None


def pack_cursor(data: dict[str, Any]) -> str:
    """An opaque cursor holding ``data``: compact JSON, base64url without padding. Lists with
    their own sort keys (cases, audit) pack those; :func:`encode_cursor` packs an id."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack_cursor(cursor: str) -> Any:
    r"""The data :func:`pack_cursor` packed (not checked: the caller reads its keys).

    :raises ValueError: not base64url JSON (``binascii.Error``, ``json.JSONDecodeError`` and
        ``UnicodeDecodeError`` are ``ValueError``\ s).
    """
    return json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))


def encode_cursor(last_id: uuid.UUID) -> str:
    """An opaque cursor pointing after ``last_id``."""
    return pack_cursor({"after": str(last_id)})


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id a cursor points after; a 400 problem when it is not one of ours."""
    try:
        return uuid.UUID(unpack_cursor(cursor)["after"])
    except (
        ValueError,
        KeyError,
        TypeError,
        binascii.Error,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as exc:
        raise Problem(
            400,
            "the cursor is malformed; use next_cursor from a previous page",
            slug="invalid-cursor",
        ) from exc


def check_limit(limit: int) -> int:
    """``limit`` if it is within 1..200, else a 400 problem."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, f"limit must be between 1 and {MAX_LIMIT}", slug="invalid-limit")
    return limit


def paginate(
    session: Session,
    stmt: Select[Any],
    id_column: Any,
    *,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Any], T],
) -> Page[T]:
    """Run ``stmt`` by ``id_column`` from ``cursor``; one row more tells if a page follows."""
    limit = check_limit(limit)
    if cursor:
        stmt = stmt.where(id_column > decode_cursor(cursor))
    rows: Sequence[Any] = session.scalars(stmt.order_by(id_column).limit(limit + 1)).all()
    items = [to_item(r) for r in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)
