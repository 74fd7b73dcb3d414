"""Key rotation without downtime: data keys, blind-index keys and the master key.

1. :func:`rotate` makes a new version of a tenant's data key (or, with ``purpose="index"``,
   of its blind-index key) active: new writes use it at once, the old version is ``retired``
   and still decrypts (an index search compares the blind index of every version still in
   use).
2. :func:`reencrypt_batch` re-encrypts, in batches, the rows of every encrypted table
   (customers, cases, timeline events, request notes) still on an older data-key version, and
   recomputes the blind indexes of rows on an older index-key version. Rows being written
   concurrently are skipped on PostgreSQL (``FOR UPDATE SKIP LOCKED``) and picked up by the
   next batch. Each row is rewritten with one ``UPDATE`` of its ciphertext (and indexes): its
   ``updated_at`` and a case's version (the ETags) stay as they were, and no ORM event fires.
   The ``privacy_reencrypt`` scheduler job and ``insurdesk privacy rotate-keys`` call it until
   nothing is left. Attachment files (:mod:`core.privacy.files`) on an older version, or
   still in clear, are re-encrypted the same way in batches of their own when the caller
   passes the attachment store (:func:`reencrypt_all`).
3. :func:`destroy_unused` erases retired versions that no row and no attachment file uses any
   more.
4. :func:`rewrap_tenant` re-wraps a tenant's keys that an older **master** key wrapped with the
   current one (``INSURDESK_MASTER_KEY`` lists the new key first, then the old one); nothing is
   re-encrypted. The same job does it for every tenant, and for the OAuth signing keys.

Each step is recorded in the tenant audit log (``privacy.key_rotated``,
``privacy.key_destroyed``, ``privacy.key_rewrapped``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.audit import AuditActor, record
from core.cases.storage import AttachmentStorage
from core.db import Base, Database
from core.privacy import files
from core.privacy.crypto import DATA, INDEX, keyring_of
from core.privacy.fields import (
    MASK_VERSION,
    aad_for,
    decode_record,
    encode_record,
    masked_forms,
)
from core.privacy.models import TenantKey

DEFAULT_BATCH = 500
PURPOSES = (DATA, INDEX)


def sealed_models() -> list[Any]:
    """Every model with encrypted fields (each has a ``key_version`` column)."""
    return sorted(
        (m.class_ for m in Base.registry.mappers if getattr(m.class_, "__sealed_fields__", None)),
        key=lambda cls: cls.__tablename__,
    )


def indexed_fields(model: Any) -> dict[str, Any]:
    """The model's sealed fields with a blind index (its rows have ``index_version``)."""
    return {name: f for name, f in model.__sealed_fields__.items() if f.index is not None}


def active_version(session: Session, tenant_id: uuid.UUID, purpose: str = DATA) -> int:
    """The tenant's active key version of ``purpose`` (keys are created if missing)."""
    return keyring_of(session).active_version(session, tenant_id, purpose)


def rotate(
    session: Session, tenant_id: uuid.UUID, *, actor: AuditActor, purpose: str = DATA
) -> tuple[int, int]:
    """Start using a new version of the tenant's ``purpose`` key; returns ``(old, new)``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    old, new = keyring_of(session).rotate(session, tenant_id, purpose)
    record(
        session,
        action="privacy.key_rotated",
        actor=actor,
        target=("tenant_key", f"{purpose}:{new}"),
        details={"purpose": purpose, "retired_version": old, "active_version": new},
        tenant_id=tenant_id,
    )
    return old, new


def _pending(model: Any, data_version: int, index_version: int) -> Any:
    table = model.__table__
    stale = table.c.key_version < data_version
    if indexed_fields(model):
        stale = stale | (table.c.index_version < index_version)
    return (table.c.key_version > 0) & stale


def pending_rows(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    """Per table, how many rows are on an older data-key (or index-key) version than the
    active one (``case_attachments``: files on an older version or still in clear)."""
    data = active_version(session, tenant_id)
    index = active_version(session, tenant_id, INDEX)
    counts = {}
    for model in sealed_models():
        table = model.__table__
        counts[table.name] = int(
            session.scalar(
                select(func.count())
                .select_from(table)
                .where(table.c.tenant_id == tenant_id, _pending(model, data, index))
            )
            or 0
        )
    counts[files.TABLE] = files.pending_attachments(session, tenant_id, data)
    return counts


def _remasked(model: Any, record: dict[str, str]) -> dict[str, str]:
    """``record`` with the masked forms its fields keep, computed by today's rules."""
    if record.get("#") == MASK_VERSION:
        return record
    out = {k: v for k, v in record.items() if not k.startswith("#")}
    # ``model`` is the class (``sealed_fields`` takes an instance: for a class it found none, so
    # re-encryption stamped the version without the masked forms until 2026-11-26).
    out.update(masked_forms(getattr(model, "__sealed_fields__", {}), out))
    return out


