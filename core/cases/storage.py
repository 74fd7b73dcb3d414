"""Where attachment bytes live: a small interface, a local-directory backend (S3 later).

Keys are chosen by the core (``<tenant>/<case>/<attachment id>``), never by the uploader, so
a file name cannot reach outside the store. Each tenant's files sit under its own prefix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 64 * 1024


class StorageError(RuntimeError):
    """The store could not keep or find a file."""


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


class LocalStorage:
    """Files in a local directory (the embedded default: ``<var_dir>/attachments``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p for p in parts):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        """Write to a temporary file in the same directory, then rename it into place."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
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


def local_storage(var_dir: Path) -> LocalStorage:
    """The default store under ``var_dir``."""
    return LocalStorage(var_dir / "attachments")


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
