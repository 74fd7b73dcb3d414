"""Key rotation without downtime.

1. :func:`rotate` makes a new data-key version active (new writes use it at once; the old
   version is ``retired`` and still decrypts).
2. :func:`reencrypt_batch` re-encrypts, in batches, rows still on an older version (rows being
   written concurrently are skipped on PostgreSQL, ``FOR UPDATE SKIP LOCKED``, and picked up by
   the next batch); the ``privacy_reencrypt`` scheduler job and ``insurdesk privacy rotate-keys``
   call it until nothing is left.
3. :func:`destroy_unused` erases retired versions that no row uses any more.

Each step is recorded in the tenant audit log (``privacy.key_rotated``,
``privacy.key_destroyed``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from core.audit import AuditActor, record
from core.db import Base, Database
from core.privacy.crypto import DATA, keyring_of
from core.privacy.fields import reseal
from core.privacy.models import TenantKey

DEFAULT_BATCH = 500


def sealed_models() -> list[Any]:
    """Every model with encrypted fields (each has a ``key_version`` column)."""
    return sorted(
        (m.class_ for m in Base.registry.mappers if getattr(m.class_, "__sealed_fields__", None)),
        key=lambda cls: cls.__tablename__,
    )


def active_version(session: Session, tenant_id: uuid.UUID) -> int:
    """The tenant's active data-key version (keys are created if missing)."""
    return keyring_of(session).active_version(session, tenant_id)


def rotate(session: Session, tenant_id: uuid.UUID, *, actor: AuditActor) -> tuple[int, int]:
    """Start using a new data key version; returns ``(old, new)``."""
    old, new = keyring_of(session).rotate(session, tenant_id)
    record(
        session,
        action="privacy.key_rotated",
        actor=actor,
        target=("tenant_key", f"data:{new}"),
        details={"purpose": DATA, "retired_version": old, "active_version": new},
        tenant_id=tenant_id,
    )
    return old, new


def pending_rows(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    """Per table, how many rows are encrypted with an older version than the active one."""
    version = active_version(session, tenant_id)
    counts = {}
    for model in sealed_models():
        counts[model.__tablename__] = int(
            session.scalar(
                select(func.count())
                .select_from(model)
                .where(
                    model.tenant_id == tenant_id,
                    model.key_version > 0,
                    model.key_version < version,
                )
            )
            or 0
        )
    return counts


def reencrypt_batch(session: Session, tenant_id: uuid.UUID, *, batch: int = DEFAULT_BATCH) -> int:
    """Re-encrypt up to ``batch`` rows on an older key version with the active one (in the
    caller's transaction); returns how many rows were re-encrypted."""
    version = active_version(session, tenant_id)
    done = 0
    for model in sealed_models():
        if done >= batch:
            break
        rows = session.scalars(
            select(model)
            .where(
                model.tenant_id == tenant_id,
                model.key_version > 0,
                model.key_version < version,
            )
            .order_by(model.id)
            .limit(batch - done)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            reseal(row)
            if hasattr(row, "updated_at"):  # same data: keep the ETag (timestamp) as it was
                flag_modified(row, "updated_at")
        done += len(rows)
    session.flush()
    return done


def destroy_unused(session: Session, tenant_id: uuid.UUID, *, actor: AuditActor) -> list[int]:
    """Erase retired data-key versions no row uses any more; returns the versions erased."""
    keyring = keyring_of(session)
    retired = session.scalars(
        select(TenantKey.version).where(
            TenantKey.tenant_id == tenant_id,
            TenantKey.purpose == DATA,
            TenantKey.status == "retired",
        )
    ).all()
    destroyed = []
    for version in retired:
        in_use = any(
            session.scalar(
                select(model.id)
                .where(model.tenant_id == tenant_id, model.key_version == version)
                .limit(1)
            )
            is not None
            for model in sealed_models()
        )
        if in_use:
            continue
        keyring.destroy(session, tenant_id, version)
        record(
            session,
            action="privacy.key_destroyed",
            actor=actor,
            target=("tenant_key", f"data:{version}"),
            details={"purpose": DATA, "version": version, "reason": "no row uses it"},
            tenant_id=tenant_id,
        )
        destroyed.append(version)
    return destroyed


@dataclass
class RotationReport:
    """What a rotation run did."""

    old_version: int | None = None
    new_version: int | None = None
    reencrypted: int = 0
    batches: int = 0
    destroyed: list[int] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)


def reencrypt_all(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    actor: AuditActor,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
    report: RotationReport | None = None,
) -> RotationReport:
    """Re-encrypt the tenant's old rows in batches, one transaction each, then erase the
    retired keys nobody uses. Other writers go on meanwhile."""
    report = report or RotationReport()
    while max_batches is None or report.batches < max_batches:
        with db.tenant_transaction(tenant_id) as session:
            n = reencrypt_batch(session, tenant_id, batch=batch)
        if n == 0:
            break
        report.reencrypted += n
        report.batches += 1
    with db.tenant_transaction(tenant_id) as session:
        report.left = pending_rows(session, tenant_id)
        if not any(report.left.values()):
            report.destroyed = destroy_unused(session, tenant_id, actor=actor)
    return report


def rotate_and_reencrypt(
    db: Database, tenant_id: uuid.UUID, *, actor: AuditActor, batch: int = DEFAULT_BATCH
) -> RotationReport:
    """Rotate the tenant's data key, re-encrypt every row, erase the old key."""
    with db.tenant_transaction(tenant_id) as session:
        old, new = rotate(session, tenant_id, actor=actor)
    return reencrypt_all(db, tenant_id, actor=actor, batch=batch, report=RotationReport(old, new))
