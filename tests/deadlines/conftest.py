"""Shared helpers for the deadline engine tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from core.deadlines import DEFAULT_TZ, TenantCalendar

DATA = Path(__file__).parent / "data"


def at(text: str) -> dt.datetime:
    """``"2025-09-30 10:00"`` as an aware datetime in Asia/Shanghai."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=DEFAULT_TZ)


def day(text: str) -> dt.date:
    """``"2025-10-15"`` as a date."""
    return dt.date.fromisoformat(text)


@pytest.fixture
def calendar() -> TenantCalendar:
    """The national calendar in Asia/Shanghai, no tenant overrides, no loaded years."""
    return TenantCalendar()
