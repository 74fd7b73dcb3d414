"""Tenant keys in use: data keys (AES-256-GCM) and blind-index keys (HMAC-SHA256).

A :class:`Keyring` belongs to one :class:`~core.privacy.keys.KeyManager` and caches the
tenant keys it has unwrapped (a key version never changes, so the cache never goes stale; a
destroyed version is simply never asked for again). Which version *new* writes use is read
from the database at every flush that encrypts (``FOR SHARE`` on PostgreSQL), so a rotation is
seen at once by every process, and a rotation waits for the writers that are still using the
old version (its ``FOR UPDATE`` waits for their ``FOR SHARE``).

Ciphertext format: ``v1:<key version>:<base64(nonce || AES-GCM ciphertext || tag)>``, with the
associated data ``<tenant id>|<table>|<row id>``: a record moved to another row or tenant does
not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.db import new_id, utcnow
from core.privacy.keys import KEY_BYTES, NONCE_BYTES, KeyManager, key_manager_of, rewrap
from core.privacy.models import TenantKey
from core.privacy.tokens import TOKEN_PREFIX, DecryptionError, is_token, token_version

__all__ = ["DecryptionError", "Keyring", "is_token", "keyring_for", "keyring_of", "token_version"]

DATA, INDEX = "data", "index"
ACTIVE_INDEX_TTL = 5.0
"""Seconds a process trusts its idea of the active index-key version for searches (writes
read it under ``FOR SHARE`` at every flush that indexes)."""


def _context(tenant_id: uuid.UUID, purpose: str, version: int) -> bytes:
    return f"insurdesk:tenant-key:{tenant_id}:{purpose}:{version}".encode()


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@functools.cache
def _active_version_statement(lock: bool) -> Any:
    """The active key version of ``:tenant_id`` for ``:purpose`` (locked ``FOR SHARE`` with
    ``lock``), built once: the tenant is filtered explicitly, as at the Core level the ORM's
    tenant criteria do not apply (decision 0009)."""
    table = cast(Table, TenantKey.__table__)
    stmt = select(table.c.version).where(
        table.c.tenant_id == bindparam("tenant_id"),
        table.c.purpose == bindparam("purpose"),
        table.c.status == "active",
    )
    return stmt.with_for_update(read=True) if lock else stmt


class Keyring:
    """The unwrapped tenant keys of one key manager (see the module docstring)."""

    def __init__(self, manager: KeyManager) -> None:
        self.manager = manager
        self._ciphers: dict[tuple[uuid.UUID, int], AESGCM] = {}
        self._index: dict[tuple[uuid.UUID, int], bytes] = {}
        self._active_index: dict[uuid.UUID, tuple[int, float]] = {}
        self._lock = threading.Lock()

    # -- creating and rotating ----------------------------------------------------------------

    def new_key_row(self, tenant_id: uuid.UUID, purpose: str, version: int) -> dict[str, Any]:
        """The values of a new ``tenant_keys`` row: a random key, wrapped."""
        key = os.urandom(KEY_BYTES)
        wrapped = self.manager.wrap(key, context=_context(tenant_id, purpose, version))
        return {
            "tenant_id": tenant_id,
            "id": new_id(),
            "purpose": purpose,
            "version": version,
            "status": "active",
            "wrapped": base64.b64encode(wrapped).decode("ascii"),
            "master_key_id": self.manager.key_id,
            "created_at": utcnow(),
        }

    def ensure_keys(self, session: Session, tenant_id: uuid.UUID) -> list[str]:
        """Create the tenant's first data key and its index key if missing (idempotent, and
        safe when two transactions try at once). Returns what was created."""
        created = []
        for purpose in (DATA, INDEX):
            exists = session.scalar(
                select(TenantKey.id)
                .where(TenantKey.tenant_id == tenant_id, TenantKey.purpose == purpose)
                .limit(1)
            )
            if exists is None:
                result = session.execute(
                    _insert(session)(TenantKey)
                    .values(**self.new_key_row(tenant_id, purpose, 1))
                    .on_conflict_do_nothing(index_elements=["tenant_id", "purpose", "version"])
                )
                if getattr(result, "rowcount", 1):
                    created.append(f"{purpose} key")
        return created

    def rotate(
        self, session: Session, tenant_id: uuid.UUID, purpose: str = DATA
    ) -> tuple[int, int]:
        """Make a new version of the tenant's ``purpose`` key (``data`` or ``index``) the
        active one; the old one is retired (it still decrypts, or still finds rows not yet
        re-indexed). Waits for transactions still writing with the old version.

        :returns: ``(old version, new version)``.
        """
        self.ensure_keys(session, tenant_id)
        current = session.scalars(
            select(TenantKey)
            .where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.purpose == purpose,
                TenantKey.status == "active",
            )
            .with_for_update()
        ).one()
        newest = session.scalar(
            select(func.max(TenantKey.version)).where(
                TenantKey.tenant_id == tenant_id, TenantKey.purpose == purpose
            )
        )
        current.status, current.retired_at = "retired", utcnow()
        session.flush()
        version = int(newest or 0) + 1
        session.execute(
            _insert(session)(TenantKey).values(**self.new_key_row(tenant_id, purpose, version))
        )
        if purpose == INDEX:
            with self._lock:
                self._active_index.pop(tenant_id, None)
        return current.version, version

    def destroy(
        self, session: Session, tenant_id: uuid.UUID, version: int, purpose: str = DATA
    ) -> None:
        """Erase a retired key's material (call only when no row uses it)."""
        session.execute(
            update(TenantKey)
            .where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.purpose == purpose,
                TenantKey.version == version,
                TenantKey.status == "retired",
            )
            .values(status="destroyed", wrapped=None, destroyed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        with self._lock:
            if purpose == DATA:
                self._ciphers.pop((tenant_id, version), None)
            else:
                self._index.pop((tenant_id, version), None)
                self._active_index.pop(tenant_id, None)

    def rewrap(self, session: Session, tenant_id: uuid.UUID) -> list[tuple[str, int, str]]:
        """Wrap the tenant's keys that an older master key wrapped with the current one
        (the key material is unchanged: no row needs re-encrypting). Returns
        ``(purpose, version, previous master key id)`` of each key re-wrapped."""
        current = self.manager.key_id
        rows = session.scalars(
            select(TenantKey)
            .where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.wrapped.isnot(None),
                TenantKey.master_key_id != current,
            )
            .with_for_update()
        ).all()
        done = []
        for row in rows:
            assert row.wrapped is not None
            wrapped = rewrap(
                self.manager,
                row.master_key_id,
                base64.b64decode(row.wrapped),
                context=_context(row.tenant_id, row.purpose, row.version),
            )
            done.append((row.purpose, row.version, row.master_key_id))
            row.wrapped = base64.b64encode(wrapped).decode("ascii")
            row.master_key_id = current
        session.flush()
        return done

    # -- using --------------------------------------------------------------------------------

    def unwrap_row(self, row: TenantKey | Any) -> bytes:
        """The key material of a ``tenant_keys`` row (an ORM object or a result row)."""
        if row.wrapped is None:
            raise DecryptionError(f"data key version {row.version} of the tenant was destroyed")
        return self.manager.unwrap(
            row.master_key_id,
            base64.b64decode(row.wrapped),
            context=_context(row.tenant_id, row.purpose, row.version),
        )

    def active_version(
        self, session: Session, tenant_id: uuid.UUID, purpose: str = DATA, *, lock: bool = True
    ) -> int:
        """The ``purpose`` key version new writes use, locked ``FOR SHARE`` until the
        transaction ends (a rotation waits for it); creates the tenant's keys when it has
        none."""
        stmt = _active_version_statement(lock)
        params = {"tenant_id": tenant_id, "purpose": purpose}
        # At the Core level (every write seals): the statement filters by tenant itself.
        version = session.connection().execute(stmt, params).scalar()
        if version is None:
            self.ensure_keys(session, tenant_id)
            version = session.connection().execute(stmt, params).scalar()
        if version is None:
            raise DecryptionError(f"the tenant has no active {purpose} key")
        return int(version)

    def usable_versions(self, session: Session, tenant_id: uuid.UUID, purpose: str) -> list[int]:
        """Versions of ``purpose`` not destroyed, active first (a search during an index-key
        rotation compares the blind index of each)."""
        rows = session.execute(
            select(TenantKey.version, TenantKey.status).where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.purpose == purpose,
                TenantKey.status != "destroyed",
            )
        ).all()
        return [v for v, _ in sorted(rows, key=lambda r: (r[1] != "active", -r[0]))]

    def cipher(self, session: Session | None, tenant_id: uuid.UUID, version: int) -> AESGCM:
        """The AES-GCM cipher of data-key ``version`` (read and unwrapped once)."""
        found = self._ciphers.get((tenant_id, version))
        if found is not None:
            return found
        if session is None:
            raise DecryptionError(
                "the tenant's data key is not loaded and the record has no session"
            )
        row = session.execute(
            select(
                TenantKey.tenant_id,
                TenantKey.purpose,
                TenantKey.version,
                TenantKey.wrapped,
                TenantKey.master_key_id,
            ).where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.purpose == DATA,
                TenantKey.version == version,
            )
        ).first()
        if row is None:
            raise DecryptionError(f"the tenant has no data key version {version}")
        aead = AESGCM(self.unwrap_row(row))
        with self._lock:
            self._ciphers[(tenant_id, version)] = aead
        return aead

    def active_index_version(self, session: Session | None, tenant_id: uuid.UUID) -> int:
        """The active index-key version, as searches use it (read again after
        :data:`ACTIVE_INDEX_TTL` seconds; writes lock it instead, see :meth:`active_version`)."""
        now = time.monotonic()
        cached = self._active_index.get(tenant_id)
        if cached is not None and (session is None or now - cached[1] <= ACTIVE_INDEX_TTL):
            return cached[0]
        if session is None:
            raise DecryptionError("the tenant's index key is not loaded")
        version = self.active_version(session, tenant_id, INDEX, lock=False)
        with self._lock:
            self._active_index[tenant_id] = (version, now)
        return version

    def index_key(
        self, session: Session | None, tenant_id: uuid.UUID, version: int | None = None
    ) -> bytes:
        """The tenant's blind-index key ``version`` (default: the active one; created with
        the data key)."""
        if version is None:
            version = self.active_index_version(session, tenant_id)
        found = self._index.get((tenant_id, version))
        if found is not None:
            return found
        if session is None:
            raise DecryptionError("the tenant's index key is not loaded")
        row = session.execute(
            select(
                TenantKey.tenant_id,
                TenantKey.purpose,
                TenantKey.version,
                TenantKey.wrapped,
                TenantKey.master_key_id,
            ).where(
                TenantKey.tenant_id == tenant_id,
                TenantKey.purpose == INDEX,
                TenantKey.version == version,
            )
        ).first()
        if row is None:
            raise DecryptionError(f"the tenant has no index key version {version}")
        key = self.unwrap_row(row)
        with self._lock:
            self._index[(tenant_id, version)] = key
        return key

    # -- values -------------------------------------------------------------------------------

    def seal(self, aead: AESGCM, version: int, plaintext: bytes, aad: bytes) -> str:
        """The ciphertext token of ``plaintext``."""
        nonce = os.urandom(NONCE_BYTES)
        raw = binascii.b2a_base64(nonce + aead.encrypt(nonce, plaintext, aad), newline=False)
        return f"{TOKEN_PREFIX}{version}:{raw.decode('ascii')}"

    def open(self, session: Session | None, tenant_id: uuid.UUID, token: str, aad: bytes) -> bytes:
        """The plaintext of a token made for ``aad``.

        :raises DecryptionError: another tenant's or row's record, or tampered with.
        """
        try:
            _, version, data = token.split(":", 2)
            raw = binascii.a2b_base64(data)
            aead = self._ciphers.get((tenant_id, int(version)))
        except (ValueError, binascii.Error) as exc:
            raise DecryptionError("not an insurdesk ciphertext") from exc
        if aead is None:
            aead = self.cipher(session, tenant_id, int(version))
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise DecryptionError("a personal record failed to decrypt") from exc

    def opener(
        self, session: Session | None, tenant_id: uuid.UUID
    ) -> Callable[[str, bytes], bytes]:
        """:meth:`open` for many tokens of one tenant (a page of rows): the same checks and
        errors, with the cipher of each key version looked up once."""
        ciphers: dict[str, AESGCM] = {}

        def open_one(token: str, aad: bytes) -> bytes:
            try:
                _, version, data = token.split(":", 2)
                raw = binascii.a2b_base64(data)
                aead = ciphers.get(version)
                number = int(version) if aead is None else 0
            except (ValueError, binascii.Error) as exc:
                raise DecryptionError("not an insurdesk ciphertext") from exc
            if aead is None:
                aead = ciphers[version] = self.cipher(session, tenant_id, number)
            try:
                return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
            except InvalidTag as exc:
                raise DecryptionError("a personal record failed to decrypt") from exc

        return open_one

    def blind_index(
        self,
        session: Session | None,
        tenant_id: uuid.UUID,
        field: str,
        normalized: str,
        version: int | None = None,
    ) -> str:
        """HMAC-SHA256 of a normalized value under the tenant's index key ``version``
        (default: the active one), hex, 32 chars."""
        key = self.index_key(session, tenant_id, version)
        return hmac.new(key, f"{field}:{normalized}".encode(), hashlib.sha256).hexdigest()[:32]


_KEYRINGS: weakref.WeakKeyDictionary[Any, Keyring] = weakref.WeakKeyDictionary()
_KEYRINGS_LOCK = threading.Lock()


def keyring_for(manager: KeyManager) -> Keyring:
    """The keyring of ``manager`` (one per manager per process)."""
    found = _KEYRINGS.get(manager)
    if found is None:
        with _KEYRINGS_LOCK:
            found = _KEYRINGS.get(manager)
            if found is None:
                found = _KEYRINGS[manager] = Keyring(manager)
    return found


def keyring_of(session: Session) -> Keyring:
    """The keyring of the key manager that ``session``'s database uses."""
    return keyring_for(key_manager_of(session.get_bind()))
