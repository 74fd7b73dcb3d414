"""``insurdesk audit``: check a tenant's audit chain, show its newest entries.

``verify`` exits 0 when the chain is whole, 1 when it is broken (naming the first broken
entry), 2 when the tenant does not exist.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.models import AuditEntry
from core.audit.services import verify as verify_chain
from core.db import Database
from core.models import import_all_models
from core.settings import load_settings
from core.tenancy.models import Tenant

cli = typer.Typer(
    name="audit",
    no_args_is_help=True,
    add_completion=False,
    help="The tenant audit log: a hash chain per tenant (docs/privacy.md).",
)


def _open(slug: str) -> tuple[Database, uuid.UUID]:
    import_all_models()
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    with Session(db.engine) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
    if tenant_id is None:
        db.dispose()
        typer.echo(f"error: no tenant {slug!r}", err=True)
        raise typer.Exit(2)
    return db, tenant_id


@cli.command("verify")
def verify(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant's slug.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recompute every entry's hash in order and check the links, the sequence and the head.

    Exits 1 and names the first broken entry when an entry was edited or deleted."""
    db, tenant_id = _open(tenant)
    try:
        with db.tenant_session(tenant_id) as session:
            result = verify_chain(session)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps({"tenant": tenant, **result.as_dict()}, ensure_ascii=False))
    elif result.ok:
        typer.echo(f"tenant {tenant}: audit chain intact, {result.checked} entries")
    else:
        assert result.first_broken is not None
        broken = result.first_broken
        typer.echo(
            f"tenant {tenant}: audit chain BROKEN at entry {broken.seq} ({broken.reason}): "
            f"{broken.detail}; {result.checked} entries before it are intact",
        )
    if not result.ok:
        raise typer.Exit(1)


@cli.command("tail")
def tail(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant's slug.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 20,
) -> None:
    """Print the newest entries (seq, time, actor, action, target)."""
    db, tenant_id = _open(tenant)
    try:
        with db.tenant_session(tenant_id) as session:
            rows = session.scalars(
                select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
            ).all()
            for e in reversed(rows):
                target = f"{e.target_type}:{e.target_id}" if e.target_type else "-"
                typer.echo(f"{e.seq:>8} {e.at.isoformat()} {e.actor:<32} {e.action:<28} {target}")
    finally:
        db.dispose()
