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

Each may hold several keys (comma-, space- or line-separated), **newest first**: the newest
wraps, all of them unwrap. That is how the master key changes (docs/privacy.md): put the new
key in front, re-wrap every stored key (``insurdesk privacy rewrap``, or the ``privacy_rewrap``
job), then remove the old one. A KMS implementation names its keys the same way (``key_id``
next to every wrapped key) and may offer a native ``rewrap``.

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
from collections.abc import Sequence
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
    """A :class:`KeyManager` holding the master keys in memory (AES-256-GCM key wrapping).

    :param master_key: the current master key, or a list of them, **newest first**: the
        newest wraps, every one of them unwraps what it wrapped (so a master key can be
        changed without downtime: add the new one in front, let ``insurdesk privacy rewrap``
        or the ``privacy_rewrap`` job re-wrap every stored key, then drop the old one).
    """

    def __init__(self, master_key: bytes | Sequence[bytes]) -> None:
        keys = [master_key] if isinstance(master_key, bytes) else list(master_key)
        if not keys:
            raise MasterKeyError("no master key")
        self._aeads: dict[str, AESGCM] = {}
        for raw in keys:
            if len(raw) != KEY_BYTES:
                raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes")
            key_id = "local:" + hashlib.sha256(b"insurdesk-master:" + raw).hexdigest()[:16]
            self._aeads.setdefault(key_id, AESGCM(raw))
        self._key_id = next(iter(self._aeads))
        self._aead = self._aeads[self._key_id]

    def __repr__(self) -> str:
        return f"LocalKeyManager({', '.join(self._aeads)})"

    @property
    def key_id(self) -> str:
        """``local:<fingerprint>`` of the newest master key (never the key)."""
        return self._key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every master key this manager can unwrap with, newest first."""
        return tuple(self._aeads)

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """``nonce || AES-GCM(newest master, key, aad=context)``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """The key inside ``wrapped``, with whichever master key ``key_id`` names."""
        aead = self._aeads.get(key_id)
        if aead is None:
            raise MasterKeyError(
                f"the key was wrapped by master key {key_id}, this process holds "
                f"{', '.join(self._aeads)}: set INSURDESK_MASTER_KEY (or _FILE) to the "
                "deployment's master keys"
            )
        from cryptography.exceptions import InvalidTag

        try:
            return aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise MasterKeyError("a wrapped key failed its integrity check") from exc


def rewrap(manager: KeyManager, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
    """``wrapped`` (by master key ``key_id``) wrapped again by the manager's current master
    key. A KMS implementation may offer ``rewrap`` itself (e.g. a re-encrypt call that never
    returns the key); it is used when present."""
    native = getattr(manager, "rewrap", None)
    if callable(native):
        return bytes(native(key_id, wrapped, context=context))
    return manager.wrap(manager.unwrap(key_id, wrapped, context=context), context=context)


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


def _decode_list(text: str, where: str) -> list[bytes]:
    """Master keys separated by commas, spaces or lines, newest first (``#`` comments)."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    items = [i for i in ",".join(lines).replace(" ", ",").split(",") if i.strip()]
    if not items:
        raise MasterKeyError(f"{where}: no master key")
    return [_decode(item, where) for item in items]


def _key_file(path: Path, *, create: bool) -> list[bytes]:
    if not path.exists():
        if not create:
            raise MasterKeyError(f"INSURDESK_MASTER_KEY_FILE: {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return _decode_list(path.read_text(), str(path))
        with os.fdopen(fd, "w") as fh:
            fh.write(new_master_key() + "\n")
    return _decode_list(path.read_text(), str(path))


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

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured master key's id, newest first."""
        return self._get().key_ids

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """See :meth:`LocalKeyManager.wrap`."""
        return self._get().wrap(key, context=context)

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """See :meth:`LocalKeyManager.unwrap`."""
        return self._get().unwrap(key_id, wrapped, context=context)


def _master_key_bytes(settings: Any) -> list[bytes]:
    configured = getattr(settings, "master_key", "") or ""
    if configured:
        return _decode_list(configured, "INSURDESK_MASTER_KEY")
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