def reencrypt_batch(session: Session, tenant_id: uuid.UUID, *, batch: int = DEFAULT_BATCH) -> int:
    """Re-encrypt (and re-index) up to ``batch`` rows that are on an older key version, with
    the active ones, in the caller's transaction; returns how many rows were rewritten."""
    keyring = keyring_of(session)
    data = keyring.active_version(session, tenant_id)
    index = keyring.active_version(session, tenant_id, INDEX)
    aead = keyring.cipher(session, tenant_id, data)
    done = 0
    for model in sealed_models():
        if done >= batch:
            break
        table = model.__table__
        column = table.c[model.__sealed_column__]
        indexed = indexed_fields(model)
        rows = session.execute(
            select(table.c.id, column)
            .where(table.c.tenant_id == tenant_id, _pending(model, data, index))
            .order_by(table.c.id)
            .limit(batch - done)
            .with_for_update(skip_locked=True)
        ).all()
        for row_id, token in rows:
            bound = aad_for(tenant_id, table.name, row_id)
            fields = _remasked(model, decode_record(keyring.open(session, tenant_id, token, bound)))
            values: dict[str, Any] = {
                column.key: keyring.seal(aead, data, encode_record(fields), bound),
                "key_version": data,
            }
            for name, sealed in indexed.items():
                value = fields.get(name)
                values[str(sealed.index)] = (
                    None
                    if value is None
                    else keyring.blind_index(
                        session, tenant_id, name, sealed.normalize(value), index
                    )
                )
            if indexed:
                values["index_version"] = index
            if "updated_at" in table.c:  # the same data: the ETag (timestamp) stays
                values["updated_at"] = table.c.updated_at
            session.execute(
                update(table)
                .where(table.c.tenant_id == tenant_id, table.c.id == row_id, column == token)
                .values(**values)
            )
        done += len(rows)
    return done


def _in_use(session: Session, tenant_id: uuid.UUID, purpose: str, version: int) -> bool:
    if purpose == DATA and files.version_in_use(session, tenant_id, version):
        return True
    for model in sealed_models():
        table = model.__table__
        if purpose == INDEX:
            if not indexed_fields(model):
                continue
            used = (table.c.index_version == version) & (table.c.key_version > 0)
        else:
            used = table.c.key_version == version
        found = session.scalar(
            select(table.c.id).where(table.c.tenant_id == tenant_id, used).limit(1)
        )
        if found is not None:
            return True
    return False


def destroy_unused(session: Session, tenant_id: uuid.UUID, *, actor: AuditActor) -> list[str]:
    """Erase retired data- and index-key versions that no row and no attachment file uses any
    more; returns them as ``<purpose>:<version>``."""
    keyring = keyring_of(session)
    retired = session.execute(
        select(TenantKey.purpose, TenantKey.version).where(
            TenantKey.tenant_id == tenant_id, TenantKey.status == "retired"
        )
    ).all()
    destroyed = []
    for purpose, version in sorted(retired):
        if _in_use(session, tenant_id, purpose, version):
            continue
        keyring.destroy(session, tenant_id, version, purpose)
        record(
            session,
            action="privacy.key_destroyed",
            actor=actor,
            target=("tenant_key", f"{purpose}:{version}"),
            details={"purpose": purpose, "version": version, "reason": "no row uses it"},
            tenant_id=tenant_id,
        )
        destroyed.append(f"{purpose}:{version}")
    return destroyed


