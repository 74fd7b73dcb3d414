"""Master keys: the :class:`KeyManager` protocol that wraps tenant data keys, and where the
platform's master key comes from.

Envelope encryption (docs/privacy.md): every tenant has its own random 256-bit data keys
(``tenant_keys``, one per version) and a blind-index key; they are stored only *wrapped* by the
platform master key. A :class:`KeyManager` wraps and unwraps them; the local implementation
(:class:`LocalKeyManager`) does it with AES-256-GCM and a master key from the settings, a KMS
implementation would call the KMS instead (same two methods, the key id names the KMS key).

Where the master key comes from, in order (:func:`key_manager_for`):

1. ``INSURDESK_MASTER_KEY``: 32 bytes, base64 (``insurdesk privacy master-key`` prints a new one);
2. ``INSURDESK_MASTER_KEY_FILE``: a file holding that base64 text;
3. the embedded default: ``<var_dir>/master.key``, generated (mode 0600) on first use.

Which key manager a session uses: the one attached to its engine with :func:`attach`
(``create_app`` attaches the one of its settings), else the process default built from the
environment (:func:`default_key_manager`), which is what every CLI and worker process reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import threading
import weakref
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class MasterKeyError(RuntimeError):
    """The master key is missing or malformed, or a wrapped key cannot be unwrapped."""


@runtime_checkable
class KeyManager(Protocol):
    """Wraps and unwraps tenant data keys with a master key it never hands out."""

    @property
    def key_id(self) -> str:
        """The id of the master key new wraps use (stored next to each wrapped key)."""
        ...

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """Encrypt ``key`` with the current master key, bound to ``context`` (AAD)."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """Decrypt a key wrapped by master key ``key_id`` under the same ``context``.

        :raises MasterKeyError: unknown master key, or the wrapped key was tampered with.
        """
        ...


class LocalKeyManager:
    """A :class:`KeyManager` holding the master key in memory (AES-256-GCM key wrapping)."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(master_key)
        self._key_id = "local:" + hashlib.sha256(b"insurdesk-master:" + master_key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"LocalKeyManager({self._key_id})"

    @property
    def key_id(self) -> str:
        """``local:<fingerprint>``: a fingerprint of the master key, never the key."""
        return self._key_id

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """``nonce || AES-GCM(master, key, aad=context)``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """The key inside ``wrapped``."""
        if key_id != self._key_id:
            raise MasterKeyError(
                f"the key was wrapped by master key {key_id}, this process holds {self._key_id}: "
                "set INSURDESK_MASTER_KEY (or _FILE) to the deployment's master key"
            )
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise MasterKeyError("a wrapped key failed its integrity check") from exc


def new_master_key() -> str:
    """A new random master key, base64 (for ``INSURDESK_MASTER_KEY`` or a key file)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _decode(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MasterKeyError(f"{where}: not base64") from exc
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(f"{where}: the master key must be {KEY_BYTES} bytes (base64)")
    return raw


def _key_file(path: Path, *, create: bool) -> bytes:
    if not path.exists():
        if not create:
            raise MasterKeyError(f"INSURDESK_MASTER_KEY_FILE: {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return _decode(path.read_text(), str(path))
        with os.fdopen(fd, "w") as fh:
            fh.write(new_master_key() + "\n")
    return _decode(path.read_text(), str(path))


class _LazyKeyManager:
    """Reads (or generates) the master key on first use, not when settings are loaded."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._inner: LocalKeyManager | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyManager(from settings, loaded={self._inner is not None})"

    def _get(self) -> LocalKeyManager:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = LocalKeyManager(_master_key_bytes(self._settings))
        return self._inner

    @property
    def key_id(self) -> str:
        """The master key's id (reads the key)."""
        return self._get().key_id

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """See :meth:`LocalKeyManager.wrap`."""
        return self._get().wrap(key, context=context)

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """See :meth:`LocalKeyManager.unwrap`."""
        return self._get().unwrap(key_id, wrapped, context=context)


def _master_key_bytes(settings: Any) -> bytes:
    configured = getattr(settings, "master_key", "") or ""
    if configured:
        return _decode(configured, "INSURDESK_MASTER_KEY")
    file = getattr(settings, "master_key_file", None)
    if file:
        return _key_file(Path(file), create=False)
    return _key_file(Path(settings.var_dir) / "master.key", create=True)


def key_manager_for(settings: Any) -> KeyManager:
    """The key manager the settings describe (the key is read on first use)."""
    return _LazyKeyManager(settings)


_ATTACHED: weakref.WeakKeyDictionary[Any, KeyManager] = weakref.WeakKeyDictionary()
_DEFAULT: list[KeyManager] = []
_DEFAULT_LOCK = threading.Lock()


def attach(database: Any, manager: KeyManager) -> None:
    """Use ``manager`` for every session of ``database`` (both of its engines)."""
    _ATTACHED[database.engine] = manager
    _ATTACHED[database.admin_engine] = manager


def default_key_manager() -> KeyManager:
    """The process default: the key manager of the environment's settings."""
    if not _DEFAULT:
        with _DEFAULT_LOCK:
            if not _DEFAULT:
                from core.settings import load_settings

                _DEFAULT.append(key_manager_for(load_settings()))
    return _DEFAULT[0]


def key_manager_of(bind: Any) -> KeyManager:
    """The key manager for a session bound to ``bind`` (an engine or connection)."""
    engine = getattr(bind, "engine", bind)
    found = _ATTACHED.get(engine)
    return found if found is not None else default_key_manager()
