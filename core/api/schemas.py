"""Shared schema building blocks for the HTTP edge (msgspec)."""

from __future__ import annotations

from typing import Annotated

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Username = Annotated[str, msgspec.Meta(min_length=2, max_length=64, pattern=r"^[a-z0-9_.\-]+$")]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^\+?[0-9\- ]+$")]
Password = Annotated[str, msgspec.Meta(min_length=12, max_length=256)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused (400), not silently ignored."""


class Output(msgspec.Struct, kw_only=True):
    """Base of response bodies."""
