"""``insurdesk plugins``: the installed plugins, and a tenant's effective settings at a unit."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.orgs.services import ancestors, get_unit_by_code
from core.plugins.freeze import thaw
from core.plugins.registry import build_registry
from core.plugins.resolution import effective_plugins, load_tenant_config
from core.plugins.services import mask
from core.settings import load_settings
from core.tenancy.models import Tenant

cli = typer.Typer(
    name="plugins",
    no_args_is_help=True,
    help="Installed plugins (built-ins and insurdesk.plugins entry points) and the settings "
    "tenants gave them at their organization units.",
)


@cli.command("list")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the plugins installed in this environment, in calling order."""
    registry = build_registry()
    rows = []
    for p in registry.plugins.values():
        state = "always on" if p.always_on else "on by default" if p.on_by_default else "off"
        rows.append(
            {
                "name": p.name,
                "version": p.version,
                "kind": p.info.kind,
                "default": state,
                "title_zh": p.info.title_zh,
                "title_en": p.info.title_en,
                "source": "built-in" if p.builtin else (p.distribution or "entry point"),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        typer.echo(
            f"{r['name']:<18} {r['version']:<10} {r['kind']:<10} {r['default']:<14} "
            f"{r['title_en']} / {r['title_zh']}  [{r['source']}]"
        )


@cli.command("effective")
def effective(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant's slug.")],
    unit: Annotated[str, typer.Option("--unit", help="The organization unit's code.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every plugin at a unit: enabled or not (and where that was decided), its settings
    merged along the unit's ancestors, and the unit each value comes from."""
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    try:
        with Session(bind=db.engine) as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == tenant))
        if tenant_id is None:
            typer.echo(f"no tenant {tenant!r}", err=True)
            raise typer.Exit(2)
        registry = build_registry()
        with db.tenant_session(tenant_id) as session:
            found = get_unit_by_code(session, unit)
            if found is None:
                typer.echo(f"tenant {tenant} has no unit {unit!r}", err=True)
                raise typer.Exit(2)
            codes = {str(u.id): u.code for u in [*ancestors(session, found), found]}
            config = load_tenant_config(session, tenant_id)
        result: list[dict[str, Any]] = []
        for e in effective_plugins(registry, config, found.path):
            result.append(
                {
                    "plugin": e.name,
                    "enabled": e.enabled,
                    "enabled_by": codes.get(e.enabled_by or "", e.enabled_by),
                    "settings": mask(registry.plugins[e.name], e.settings),
                    "provenance": {k: codes.get(v, v) for k, v in e.provenance.items()},
                }
            )
    finally:
        db.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {"tenant": tenant, "unit": unit, "revision": config.revision, "plugins": result},
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    typer.echo(f"tenant {tenant}, unit {unit}, configuration revision {config.revision}")
    for r in result:
        flag = "on " if r["enabled"] else "off"
        typer.echo(f"  [{flag}] {r['plugin']}  (decided by: {r['enabled_by'] or 'nobody'})")
        for key, value in r["settings"].items():
            shown = json.dumps(thaw(value), ensure_ascii=False)
            typer.echo(f"        {key} = {shown}   <- {r['provenance'][key]}")
