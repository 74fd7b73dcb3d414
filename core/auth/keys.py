"""Access-token signing keys: creation, rotation, and an in-memory cache for signing and checks.

Keys live in the platform table ``signing_keys``. The application role may only read it, so
keys are created through :meth:`core.db.Database.platform_transaction` (the owner's
connection), by :func:`ensure_signing_key` at start-up and :func:`rotate_signing_key` from the
CLI, and each change is written to the platform audit log.

Rotation publishes the new key at once and starts signing with it only after
:data:`ACTIVATION_DELAY`, so every verifier that caches the JWKS has seen it first; the old key
stays published until the last token it signed has expired, then it is deleted.

The private halves are stored only wrapped by the platform master key, through the same
:class:`~core.privacy.keys.KeyManager` as the tenants' data keys (a KMS in production), bound to
their ``kid``; :func:`rewrap_signing_keys` wraps them again when the master key changes.
"""

from __future__ import annotations

import base64
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from joserfc.jwk import ECKey, KeyParameters, RSAKey, import_key
from sqlalchemy import delete, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.auth.models import SigningKey, as_utc
from core.db import Database, utcnow
from core.privacy.keys import KeyManager, default_key_manager, key_manager_of, rewrap
from core.tenancy.models import PlatformAuditEntry

log = structlog.get_logger("insurdesk.auth.keys")

ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
"""Signature algorithms a signing key may use."""
DEFAULT_ALGORITHM = "RS256"
ACTIVATION_DELAY = timedelta(minutes=10)
"""How long a new key is published before it signs (JWKS caches last at most 5 minutes)."""
CACHE_SECONDS = 60.0
"""How long a process trusts its in-memory copy of the keys before reading them again."""
EXPIRY_MARGIN = timedelta(seconds=2 * CACHE_SECONDS + 60)
"""Added to a retired key's last token lifetime: stale caches and clock skew."""
_LOCK_ID = zlib.crc32(b"insurdesk.signing_keys")

SigningJWK = RSAKey | ECKey


class NoSigningKeyError(RuntimeError):
    """No key may sign now: run ``insurdesk clients keys ensure`` (or start the app)."""


def _context(kid: str) -> bytes:
    return f"insurdesk:signing-key:{kid}".encode()


def wrap_private_key(manager: KeyManager, kid: str, pem: bytes) -> tuple[str, str]:
    """``(base64 of the wrapped PEM, master key id)`` of a signing key's private half."""
    wrapped = manager.wrap(pem, context=_context(kid))
    return base64.b64encode(wrapped).decode("ascii"), manager.key_id


def unwrap_private_key(manager: KeyManager, row: SigningKey) -> bytes:
    """The PEM of a stored signing key's private half.

    :raises MasterKeyError: the master key that wrapped it is not configured here.
    """
    return manager.unwrap(
        row.master_key_id, base64.b64decode(row.private_wrapped), context=_context(row.kid)
    )


def generate_signing_key(
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    activate_at: datetime | None = None,
    manager: KeyManager | None = None,
) -> SigningKey:
    """A new, unsaved :class:`SigningKey` row (RSA 2048 for RS256, P-256 for ES256), its
    private half wrapped by ``manager`` (default: the process's key manager)."""
    key: SigningJWK
    if algorithm == "RS256":
        key = RSAKey.generate_key(2048, private=True)
    elif algorithm == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}; use one of {ALGORITHMS}")
    kid = key.thumbprint()
    public = dict(key.as_dict(private=False))
    public.update(kid=kid, alg=algorithm, use="sig")
    now = utcnow()
    wrapped, master_key_id = wrap_private_key(
        manager or default_key_manager(), kid, key.as_pem(private=True)
    )
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_wrapped=wrapped,
        master_key_id=master_key_id,
        public_jwk=public,
        created_at=now,
        activate_at=activate_at or now,
    )


def _signing_now(now: datetime) -> Any:
    return (
        (SigningKey.activate_at <= now)
        & or_(SigningKey.retire_at.is_(None), SigningKey.retire_at > now)
        & or_(SigningKey.expires_at.is_(None), SigningKey.expires_at > now)
    )


def _current(session: Session, now: datetime) -> SigningKey | None:
    stmt = (
        select(SigningKey).where(_signing_now(now)).order_by(SigningKey.activate_at.desc()).limit(1)
    )
    return session.scalars(stmt).first()


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


def _audit(session: Session, actor: str, action: str, **detail: Any) -> None:
    session.add(PlatformAuditEntry(actor=actor, action=action, tenant_id=None, detail=detail))


