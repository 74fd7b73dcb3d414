"""Scheduler jobs of the privacy domain (registered in :func:`core.scheduler.jobs.default_jobs`).

* ``privacy_reencrypt`` — key rotation in the background: re-wraps the OAuth signing keys and
  every tenant's keys that an older master key wrapped (after ``INSURDESK_MASTER_KEY`` put a
  new key first), finds across tenants (one query per encrypted table on the platform path)
  rows still on a retired data-key or index-key version and re-encrypts / re-indexes them in
  batches per tenant, then attachment files on a retired version or still in clear (in the
  attachment store the settings choose), then erases the retired keys nobody uses any more.
* ``privacy_retention`` — destroys what is past its retention period (see
  :mod:`core.privacy.retention`).
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.orm import aliased

from core.audit import AuditActor
from core.cases.models import Attachment
from core.db import Database
from core.privacy import files
from core.privacy.keys import key_manager_of
from core.privacy.models import TenantKey
from core.privacy.rotation import indexed_fields, reencrypt_all, sealed_models
from core.scheduler.jobs import JobContext

log = structlog.get_logger("insurdesk.privacy")

REENCRYPT_BATCH = 500
REENCRYPT_MAX_BATCHES = 20
"""Per tenant and run: at most 10,000 rows, so one tenant cannot hold the job for long."""


def tenants_to_reencrypt(db: Database) -> list[uuid.UUID]:
    """Tenants with key work left: rows on an older data-key or index-key version than the
    active one, attachment files in clear or on an older version, retired keys not erased
    yet, or keys wrapped by an older master key."""
    found: set[uuid.UUID] = set()
    current_master = key_manager_of(db.admin_engine).key_id
    with db.platform_session() as session:
        data = aliased(TenantKey)
        index = aliased(TenantKey)
        for model in sealed_models():
            table = model.__table__
            stmt = (
                select(table.c.tenant_id)
                .join(
                    data,
                    (data.tenant_id == table.c.tenant_id)
                    & (data.purpose == "data")
                    & (data.status == "active"),
                )
                .distinct()
            )
            stale = table.c.key_version < data.version
            if indexed_fields(model):
                stmt = stmt.join(
                    index,
                    (index.tenant_id == table.c.tenant_id)
                    & (index.purpose == "index")
                    & (index.status == "active"),
                )
                stale = stale | (table.c.index_version < index.version)
            found.update(session.scalars(stmt.where(table.c.key_version > 0, stale)))
        found.update(  # attachment files in clear or on an older data-key version
            session.scalars(
                select(Attachment.tenant_id)
                .outerjoin(
                    data,
                    (data.tenant_id == Attachment.tenant_id)
                    & (data.purpose == "data")
                    & (data.status == "active"),
                )
                .where(files.stale(data.version))
                .distinct()
            )
        )
        found.update(
            session.scalars(
                select(TenantKey.tenant_id)
                .where(
                    (TenantKey.status == "retired")
                    | (TenantKey.wrapped.isnot(None) & (TenantKey.master_key_id != current_master))
                )
                .distinct()
            )
        )
    return sorted(found)


def reencrypt_sweep(ctx: JobContext) -> None:
    """The ``privacy_reencrypt`` job body (attachment files only with settings: they name the
    attachment store)."""
    from core.auth.keys import rewrap_signing_keys
    from core.cases.storage import storage_for

    db = ctx.db
    storage = storage_for(ctx.settings) if ctx.settings is not None else None
    rewrap_signing_keys(db, actor="system:privacy_reencrypt")
    actor = AuditActor.system("privacy_reencrypt")
    for tenant_id in tenants_to_reencrypt(db):
        report = reencrypt_all(
            db,
            tenant_id,
            actor=actor,
            batch=REENCRYPT_BATCH,
            max_batches=REENCRYPT_MAX_BATCHES,
            storage=storage,
        )
        log.info(
            "privacy_reencrypted",
            tenant=str(tenant_id),
            rows=report.reencrypted,
            attachments=report.attachments,
            attachments_failed=len(report.attachments_failed),
            rewrapped=report.rewrapped,
            left=sum(report.left.values()),
            destroyed=report.destroyed,
        )


RETENTION_BATCH = 200
RETENTION_MAX_BATCHES = 50
"""Per tenant and run: at most 10,000 rows destroyed; the rest waits for the next day."""


def retention_sweep(ctx: JobContext) -> None:
    """The ``privacy_retention`` job body: every active tenant, every data class (attachment
    files only with settings: they name the attachment store)."""
    from core.cases.storage import storage_for
    from core.privacy.retention import run_retention
    from core.tenancy.models import Tenant

    with ctx.db.platform_session() as session:
        tenant_ids = list(session.scalars(select(Tenant.id).where(Tenant.status == "active")))
    actor = AuditActor.system("privacy_retention")
    storage = storage_for(ctx.settings) if ctx.settings is not None else None
    for tenant_id in tenant_ids:
        report = run_retention(
            ctx.db,
            tenant_id,
            actor=actor,
            now=ctx.now,
            batch=RETENTION_BATCH,
            max_batches=RETENTION_MAX_BATCHES,
            storage=storage,
        )
        if report.batches:
            log.info(
                "privacy_retention",
                tenant=str(tenant_id),
                run=report.run_id,
                destroyed=report.destroyed,
                held=report.held,
            )
