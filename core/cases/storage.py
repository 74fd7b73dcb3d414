"""Where attachment bytes live: a small interface, a local-directory backend and an S3 backend.

Keys are chosen by the core (``<tenant>/<case>/<attachment id>``), never by the uploader, so
a file name cannot reach outside the store. Each tenant's files sit under its own prefix.

The backend is chosen by settings (:func:`storage_for`): ``INSURDESK_ATTACHMENT_STORAGE=local``
(the embedded default, ``<var_dir>/attachments``) or ``s3`` (any S3-compatible object store:
``INSURDESK_S3_BUCKET``, ``INSURDESK_S3_ENDPOINT_URL`` ...). The limits (size, media type) and
the SHA-256 are checked by the flow before a byte is stored, whatever the backend; the S3
backend also sends the SHA-256 with the upload, so the object store refuses bytes damaged on
the way.

A stored object and the row that records it must not part ways. :func:`put_in_transaction`
ties the object to the database transaction that records it: if that transaction does not
commit (an error, a failed commit, a rollback), the object is deleted again.
:func:`delete_after_commit` is the other direction (retention, re-encryption under a new key):
the object goes only once the transaction that deleted or re-pointed its row has committed. A
process that dies between the upload and the commit (or between a commit and the deletion)
leaves an object without a row; :func:`sweep_orphans` (the ``attachment_sweep`` job) deletes
such objects once they are older than :data:`ORPHAN_GRACE`.

The bytes a store holds are ciphertext (:mod:`core.privacy.files`: AES-256-GCM under the
tenant's data key); the stores themselves neither know nor care.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast, runtime_checkable

import structlog
from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction

from core.db import off_loop

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings

log = structlog.get_logger("insurdesk.storage")

CHUNK = 64 * 1024
BACKENDS = ("local", "s3")
ORPHAN_GRACE = dt.timedelta(hours=1)
"""An object without a row is deleted by the sweeper only when older than this: an upload
whose transaction is still running must not lose its file."""
UPLOAD_PREFIX = ".upload-"
"""Temporary files of :class:`LocalStorage` (left behind only by a crash mid-write)."""


class StorageError(RuntimeError):
    """The store could not keep or find a file."""


@dataclass(frozen=True)
class StoredObject:
    """An object in a store: its key, size and when it was last written (UTC)."""

    key: str
    size: int
    modified: dt.datetime


@runtime_checkable
class AttachmentStorage(Protocol):
    """A place to keep attachment bytes under a key."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (atomically: a reader never sees half a file)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A binary stream of the bytes stored under ``key``; StorageError when missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is missing)."""
        ...

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix`` (for the orphan sweeper)."""
        ...


def check_key(key: str) -> list[str]:
    """The parts of a valid key; StorageError for an empty part, ``.``, ``..`` or a backslash."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return parts


class LocalStorage:
    """Files in a local directory (the embedded default: ``<var_dir>/attachments``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def put(self, key: str, data: bytes) -> None:
        """Write to a temporary file in the same directory, then rename it into place."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=UPLOAD_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        """Open the stored file for reading."""
        path = self._path(key)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise StorageError(f"no stored file for {key!r}") from exc

    def delete(self, key: str) -> None:
        """Remove the stored file."""
        self._path(key).unlink(missing_ok=True)

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every file under the root (temporary upload files included), in key order."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield StoredObject(
                    key, stat.st_size, dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
                )


class S3Storage:
    """Objects in a bucket of an S3-compatible store, under an optional key prefix.

    :param client: a boto3 S3 client (thread-safe; one per process is enough).
    :param bucket: the bucket; it must exist (the platform does not create buckets).
    :param prefix: prepended to every key, e.g. ``insurdesk/`` to share a bucket.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ValueError("S3Storage needs a bucket")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        """One ``PutObject`` (atomic in S3: readers see the old object or the whole new one),
        with the SHA-256 for the store to verify."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentLength=len(data),
                ChecksumSHA256=digest,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not store {key!r}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        """The object's body as a stream (read in chunks, then closed by the caller)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise StorageError(f"no stored file for {key!r}") from exc
            raise StorageError(f"could not read {key!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not read {key!r}: {exc}") from exc
        return cast(BinaryIO, answer["Body"])

    def delete(self, key: str) -> None:
        """``DeleteObject`` (S3 answers success for a missing key too)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not delete {key!r}: {exc}") from exc

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """``ListObjectsV2``, page by page, keys without the store's prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", ()):
                modified = item["LastModified"]
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=dt.UTC)
                yield StoredObject(
                    str(item["Key"])[len(self.prefix) :], int(item["Size"]), modified
                )