def ensure_signing_key(
    db: Database, *, algorithm: str = DEFAULT_ALGORITHM, actor: str = "platform"
) -> str:
    """Make sure a key can sign now; create one (active at once) if not. Returns its ``kid``.

    Called at app start-up and after migrations. Reads first, so a process whose owner
    connection cannot write still starts when a key exists.

    :raises NoSigningKeyError: no key exists and this process cannot create one.
    """
    now = utcnow()
    with db.platform_session() as session:
        current = _current(session, now)
        if current is not None:
            return current.kid
    try:
        with db.platform_transaction() as session:
            _lock(session)
            current = _current(session, now)
            if current is not None:
                return current.kid
            row = generate_signing_key(
                algorithm, activate_at=now, manager=key_manager_of(db.admin_engine)
            )
            session.add(row)
            _audit(session, actor, "signing_key.create", kid=row.kid, algorithm=algorithm)
    except DBAPIError as exc:
        raise NoSigningKeyError(
            "no access-token signing key exists and this connection cannot create one; run "
            "`insurdesk clients keys ensure` with INSURDESK_ADMIN_DATABASE_URL set"
        ) from exc
    log.info("signing_key_created", kid=row.kid, algorithm=algorithm)
    return row.kid


def rotate_signing_key(
    db: Database,
    *,
    activate_after: timedelta = ACTIVATION_DELAY,
    token_ttl: timedelta = timedelta(seconds=900),
    algorithm: str | None = None,
    actor: str = "platform",
) -> str:
    """Create the next signing key; return its ``kid``.

    The new key is published now and signs from ``now + activate_after``; every older key
    stops signing then and leaves the JWKS ``token_ttl`` (plus a margin) later. Keys whose
    time is up are deleted.

    :param token_ttl: the access-token lifetime (``settings.access_token_ttl``).
    :param algorithm: defaults to the current key's algorithm.
    """
    now = utcnow()
    with db.platform_transaction() as session:
        _lock(session)
        current = _current(session, now)
        alg = algorithm or (current.algorithm if current else DEFAULT_ALGORITHM)
        row = generate_signing_key(
            alg, activate_at=now + activate_after, manager=key_manager_of(db.admin_engine)
        )
        retire_at = row.activate_at
        for old in session.scalars(select(SigningKey).where(SigningKey.retire_at.is_(None))):
            old.retire_at = max(as_utc(old.activate_at), retire_at)
            old.expires_at = retire_at + token_ttl + EXPIRY_MARGIN
        session.add(row)
        removed = list(session.scalars(select(SigningKey.kid).where(SigningKey.expires_at <= now)))
        if removed:
            session.execute(
                delete(SigningKey)
                .where(SigningKey.kid.in_(removed))
                .execution_options(synchronize_session=False)
            )
        _audit(
            session,
            actor,
            "signing_key.rotate",
            kid=row.kid,
            algorithm=alg,
            activate_at=row.activate_at.isoformat(),
            previous=current.kid if current else None,
            deleted=removed,
        )
    log.info("signing_key_rotated", kid=row.kid, activate_at=row.activate_at.isoformat())
    return row.kid


def rewrap_signing_keys(db: Database, *, actor: str = "platform") -> list[str]:
    """Wrap every signing key that an older master key wrapped with the current one (after
    the master key changed); returns their ``kid``. Platform-audited."""
    manager = key_manager_of(db.admin_engine)
    done = []
    with db.platform_transaction() as session:
        _lock(session)
        for row in session.scalars(
            select(SigningKey).where(SigningKey.master_key_id != manager.key_id)
        ):
            wrapped = rewrap(
                manager,
                row.master_key_id,
                base64.b64decode(row.private_wrapped),
                context=_context(row.kid),
            )
            previous = row.master_key_id
            row.private_wrapped = base64.b64encode(wrapped).decode("ascii")
            row.master_key_id = manager.key_id
            done.append(row.kid)
            _audit(
                session,
                actor,
                "signing_key.rewrap",
                kid=row.kid,
                previous_master_key=previous,
                master_key=manager.key_id,
            )
    if done:
        log.info("signing_keys_rewrapped", kids=done)
    return done


def public_jwks(db: Database) -> dict[str, list[dict[str, Any]]]:
    """The JWKS document: public halves of every key not yet expired (read fresh)."""
    now = utcnow()
    with Session(db.engine) as session:
        rows = session.scalars(
            select(SigningKey)
            .where(or_(SigningKey.expires_at.is_(None), SigningKey.expires_at > now))
            .order_by(SigningKey.activate_at.desc())
        ).all()
    return {"keys": [dict(r.public_jwk) for r in rows]}


