"""The ``insurdesk`` command line: one Typer app, with a sub-command group per domain.

Domain groups live beside their code (``tenants/cli.py``, ``core/deadlines/cli.py`` ...) and
are added here by :func:`build_cli`. Secrets are read from the environment, never from flags.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Annotated

import typer

from core.settings import load_settings

CLI_GROUPS: tuple[tuple[str, str], ...] = (
    ("tenants", "tenants.cli"),
    ("deadlines", "core.deadlines.cli"),
    ("calendar", "core.calendars.cli"),
    ("plugins", "core.plugins.cli"),
    ("clients", "core.auth.cli"),
    ("worker", "core.outbox.cli"),
    ("scheduler", "core.scheduler.cli"),
    ("audit", "core.audit.cli"),
    ("privacy", "core.privacy.cli"),
)
"""(group name, module with a ``cli`` Typer app): missing modules are skipped."""


def _serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (INSURDESK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (INSURDESK_PORT).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Migrate and load the demo tenants first.")
    ] = False,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
) -> None:
    """Run the web server (and, on the embedded default, the in-process worker)."""
    import uvicorn

    settings = load_settings()
    if demo:
        if settings.is_production:
            raise typer.BadParameter("--demo is refused with production settings")
        _migrate_now()
        from tenants.demo import apply_demo_tenants

        for line in apply_demo_tenants(settings):
            typer.echo(line)
    from core.api.http_protocol import server_options

    uvicorn.run(
        "core.app:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        log_level=settings.log_level.lower(),
        **server_options(),
    )


def _migrate_now() -> None:
    from core.migrate import upgrade

    settings = load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_admin_database_url, settings.effective_database_url)


def _migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (Alembic) and grant the application role on PostgreSQL."""
    from core.migrate import upgrade

    settings = load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_admin_database_url, settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


def build_cli() -> typer.Typer:
    """The root Typer app with every available domain group."""
    app = typer.Typer(
        name="insurdesk",
        no_args_is_help=True,
        add_completion=False,
        help="insurdesk: customer-service management for insurers.",
    )
    app.command("serve")(_serve)
    app.command("migrate")(_migrate)
    from core.auth.login import login

    app.command("login")(login)
    for name, module_name in CLI_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        app.add_typer(module.cli, name=name)
    return app


def main() -> None:
    """Console-script entry point."""
    # authlib announces a future rename of its httpx integration on import; not for operators.
    warnings.filterwarnings("ignore", message=".*httpx module is deprecated.*")
    try:
        build_cli()()
    except KeyboardInterrupt:
        sys.exit(130)
