"""Loading holiday schedules into the platform and building tenant calendars from them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.calendars.models import CalendarYear
from core.db import Database, utcnow
from core.deadlines import TenantCalendar, YearSchedule, dump_schedule, load_schedule
from core.deadlines.schedule_file import schedule_from_dict


def loaded_years(session: Session) -> dict[int, YearSchedule]:
    """Every loaded year's schedule, by year."""
    rows = session.scalars(select(CalendarYear)).all()
    return {
        row.year: schedule_from_dict(row.schedule, filename=f"calendar_years[{row.year}]")
        for row in rows
    }


def load_calendar_file(db: Database, path: Path, *, actor: str) -> tuple[YearSchedule, bool]:
    """Validate ``path`` and store its year (platform path); returns (schedule, changed).

    :raises core.deadlines.schedule_file.ScheduleFileError: naming the file, the path in the
        document and the reason, when the file is not a valid schedule.
    """
    from tenants.provisioning import record_platform_action

    schedule = load_schedule(path)
    document = dump_schedule(schedule)
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    with db.platform_transaction() as session:
        row = session.get(CalendarYear, schedule.year)
        if row is not None and row.digest == digest:
            return schedule, False
        if row is None:
            row = CalendarYear(
                year=schedule.year,
                schedule=document,
                digest=digest,
                notice=schedule.notice,
                loaded_by=actor,
            )
            session.add(row)
        else:
            row.schedule, row.digest, row.notice = document, digest, schedule.notice
            row.loaded_at, row.loaded_by = utcnow(), actor
        record_platform_action(
            session,
            actor=actor,
            action="calendar.load",
            tenant_id=None,
            year=schedule.year,
            digest=digest,
            file=str(path),
        )
    return schedule, True


def tenant_calendar(session: Session, time_zone: str = "Asia/Shanghai") -> TenantCalendar:
    """A calendar with every loaded year, in ``time_zone`` (tenant overrides come from plugins)."""
    return TenantCalendar(loaded_years(session), ZoneInfo(time_zone))
