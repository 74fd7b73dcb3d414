"""``insurdesk privacy``: master key, tenant keys and their rotation (more commands below).

Secrets are never taken from flags: the master key comes from ``INSURDESK_MASTER_KEY`` (or
``_FILE``); ``master-key`` only prints a new one for the operator to store.
"""

from __future__ import annotations

import getpass
import json
import uuid
from typing import Annotated

import typer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit import AuditActor
from core.cases.storage import AttachmentStorage, storage_for
from core.db import Database
from core.models import import_all_models
from core.privacy.keys import new_master_key
from core.privacy.models import TenantKey
from core.privacy.rotation import (
    DEFAULT_BATCH,
    pending_rows,
    reencrypt_all,
    rotate_and_reencrypt,
)
from core.settings import load_settings
from core.tenancy.models import Tenant

cli = typer.Typer(
    name="privacy",
    no_args_is_help=True,
    add_completion=False,
    help="Customer-information protection: encryption keys and their rotation, the privacy "
    "report (docs/privacy.md).",
)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant's slug.")]


def _actor() -> AuditActor:
    try:
        return AuditActor.platform(f"cli:{getpass.getuser()}")
    except (KeyError, OSError):
        return AuditActor.platform("cli")


def _database() -> Database:
    import_all_models()
    settings = load_settings()
    return Database(settings.effective_database_url, settings.effective_admin_database_url)


def _storage() -> AttachmentStorage:
    """The attachment store of the environment's settings (INSURDESK_ATTACHMENT_STORAGE)."""
    return storage_for(load_settings())


def _tenant(db: Database, slug: str) -> uuid.UUID:
    with Session(db.engine) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
    if tenant_id is None:
        typer.echo(f"error: no tenant {slug!r}", err=True)
        raise typer.Exit(2)
    return tenant_id


@cli.command("master-key")
def master_key() -> None:
    """Print a new random master key (base64) for INSURDESK_MASTER_KEY or a key file.

    To change the master key of a running deployment: set INSURDESK_MASTER_KEY to
    "<new>,<old>" (newest first) everywhere, run `insurdesk privacy rewrap` (or let the
    privacy_reencrypt job do it), then remove the old key."""
    typer.echo(new_master_key())


@cli.command("rewrap")
def rewrap_keys() -> None:
    """Wrap every stored key (each tenant's data and index keys, the OAuth signing keys) that
    an older master key wrapped with the current, first, master key of INSURDESK_MASTER_KEY.
    Nothing is re-encrypted; afterwards the old master key can be removed."""
    from core.auth.keys import rewrap_signing_keys
    from core.privacy.keys import key_manager_of
    from core.privacy.rotation import rewrap_tenant

    db = _database()
    try:
        actor = _actor()
        signing = rewrap_signing_keys(db, actor=actor.label)
        with Session(db.engine) as session:
            tenant_ids = list(session.scalars(select(Tenant.id)))
        total = 0
        for tenant_id in tenant_ids:
            with db.tenant_transaction(tenant_id) as session:
                total += rewrap_tenant(session, tenant_id, actor=actor)
        with db.platform_session() as session:
            left = session.scalar(
                select(func.count())
                .select_from(TenantKey)
                .where(
                    TenantKey.wrapped.isnot(None),
                    TenantKey.master_key_id != key_manager_of(db.admin_engine).key_id,
                )
            )
    finally:
        db.dispose()
    typer.echo(
        f"re-wrapped {total} tenant keys and {len(signing)} signing keys; "
        f"left on older master keys: {left or 0}"
    )


