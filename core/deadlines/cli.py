"""``insurdesk deadlines``: ask the deadline engine when something is due."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from core.settings import load_settings

cli = typer.Typer(
    no_args_is_help=True,
    help="Deadlines on the Chinese working-day calendar, computed by the same engine as cases.",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _parse_start(text: str, tz: ZoneInfo) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--start {text!r} is not an ISO date or datetime (e.g. 2026-09-30T10:00+08:00)")
        raise
    return value if value.tzinfo else value.replace(tzinfo=tz)


@cli.command("due")
def due(
    start: Annotated[
        str,
        typer.Option(
            help="When the period starts: ISO date/datetime; "
            "without an offset it is in the tenant's zone."
        ),
    ],
    days: Annotated[int | None, typer.Option(help="Natural days (日).", min=0, max=3650)] = None,
    working_days: Annotated[
        int | None, typer.Option("--working-days", help="Working days (工作日).", min=0, max=1000)
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant slug: use its time zone (default Asia/Shanghai).")
    ] = None,
    close_of_business: Annotated[
        bool, typer.Option(help="End at close of business instead of 24:00 (needs business hours).")
    ] = False,
) -> None:
    """Print one JSON object: when a period of --days or --working-days from --start is due.

    ``due`` is the exclusive end instant (the last day ends at 24:00) in the tenant's zone;
    ``provisional`` is true when a year without a published holiday notice was consulted.
    """
    if (days is None) == (working_days is None):
        _fail("give exactly one of --days and --working-days")
    from core.calendars.services import tenant_calendar
    from core.db import Database
    from core.deadlines import due_report
    from tenants.provisioning import get_tenant_by_slug

    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    try:
        with db.platform_session() as session:
            zone = "Asia/Shanghai"
            if tenant:
                found = get_tenant_by_slug(session, tenant)
                if found is None:
                    _fail(f"no tenant {tenant!r}")
                    return
                zone = found.time_zone
            calendar = tenant_calendar(session, zone)
    finally:
        db.dispose()
    begin = _parse_start(start, calendar.tz)
    report = due_report(
        begin,
        days=days,
        working_days=working_days,
        calendar=calendar,
        ends_at="close_of_business" if close_of_business else "midnight",
    )
    if tenant:
        report["tenant"] = tenant
    typer.echo(json.dumps(report, ensure_ascii=False))
