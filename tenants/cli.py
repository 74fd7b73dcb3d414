"""``insurdesk tenants``: apply declarative tenant manifests and list tenants.

Exit codes: 0 done (changes or not); 2 a bad manifest, an entry a service refused (e.g. plugin
settings) or a demo manifest with production settings — that manifest's tenant is unchanged;
1 the database refused a write or could not be reached.
"""

from __future__ import annotations

import getpass
import json
import unicodedata
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from core.db import Database
from core.settings import load_settings
from tenants.apply import ApplyError, apply_manifest
from tenants.integrations import plugin_registry
from tenants.manifests import load_manifests
from tenants.overview import tenant_overview
from tenants.schema import ManifestError

cli = typer.Typer(
    name="tenants",
    no_args_is_help=True,
    add_completion=False,
    help="Tenants: apply declarative manifests (docs/manifests.md) and list tenants.",
)


def _database() -> Database:
    settings = load_settings()
    return Database(settings.effective_database_url, settings.effective_admin_database_url)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@cli.command("apply")
def apply_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Manifest files, or directories of *.yaml manifests.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes, write nothing.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every change of a new tenant too.")
    ] = False,
) -> None:
    """Create or update tenants from manifests, idempotently.

    Every manifest is validated before anything is written; each tenant is applied in one
    transaction. Nothing absent from a manifest is deleted (it is reported as kept).
    """
    settings = load_settings()
    try:
        manifests = load_manifests(paths)
    except ManifestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if settings.is_production:
        demo = [m.source for m in manifests if m.demo]
        if demo:
            typer.echo(
                f"demo manifests are refused with production settings: {', '.join(demo)}", err=True
            )
            raise typer.Exit(2)
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    registry = plugin_registry()[0] if any(m.plugins for m in manifests) else None
    try:
        for manifest in manifests:
            report = apply_manifest(
                db, manifest, dry_run=dry_run, actor=_actor(), plugin_registry=registry
            )
            for line in report.lines(verbose=verbose):
                typer.echo(line)
    except ManifestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except ApplyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    except SQLAlchemyError as exc:
        typer.echo(f"database error (is it migrated? `insurdesk migrate`): {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
        if registry is not None:
            registry.close()


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell + " " * (w - _width(cell)) for cell, w in zip(row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]


@cli.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List tenants with their status and unit, people and case counts."""
    db = _database()
    try:
        rows = tenant_overview(db)
    except SQLAlchemyError as exc:
        typer.echo(f"database error (is it migrated? `insurdesk migrate`): {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows], ensure_ascii=False, indent=2))
        return
    header = ["SLUG", "NAME", "STATUS", "UNITS", "PEOPLE", "CASES"]
    body = [[r.slug, r.name, r.status, str(r.units), str(r.people), str(r.cases)] for r in rows]
    for line in _table(header, body):
        typer.echo(line)
