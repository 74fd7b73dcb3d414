"""Attachment files encrypted at rest with the tenant's data key (issue 7).

The bytes a case attachment keeps in the attachment store (:mod:`core.cases.storage`, a local
directory or S3) are ``header || nonce || AES-256-GCM(ciphertext || tag)`` under the tenant's
active data-key version, from the same :class:`~core.privacy.crypto.Keyring` as the sealed
records (envelope encryption: the data key is stored wrapped by the master key). The header is
``IDF1`` and the key version (4 bytes, big-endian); the associated data is the sealed records'
``<tenant id>|case_attachments|<attachment id>`` followed by ``|`` and the header, so a file
copied onto another attachment — of this tenant or another — does not decrypt, nor does one
whose header was changed.

The attachment row records the version (``case_attachments.key_version``); NULL marks a file
stored before encryption, in clear: it is served as it is and encrypted by
:func:`reencrypt_attachments` (the ``privacy_reencrypt`` job, ``insurdesk privacy
reencrypt``). 0 marks a row with no file to encrypt (as ``key_version`` 0 of a sealed row
means "no record"): it holds no key version back. ``size`` and ``sha256`` stay those of the
uploaded plaintext: a download checks the SHA-256 after decrypting.

Re-encryption under a new key never overwrites a file in place: it writes the new ciphertext
under a new storage key (``<tenant>/<case>/<attachment>.k<version>``) in the transaction that
re-points the row (deleted again if it does not commit) and deletes the old object only after
the commit (:func:`core.cases.storage.delete_after_commit`), so a reader or a rollback never
finds a row and a file that disagree.

Files are at most 20 MiB (the upload limit) and are encrypted and decrypted whole, in memory.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.cases.models import Attachment
from core.cases.storage import (
    AttachmentStorage,
    StorageError,
    delete_after_commit,
    put_in_transaction,
    sha256_of,
)
from core.db import off_loop
from core.privacy.crypto import keyring_of
from core.privacy.fields import aad_for
from core.privacy.keys import NONCE_BYTES
from core.privacy.models import TenantKey
from core.privacy.tokens import DecryptionError

log = structlog.get_logger("insurdesk.privacy")

MAGIC = b"IDF1"
"""The first bytes of an encrypted attachment file (format 1)."""
HEADER_BYTES = len(MAGIC) + 4
TABLE = Attachment.__tablename__
DEFAULT_BATCH = 50
"""Files per re-encryption transaction (each is read, decrypted, encrypted and written whole:
a batch holds its rows locked while it talks to the store)."""


class KeyDestroyedError(DecryptionError):
    """The data-key version the file was encrypted with has been destroyed."""


class FileIntegrityError(DecryptionError):
    """The stored file does not decrypt for its row (another row's or tenant's file, or
    tampered with), or its plaintext does not have the recorded SHA-256."""


def _header(version: int) -> bytes:
    return MAGIC + version.to_bytes(4, "big")


def file_aad(tenant_id: uuid.UUID, attachment_id: uuid.UUID, header: bytes) -> bytes:
    """The associated data of an attachment file: the sealed records' ``aad_for`` of the
    attachment's row, then ``|`` and the file's header."""
    return aad_for(tenant_id, TABLE, attachment_id) + b"|" + header


def encrypt_file(
    aead: AESGCM, version: int, tenant_id: uuid.UUID, attachment_id: uuid.UUID, data: bytes
) -> bytes:
    """The stored form of ``data`` under data-key ``version`` (``aead``)."""
    header = _header(version)
    nonce = os.urandom(NONCE_BYTES)
    return b"".join(
        (header, nonce, aead.encrypt(nonce, data, file_aad(tenant_id, attachment_id, header)))
    )


def seal_file(
    session: Session, tenant_id: uuid.UUID, attachment_id: uuid.UUID, data: bytes
) -> tuple[bytes, int]:
    """``data`` encrypted under the tenant's active data key (locked ``FOR SHARE`` until the
    transaction ends, so a rotation waits for this upload); returns the bytes to store and
    the key version to record on the row."""
    keyring = keyring_of(session)
    version = keyring.active_version(session, tenant_id)
    aead = keyring.cipher(session, tenant_id, version)
    return encrypt_file(aead, version, tenant_id, attachment_id, data), version


def _cipher(session: Session, tenant_id: uuid.UUID, version: int) -> AESGCM:
    # The key row is read every time (one primary-key lookup): a process that unwrapped the
    # version before it was destroyed must not go on decrypting with it.
    wrapped = session.execute(
        select(TenantKey.wrapped).where(
            TenantKey.tenant_id == tenant_id,
            TenantKey.purpose == "data",
            TenantKey.version == version,
        )
    ).first()
    if wrapped is None or wrapped[0] is None:
        raise KeyDestroyedError(
            f"the tenant's data key version {version}, which encrypted the file, was destroyed"
        )
    try:
        return keyring_of(session).cipher(session, tenant_id, version)
    except DecryptionError as exc:
        raise KeyDestroyedError(str(exc)) from exc


def open_file(
    session: Session,
    tenant_id: uuid.UUID,
    attachment_id: uuid.UUID,
    key_version: int | None,
    stored: bytes,
    sha256: str | None = None,
) -> bytes:
    """The plaintext of a stored attachment file (``key_version`` None: a legacy file in
    clear, returned as it is), checked against ``sha256`` when given.

    :raises KeyDestroyedError: the key version was destroyed.
    :raises FileIntegrityError: the file is not this row's, was altered, or its plaintext
        does not have the recorded SHA-256.
    """
    if key_version is None:
        plain = stored
    else:
        header = stored[:HEADER_BYTES]
        if header != _header(key_version):
            raise FileIntegrityError(
                f"the stored file is not encrypted with data-key version {key_version}"
            )
        aead = _cipher(session, tenant_id, key_version)
        body = stored[HEADER_BYTES:]
        try:
            plain = aead.decrypt(
                body[:NONCE_BYTES], body[NONCE_BYTES:], file_aad(tenant_id, attachment_id, header)
            )
        except InvalidTag as exc:
            raise FileIntegrityError(
                "the stored file does not decrypt for this attachment (another attachment's "
                "or tenant's file, or altered)"
            ) from exc
    if sha256 is not None and sha256_of(plain) != sha256:
        raise FileIntegrityError("the file's SHA-256 does not match the one recorded at upload")
    return plain


def _read_all(storage: AttachmentStorage, key: str) -> bytes:
    with storage.open(key) as stream:
        return stream.read()


def read_attachment(session: Session, storage: AttachmentStorage, attachment: Attachment) -> bytes:
    """The uploaded bytes of ``attachment``, read from ``storage``, decrypted and checked
    against the recorded SHA-256.

    :raises StorageError: the store has no file under the row's key.
    :raises KeyDestroyedError, FileIntegrityError: see :func:`open_file`.
    """
    stored = off_loop(_read_all, storage, attachment.storage_key)
    return open_file(
        session,
        attachment.tenant_id,
        attachment.id,
        attachment.key_version,
        stored,
        attachment.sha256,
    )


# -- rotation ---------------------------------------------------------------------------------


NO_FILE = 0
"""``key_version`` of a row with no file to encrypt."""


def stale(active: ColumnElement[int] | InstrumentedAttribute[int] | int) -> ColumnElement[bool]:
    """Attachments whose file is in clear (NULL) or on an older data-key version than
    ``active`` (a version number or a column)."""
    return or_(
        Attachment.key_version.is_(None),
        (Attachment.key_version > NO_FILE) & (Attachment.key_version < active),
    )


def pending_attachments(session: Session, tenant_id: uuid.UUID, active: int) -> int:
    """Attachments of the tenant still stored in clear or under an older data-key version
    than ``active``."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Attachment)
            .where(Attachment.tenant_id == tenant_id, stale(active))
        )
        or 0
    )