@dataclass(frozen=True)
class LoadedKey:
    """A signing key as cached in memory."""

    kid: str
    algorithm: str
    key: SigningJWK
    activate_at: datetime
    retire_at: datetime | None
    expires_at: datetime | None

    def published(self, now: datetime) -> bool:
        """True while tokens signed with it may still be valid."""
        return self.expires_at is None or self.expires_at > now

    def signs(self, now: datetime) -> bool:
        """True when this key may sign at ``now``."""
        return (
            self.activate_at <= now
            and (self.retire_at is None or self.retire_at > now)
            and self.published(now)
        )


class KeyStore:
    """The signing keys of one database, cached for :data:`CACHE_SECONDS`.

    Thread-safe: readers see one immutable snapshot; reloads are serialized. An unknown
    ``kid`` triggers one reload (the same kid again only after ``min_reload_seconds``).
    """

    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float = CACHE_SECONDS,
        min_reload_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.min_reload_seconds = min_reload_seconds
        self._keys: tuple[LoadedKey, ...] = ()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._unknown: dict[str, float] = {}

    def _load(self) -> None:
        with Session(self.db.engine) as session:
            rows: Sequence[SigningKey] = session.scalars(select(SigningKey)).all()
        known = {k.kid: k.key for k in self._keys}
        manager = key_manager_of(self.db.engine)
        loaded = []
        for row in rows:
            params: KeyParameters = {"kid": row.kid, "alg": row.algorithm, "use": "sig"}
            key = known.get(row.kid)
            if key is None:
                pem = unwrap_private_key(manager, row)
                key = (
                    import_key(pem, "RSA", parameters=params)
                    if row.algorithm.startswith("RS")
                    else import_key(pem, "EC", parameters=params)
                )
            loaded.append(
                LoadedKey(
                    kid=row.kid,
                    algorithm=row.algorithm,
                    key=key,
                    activate_at=as_utc(row.activate_at),
                    retire_at=as_utc(row.retire_at) if row.retire_at else None,
                    expires_at=as_utc(row.expires_at) if row.expires_at else None,
                )
            )
        self._keys = tuple(loaded)
        self._loaded_at = time.monotonic()

    def refresh(self, *, force: bool = False) -> None:
        """Read the keys again if the cache is stale (or ``force``)."""
        with self._lock:
            age = time.monotonic() - self._loaded_at
            if (force and age >= self.min_reload_seconds) or age >= self.cache_seconds:
                self._load()

    def _snapshot(self) -> tuple[LoadedKey, ...]:
        if time.monotonic() - self._loaded_at >= self.cache_seconds:
            self.refresh()
        return self._keys

    def signing_key(self) -> LoadedKey:
        """The newest key that may sign now.

        :raises NoSigningKeyError: when there is none (start-up did not run).
        """
        for attempt in (0, 1):
            now = utcnow()
            usable = [k for k in self._snapshot() if k.signs(now)]
            if usable:
                return max(usable, key=lambda k: k.activate_at)
            if attempt == 0:
                self.refresh(force=True)
        raise NoSigningKeyError("no access-token signing key is active")

    def cached_key(self, kid: str) -> LoadedKey | None:
        """The published key ``kid`` if the cached keys are fresh and hold it, without any
        database read; None otherwise (then :meth:`verification_key` decides)."""
        if time.monotonic() - self._loaded_at >= self.cache_seconds:
            return None
        now = utcnow()
        for key in self._keys:
            if key.kid == kid and key.published(now):
                return key
        return None

    def verification_key(self, kid: str) -> LoadedKey | None:
        """The published key ``kid``, reloading once if it is unknown; None if there is none.

        An unknown ``kid`` is looked up again at most every ``min_reload_seconds``, so a
        stream of tokens with the same made-up kid costs no query each.
        """
        for attempt in (0, 1):
            now = utcnow()
            for key in self._snapshot():
                if key.kid == kid and key.published(now):
                    return key
            if attempt == 0 and self._may_look_up(kid):
                with self._lock:
                    self._load()
            else:
                break
        return None

    def _may_look_up(self, kid: str) -> bool:
        now = time.monotonic()
        last = self._unknown.get(kid)
        if last is not None and now - last < self.min_reload_seconds:
            return False
        if len(self._unknown) >= 1024:
            self._unknown.clear()
        self._unknown[kid] = now
        return True