def rewrap_tenant(session: Session, tenant_id: uuid.UUID, *, actor: AuditActor) -> int:
    """Re-wrap the tenant's keys that an older master key wrapped (audited); returns how
    many."""
    keyring = keyring_of(session)
    done = keyring.rewrap(session, tenant_id)
    if done:
        record(
            session,
            action="privacy.key_rewrapped",
            actor=actor,
            target=("tenant_keys", str(tenant_id)),
            details={
                "keys": [f"{purpose}:{version}" for purpose, version, _ in done],
                "previous_master_keys": sorted({previous for _, _, previous in done}),
                "master_key": keyring.manager.key_id,
            },
            tenant_id=tenant_id,
        )
    return len(done)


@dataclass
class RotationReport:
    """What a rotation run did."""

    old_version: int | None = None
    new_version: int | None = None
    purpose: str = DATA
    reencrypted: int = 0
    batches: int = 0
    attachments: int = 0
    """Attachment files re-encrypted (or encrypted for the first time)."""
    attachments_failed: dict[str, str] = field(default_factory=dict)
    """Attachment id → why its file was left as it is (the old key stays while it is)."""
    destroyed: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)
    rewrapped: int = 0


def reencrypt_all(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    actor: AuditActor,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
    report: RotationReport | None = None,
    storage: AttachmentStorage | None = None,
) -> RotationReport:
    """Re-wrap the tenant's keys if the master key changed, re-encrypt (and re-index) its
    old rows in batches, one transaction each, then its attachment files on older versions
    or in clear (with ``storage``, the attachment store; without it they are left, and so is
    every key version they use), then erase the retired keys nobody uses. Other writers go
    on meanwhile."""
    report = report or RotationReport()
    with db.tenant_transaction(tenant_id) as session:
        report.rewrapped = rewrap_tenant(session, tenant_id, actor=actor)
    while max_batches is None or report.batches < max_batches:
        with db.tenant_transaction(tenant_id) as session:
            n = reencrypt_batch(session, tenant_id, batch=batch)
        if n == 0:
            break
        report.reencrypted += n
        report.batches += 1
    after: uuid.UUID | None = None
    while storage is not None and (max_batches is None or report.batches < max_batches):
        with db.tenant_transaction(tenant_id) as session:
            done = files.reencrypt_attachments(
                session, tenant_id, storage, batch=min(batch, files.DEFAULT_BATCH), after=after
            )
        # The old files are deleted now that the batch committed (delete_after_commit).
        report.attachments += done.reencrypted
        report.attachments_failed.update(done.failed)
        if done.last is None:
            break
        after = done.last
        report.batches += 1
    with db.tenant_transaction(tenant_id) as session:
        report.left = pending_rows(session, tenant_id)
        # Files still in clear use no key; destroy_unused checks each version's files.
        if not any(n for table, n in report.left.items() if table != files.TABLE):
            report.destroyed = destroy_unused(session, tenant_id, actor=actor)
    return report


def rotate_and_reencrypt(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    actor: AuditActor,
    batch: int = DEFAULT_BATCH,
    purpose: str = DATA,
    storage: AttachmentStorage | None = None,
) -> RotationReport:
    """Rotate the tenant's ``purpose`` key, re-encrypt (re-index) every row and, with
    ``storage``, every attachment file, erase the old key (once nothing uses it)."""
    with db.tenant_transaction(tenant_id) as session:
        old, new = rotate(session, tenant_id, actor=actor, purpose=purpose)
    return reencrypt_all(
        db,
        tenant_id,
        actor=actor,
        batch=batch,
        report=RotationReport(old, new, purpose),
        storage=storage,
    )