def version_in_use(session: Session, tenant_id: uuid.UUID, version: int) -> bool:
    """Whether a file of the tenant is still encrypted with data-key ``version``."""
    return (
        session.scalar(
            select(Attachment.id)
            .where(Attachment.tenant_id == tenant_id, Attachment.key_version == version)
            .limit(1)
        )
        is not None
    )


@dataclass
class AttachmentBatch:
    """What one :func:`reencrypt_attachments` batch did."""

    reencrypted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """Attachment id → why it was left as it is (the store does not have the file or could
    not be read, the file does not decrypt or does not match its SHA-256): its key version
    stays in use, so it is never erased under a file a wrongly configured store did not
    show."""
    last: uuid.UUID | None = None
    """The last attachment id looked at (the next batch starts after it); None: no more."""


def reencrypt_attachments(
    session: Session,
    tenant_id: uuid.UUID,
    storage: AttachmentStorage,
    *,
    batch: int = DEFAULT_BATCH,
    after: uuid.UUID | None = None,
) -> AttachmentBatch:
    """Encrypt up to ``batch`` of the tenant's files that are in clear or on an older
    data-key version (ids after ``after``) with the active version, in the caller's
    transaction: the new file under a new key, the row re-pointed, the old file deleted after
    the commit. A file that is missing, cannot be read, does not decrypt or does not match
    its SHA-256 is left as it is (and its key version with it) and reported."""
    keyring = keyring_of(session)
    active = keyring.active_version(session, tenant_id)
    aead = keyring.cipher(session, tenant_id, active)
    stmt = (
        select(
            Attachment.id,
            Attachment.case_id,
            Attachment.storage_key,
            Attachment.key_version,
            Attachment.sha256,
        )
        .where(Attachment.tenant_id == tenant_id, stale(active))
        .order_by(Attachment.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        stmt = stmt.where(Attachment.id > after)
    rows = session.execute(stmt).all()
    done = AttachmentBatch(last=rows[-1].id if rows else None)
    for row in rows:
        new_key = f"{tenant_id}/{row.case_id}/{row.id}.k{active}"
        try:
            with storage.open(row.storage_key) as stream:
                stored = stream.read()
            plain = open_file(session, tenant_id, row.id, row.key_version, stored, row.sha256)
        except (StorageError, DecryptionError) as exc:
            done.failed[str(row.id)] = str(exc)
            continue
        if new_key == row.storage_key:  # cannot happen for a stale row; never overwrite
            done.failed[str(row.id)] = "the new storage key is the old one"
            continue
        put_in_transaction(
            session, storage, new_key, encrypt_file(aead, active, tenant_id, row.id, plain)
        )
        session.execute(
            update(Attachment)
            .where(
                Attachment.tenant_id == tenant_id,
                Attachment.id == row.id,
                Attachment.storage_key == row.storage_key,
            )
            .values(storage_key=new_key, key_version=active)
            .execution_options(synchronize_session=False)
        )
        delete_after_commit(session, storage, row.storage_key)
        done.reencrypted += 1
    if done.failed:
        log.warning("attachments_not_reencrypted", tenant=str(tenant_id), attachments=done.failed)
    return done
