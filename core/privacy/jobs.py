"""Scheduler jobs of the privacy domain (registered in :func:`core.scheduler.jobs.default_jobs`).

* ``privacy_reencrypt`` — finds, across tenants (one query per encrypted table on the platform
  path), rows still encrypted with a retired data-key version and re-encrypts them in batches
  per tenant, then erases the retired keys nobody uses any more.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select

from core.audit import AuditActor
from core.db import Database
from core.privacy.models import TenantKey
from core.privacy.rotation import reencrypt_all, sealed_models
from core.scheduler.jobs import JobContext

log = structlog.get_logger("insurdesk.privacy")

REENCRYPT_BATCH = 500
REENCRYPT_MAX_BATCHES = 20
"""Per tenant and run: at most 10,000 rows, so one tenant cannot hold the job for long."""


def tenants_to_reencrypt(db: Database) -> list[uuid.UUID]:
    """Tenants with rows on an older data-key version than their active one."""
    found: set[uuid.UUID] = set()
    with db.platform_session() as session:
        for model in sealed_models():
            rows = session.scalars(
                select(model.tenant_id)
                .join(
                    TenantKey,
                    (TenantKey.tenant_id == model.tenant_id)
                    & (TenantKey.purpose == "data")
                    & (TenantKey.status == "active"),
                )
                .where(model.key_version > 0, model.key_version < TenantKey.version)
                .distinct()
            )
            found.update(rows)
    return sorted(found)


def reencrypt_sweep(ctx: JobContext) -> None:
    """The ``privacy_reencrypt`` job body."""
    db = ctx.db
    actor = AuditActor.system("privacy_reencrypt")
    for tenant_id in tenants_to_reencrypt(db):
        report = reencrypt_all(
            db,
            tenant_id,
            actor=actor,
            batch=REENCRYPT_BATCH,
            max_batches=REENCRYPT_MAX_BATCHES,
        )
        log.info(
            "privacy_reencrypted",
            tenant=str(tenant_id),
            rows=report.reencrypted,
            left=sum(report.left.values()),
            destroyed=report.destroyed,
        )


RETENTION_BATCH = 200
RETENTION_MAX_BATCHES = 50
"""Per tenant and run: at most 10,000 rows destroyed; the rest waits for the next day."""


def retention_sweep(ctx: JobContext) -> None:
    """The ``privacy_retention`` job body: every active tenant, every data class."""
    from core.privacy.retention import run_retention
    from core.tenancy.models import Tenant

    with ctx.db.platform_session() as session:
        tenant_ids = list(session.scalars(select(Tenant.id).where(Tenant.status == "active")))
    actor = AuditActor.system("privacy_retention")
    for tenant_id in tenant_ids:
        report = run_retention(
            ctx.db,
            tenant_id,
            actor=actor,
            now=ctx.now,
            batch=RETENTION_BATCH,
            max_batches=RETENTION_MAX_BATCHES,
        )
        if report.batches:
            log.info(
                "privacy_retention",
                tenant=str(tenant_id),
                run=report.run_id,
                destroyed=report.destroyed,
                held=report.held,
            )
