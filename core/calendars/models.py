"""Loaded holiday schedules: the State Council notices a platform admin transcribed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow


class CalendarYear(Base):
    """One year's official schedule, loaded with ``insurdesk calendar load`` (platform table)."""

    __tablename__ = "calendar_years"

    year: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    notice: Mapped[str] = mapped_column(String(500), default="")
    digest: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    loaded_by: Mapped[str] = mapped_column(String(200))
