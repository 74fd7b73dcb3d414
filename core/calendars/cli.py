"""``insurdesk calendar``: load State Council holiday notices and inspect the calendar."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from core.settings import load_settings

cli = typer.Typer(no_args_is_help=True, help="The Chinese holiday calendar behind deadlines.")


@cli.command("load")
def load(
    file: Annotated[
        Path,
        typer.Argument(
            help="A schedule YAML transcribed from the notice (format: docs/deadlines.md)."
        ),
    ],
) -> None:
    """Validate and load one year's holiday schedule; provisional deadlines use it from now on."""
    from core.calendars.services import load_calendar_file
    from core.db import Database
    from core.deadlines.schedule_file import ScheduleFileError

    if not file.is_file():
        typer.echo(f"error: {file}: no such file", err=True)
        raise typer.Exit(2)
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    from core.cases.flows import recompute_provisional_clocks

    try:
        schedule, changed = load_calendar_file(db, file, actor=f"cli:{getpass.getuser()}")
        report = recompute_provisional_clocks(db)
    except ScheduleFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    if changed:
        typer.echo(
            f"{schedule.year}: loaded {len(schedule.holidays)} days off and "
            f"{len(schedule.workdays)} adjusted working days"
        )
    else:
        typer.echo(f"{schedule.year}: already loaded, no changes")
    typer.echo(
        f"provisional clocks: {report.checked} recomputed, {report.moved} moved "
        f"(timeline events written), {report.still_provisional} still provisional"
    )


@cli.command("show")
def show(year: Annotated[int, typer.Argument(min=2004, max=2100)]) -> None:
    """Print a year's schedule as JSON and where it comes from (official, loaded, provisional)."""
    from core.calendars.services import tenant_calendar
    from core.db import Database
    from core.deadlines import dump_schedule

    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    try:
        with db.platform_session() as session:
            calendar = tenant_calendar(session)
    finally:
        db.dispose()
    schedule = calendar.schedule_for(year)
    document = dump_schedule(schedule)
    document["source"] = schedule.source
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