def s3_client(
    *,
    endpoint_url: str = "",
    region: str = "",
    access_key_id: str = "",
    secret_access_key: str = "",
) -> Any:
    """A boto3 S3 client. Without keys, boto3's usual chain applies (``AWS_*`` variables,
    instance roles). With an ``endpoint_url`` (an S3-compatible store), path-style addressing."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        config=config,
    )


def local_storage(var_dir: Path) -> LocalStorage:
    """The default store under ``var_dir``."""
    return LocalStorage(var_dir / "attachments")


def check_settings(settings: Settings) -> None:
    """Refuse storage settings that cannot work (called by :func:`core.settings.load_settings`).

    :raises ValueError: naming the variable.
    """
    choice = settings.attachment_storage.strip().lower()
    if choice not in BACKENDS:
        raise ValueError(
            f"INSURDESK_ATTACHMENT_STORAGE must be one of {', '.join(BACKENDS)}, not {choice!r}"
        )
    if choice == "s3" and not settings.s3_bucket:
        raise ValueError("INSURDESK_ATTACHMENT_STORAGE=s3 needs INSURDESK_S3_BUCKET")


@functools.lru_cache(maxsize=8)
def storage_for(settings: Settings) -> AttachmentStorage:
    """The attachment store the settings choose (one per settings: the S3 client is reused)."""
    check_settings(settings)
    if settings.attachment_storage.strip().lower() == "s3":
        client = s3_client(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
        return S3Storage(client, settings.s3_bucket, settings.s3_prefix)
    return local_storage(settings.var_dir)


def sha256_of(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def iter_file(stream: BinaryIO) -> Iterator[bytes]:
    """Read ``stream`` in chunks and close it."""
    try:
        while chunk := stream.read(CHUNK):
            yield chunk
    finally:
        stream.close()


# -- objects and transactions -----------------------------------------------------------------

_PENDING = "insurdesk.attachments.pending"
"""``session.info`` key: objects stored in the session's open transaction, not yet committed."""


def put_in_transaction(session: Session, storage: AttachmentStorage, key: str, data: bytes) -> None:
    """Store ``data`` under ``key`` for a row written in ``session``'s transaction.

    If the transaction ends without committing (an exception, a failed commit, a rollback, the
    session closed), the object is deleted again, so no stored file outlives its row. The
    object is written *before* the commit, so a committed row always has its file.
    """
    off_loop(storage.put, key, data)
    session.info.setdefault(_PENDING, []).append((storage, key))


def pending_keys(session: Session) -> list[str]:
    """Keys stored in ``session``'s open transaction (for tests and diagnostics)."""
    return [key for _, key in session.info.get(_PENDING, [])]


_DOOMED = "insurdesk.attachments.doomed"
"""``session.info`` key: objects to delete once the session's open transaction commits."""


def delete_after_commit(session: Session, storage: AttachmentStorage, key: str) -> None:
    """Delete the object under ``key`` once ``session``'s transaction commits (the row that
    referred to it was deleted, or now refers to a new object, in that transaction).

    If the transaction does not commit, the object stays: a rollback loses nothing. A process
    that dies between the commit and the deletion leaves an object no row refers to, which
    :func:`sweep_orphans` deletes. Call it in the outer transaction, not inside a savepoint
    that may roll back on its own.
    """
    session.info.setdefault(_DOOMED, []).append((storage, key))


def doomed_keys(session: Session) -> list[str]:
    """Keys to be deleted when ``session``'s transaction commits (for tests and diagnostics)."""
    return [key for _, key in session.info.get(_DOOMED, [])]


@event.listens_for(Session, "after_commit")
def _kept(session: Session) -> None:
    session.info.pop(_PENDING, None)
    for storage, key in session.info.pop(_DOOMED, None) or ():
        try:
            off_loop(storage.delete, key)
        except Exception as exc:  # no row refers to it any more: the sweeper deletes it later
            log.warning("attachment_delete_failed", key=key, error=repr(exc))


@event.listens_for(Session, "after_transaction_end")
def _discard_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a savepoint: the outer transaction decides
        return
    session.info.pop(_DOOMED, None)  # not committed: the objects stay with their rows
    pending = session.info.pop(_PENDING, None)
    for storage, key in pending or ():
        try:
            off_loop(storage.delete, key)
            log.info("attachment_discarded", key=key, reason="transaction not committed")
        except Exception as exc:  # the sweeper deletes it later
            log.warning("attachment_discard_failed", key=key, error=repr(exc))


@dataclass
class SweepReport:
    """What :func:`sweep_orphans` found."""

    checked: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_recent: int = 0


def sweep_orphans(
    db: Database,
    storage: AttachmentStorage,
    *,
    now: dt.datetime | None = None,
    grace: dt.timedelta = ORPHAN_GRACE,
    batch: int = 500,
) -> SweepReport:
    """Delete stored objects that no attachment row refers to and that are older than ``grace``.

    Such objects are left by a process that died between storing a file and committing its
    row (a rolled-back transaction deletes its own, see :func:`put_in_transaction`). Rows are
    looked up through the platform path, across tenants, ``batch`` keys at a time.
    """
    from core.cases.models import Attachment
    from core.db import utcnow

    now = now or utcnow()
    report = SweepReport()
    deleted = report.deleted

    def settle(candidates: list[StoredObject]) -> None:
        keys = [c.key for c in candidates]
        with db.platform_session() as session:
            known = set(
                session.scalars(
                    select(Attachment.storage_key).where(Attachment.storage_key.in_(keys))
                )
            )
        for obj in candidates:
            if obj.key not in known:
                storage.delete(obj.key)
                deleted.append(obj.key)

    candidates: list[StoredObject] = []
    for obj in storage.iter_objects():
        report.checked += 1
        if now - obj.modified < grace:
            report.kept_recent += 1
            continue
        candidates.append(obj)
        if len(candidates) >= batch:
            settle(candidates)
            candidates = []
    if candidates:
        settle(candidates)
    if deleted:
        log.info("attachment_orphans_deleted", count=len(deleted), checked=report.checked)
    return report


def attachment_sweep(ctx: Any) -> None:
    """The ``attachment_sweep`` job (a :class:`core.scheduler.jobs.JobContext`): orphans of the
    store the settings choose (skipped without settings: the store is not known)."""
    if ctx.settings is None:
        return
    sweep_orphans(ctx.db, storage_for(ctx.settings), now=ctx.now)