@cli.command("keys")
def keys(
    tenant: TenantOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tenant's key versions (never the keys) and the rows still on old versions
    (``case_attachments``: files on an old version or still in clear)."""
    db = _database()
    try:
        tenant_id = _tenant(db, tenant)
        with db.tenant_session(tenant_id) as session:
            rows = session.scalars(
                select(TenantKey).order_by(TenantKey.purpose, TenantKey.version)
            ).all()
            listed = [
                {
                    "purpose": k.purpose,
                    "version": k.version,
                    "status": k.status,
                    "master_key_id": k.master_key_id,
                    "created_at": k.created_at.isoformat(),
                    "retired_at": k.retired_at.isoformat() if k.retired_at else None,
                }
                for k in rows
            ]
            left = pending_rows(session, tenant_id) if rows else {}
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps({"tenant": tenant, "keys": listed, "pending_rows": left}))
        return
    for k in listed:
        typer.echo(f"{k['purpose']:<6} v{k['version']:<3} {k['status']:<10} {k['master_key_id']}")
    typer.echo(f"rows on retired versions: {sum(left.values())} {left}")


def _erased(destroyed: list[str]) -> str:
    return ", ".join(d.replace(":", " v") for d in destroyed) or "none"


def _failed(failed: dict[str, str]) -> str:
    if not failed:
        return ""
    listed = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())[:10])
    return f"\nattachment files left as they are ({len(failed)}): {listed}"


@cli.command("rotate-keys")
def rotate_keys(
    tenant: TenantOption,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = (
        DEFAULT_BATCH
    ),
    reencrypt: Annotated[
        bool,
        typer.Option(
            "--reencrypt/--no-reencrypt",
            help="Re-encrypt now (default), or leave it to the privacy_reencrypt job.",
        ),
    ] = True,
    index: Annotated[
        bool,
        typer.Option(
            "--index",
            help="Rotate the blind-index key instead of the data key (every blind index is "
            "recomputed; searches find both versions meanwhile).",
        ),
    ] = False,
) -> None:
    """Rotate the tenant's data key (or index key) without downtime: new writes use the new
    key at once, old rows (customers, cases, timelines, request notes) and attachment files
    are re-encrypted or re-indexed in batches while the service runs, then the old key is
    erased."""
    purpose = "index" if index else "data"
    db = _database()
    try:
        tenant_id = _tenant(db, tenant)
        actor = _actor()
        if reencrypt:
            report = rotate_and_reencrypt(
                db, tenant_id, actor=actor, batch=batch, purpose=purpose, storage=_storage()
            )
        else:
            from core.privacy.rotation import rotate

            with db.tenant_transaction(tenant_id) as session:
                old, new = rotate(session, tenant_id, actor=actor, purpose=purpose)
            typer.echo(f"tenant {tenant}: {purpose} key v{old} retired, v{new} active")
            return
    finally:
        db.dispose()
    typer.echo(
        f"tenant {tenant}: {purpose} key v{report.old_version} retired, v{report.new_version} "
        f"active; {report.reencrypted} rows rewritten and {report.attachments} attachment "
        f"files re-encrypted in {report.batches} batches; erased: {_erased(report.destroyed)}"
        + _failed(report.attachments_failed)
    )


@cli.command("reencrypt")
def reencrypt(
    tenant: TenantOption,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = (
        DEFAULT_BATCH
    ),
) -> None:
    """Finish a rotation: re-encrypt the rows and attachment files still on retired versions
    (and the files still in clear), erase unused keys."""
    db = _database()
    try:
        report = reencrypt_all(
            db, _tenant(db, tenant), actor=_actor(), batch=batch, storage=_storage()
        )
    finally:
        db.dispose()
    typer.echo(
        f"tenant {tenant}: {report.reencrypted} rows and {report.attachments} attachment files "
        f"re-encrypted; erased: {_erased(report.destroyed)}" + _failed(report.attachments_failed)
    )


@cli.command("report")
def report(
    tenant: TenantOption,
    days: Annotated[int, typer.Option(min=1, max=3660, help="The period: the last N days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The security-assessment report: where personal data is stored and how, who can read it
    in clear, unmasked reads and exports in the period, sharing agreements and their expiry,
    data-subject requests, retention backlog, legal holds and keys."""
    from datetime import timedelta

    from core.db import utcnow
    from core.privacy.report import privacy_report

    db = _database()
    try:
        tenant_id = _tenant(db, tenant)
        now = utcnow()
        with db.tenant_session(tenant_id) as session:
            found = privacy_report(
                session, tenant_id, since=now - timedelta(days=days), until=now, now=now
            )
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"Privacy report — tenant {found['tenant']}, {found['period']['since'][:10]} .. "
        f"{found['period']['until'][:10]}"
    )
    typer.echo("\nWhere personal data is stored:")
    for place in found["storage"]:
        fields = place["fields"] if isinstance(place["fields"], str) else ", ".join(place["fields"])
        typer.echo(f"  {place['table']:<20} {fields}\n  {'':<20} -> {place['protection']}")
    readers = found["clear_readers"]
    typer.echo(
        f"\nWho can read in clear ({readers['permission']}): roles "
        f"{', '.join(readers['roles']) or '-'}; {len(readers['people'])} people; clients: "
        f"{', '.join(readers['clients']) or '-'}"
    )
    for p in readers["people"]:
        typer.echo(f"  {p['username']:<24} {p['role']:<20} at {p['unit']}")
    access = found["access"]
    typer.echo(
        f"\nUnmasked reads: {access['unmasked_reads']} of "
        f"{access['customers_read_in_clear']} customers; by purpose "
        f"{access['by_purpose']}; exports {access['exports']}"
    )
    typer.echo("\nSharing agreements:")
    for a in found["sharing_agreements"]:
        typer.echo(
            f"  {a['reference']:<16} {a['third_party']:<24} expires {a['expires_on']} "
            f"[{a['status']}] fields {', '.join(a['fields'])}"
        )
    r = found["requests"]
    typer.echo(
        f"\nData-subject requests: {r['open']} open ({r['overdue']} overdue), "
        f"{r['completed_on_time']} answered on time, {r['completed_late']} late"
    )
    typer.echo(
        "\nRetention backlog: "
        + ", ".join(
            f"{k} {v['due']} due ({v['held']} held)" for k, v in found["retention_backlog"].items()
        )
    )
    typer.echo(f"Legal holds: {found['legal_holds']}")
    typer.echo(
        "Keys: " + ", ".join(f"{k['purpose']} v{k['version']} {k['status']}" for k in found["keys"])
    )


@cli.command("retention")
def retention(
    tenant: TenantOption,
    run: Annotated[
        bool, typer.Option("--run/--dry-run", help="Destroy now, or only show what is due.")
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per batch.")] = 200,
) -> None:
    """Show the retention backlog per data class, or (``--run``) destroy what is due in
    batches, with destruction records, skipping held data."""
    from core.privacy.retention import backlog, run_retention

    db = _database()
    try:
        tenant_id = _tenant(db, tenant)
        if run:
            done = run_retention(db, tenant_id, actor=_actor(), batch=batch, storage=_storage())
            typer.echo(
                f"run {done.run_id}: destroyed {done.destroyed}, held {done.held}, "
                f"{done.batches} batches"
            )
            return
        with db.tenant_session(tenant_id) as session:
            typer.echo(json.dumps(backlog(session, tenant_id), ensure_ascii=False))
    finally:
        db.dispose()
