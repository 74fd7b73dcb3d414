"""``Idempotency-Key`` on every ``POST`` and ``PATCH`` under ``/api/``: one middleware.

An integrator that sends ``Idempotency-Key: <1-255 visible ASCII characters>`` may retry the
request as often as it likes (a timeout, a dropped connection) and the change happens once:

* the first request runs normally; if it succeeds (2xx), its status, headers and body are kept
  for ``settings.idempotency_ttl`` seconds (24 h by default), the body sealed with the
  tenant's data key (a response may hold personal data in clear);
* the same key with the same request (method, path, query, content type and body; JSON bodies
  compared after canonicalization, multipart bodies without their random boundary) gets that
  first response again, with ``Idempotent-Replayed: true``;
* the same key with a different request is a ``422`` problem (``idempotency-key-reused``);
* the same key while the first request is still running is a ``409`` problem
  (``idempotency-key-in-use``, ``Retry-After: 1``);
* a kept response whose data key was destroyed since (key rotation) is a ``409`` problem
  (``idempotency-replay-unavailable``): read the resource instead;
* a first request that failed (4xx or 5xx) keeps nothing: the key is free again, so the
  client can correct the request and send it with the same key.

Keys are scoped per tenant and caller: an integrator's client id, or for a person's token the
client and the person. Nothing else (no route) needs to know about it.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import anyio
import structlog
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.api.models import IdempotencyRecord
from core.api.problems import Problem
from core.auth.principal import Principal
from core.db import Database, new_id, utcnow
from core.privacy.crypto import keyring_of
from core.privacy.tokens import DecryptionError
from core.settings import Settings

log = structlog.get_logger("insurdesk.idempotency")
_TABLE: Table = IdempotencyRecord.__table__  # type: ignore[assignment]

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
METHODS = frozenset({"POST", "PATCH"})
PREFIX = "/api/"
MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 5 * 1024 * 1024
"""Responses larger than this are not kept (the key is released instead)."""
PURGE_SHARE = 0.01
"""Share of keyed requests that also delete their tenant's expired keys (no scheduler job)."""
RUNNING_LEASE = timedelta(minutes=2)
"""After this, a key whose first request never finished (a crashed process) is free again."""
_SKIP_HEADERS = frozenset(
    {"date", "server", "content-length", "set-cookie", "connection", "transfer-encoding"}
)


def principal_key(principal: Principal) -> str:
    """The caller a key belongs to: the client, and the person for a person's token."""
    if principal.kind == "person":
        return f"{principal.client_id}/{principal.subject}"
    return str(principal.client_id)


def valid_key(key: str) -> bool:
    """1 to 255 visible ASCII characters."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(33 <= ord(c) <= 126 for c in key)


def fingerprint(method: str, path: str, query: str, content_type: str, body: bytes) -> str:
    """SHA-256 of what makes two requests "the same" (see the module docstring)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    normalized = body
    if kind == "application/json" or kind.endswith("+json"):
        try:
            normalized = json.dumps(
                json.loads(body or b"null"), sort_keys=True, separators=(",", ":")
            ).encode()
        except (ValueError, UnicodeDecodeError):
            normalized = body
    elif kind == "multipart/form-data":
        boundary = _boundary(content_type)
        if boundary:
            normalized = body.replace(boundary.encode("latin-1"), b"BOUNDARY")
    digest = hashlib.sha256()
    for part in (method.upper(), path, query, kind):
        digest.update(part.encode("utf-8", "replace") + b"\0")
    digest.update(normalized)
    return digest.hexdigest()


def _boundary(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"') or None
    return None


# -- storage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """What to do with a request that carries a key."""

    action: Literal["run", "replay", "mismatch", "running", "unreadable"]
    record_id: uuid.UUID | None = None
    status_code: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class IdempotencyStore:
    """The ``idempotency_keys`` table, through tenant sessions (blocking: call in a thread)."""

    def __init__(self, db: Database, ttl: timedelta) -> None:
        self.db = db
        self.ttl = ttl

    def begin(
        self,
        tenant_id: uuid.UUID,
        principal: str,
        key: str,
        fingerprint: str,
        method: str,
        path: str,
    ) -> Begin:
        """Claim ``key`` for this request, or say how to answer it."""
        now = utcnow()
        with self.db.tenant_transaction(tenant_id) as session:
            if random.random() < PURGE_SHARE:  # the tenant's expired keys, now and then
                session.execute(
                    delete(IdempotencyRecord)
                    .where(IdempotencyRecord.expires_at <= now)
                    .execution_options(synchronize_session=False)
                )
            row = self._find(session, principal, key)
            if row is not None and _aware(row.expires_at) <= now:
                session.delete(row)
                session.flush()
                row = None
            if row is None:
                insert = (
                    pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
                )
                table = _TABLE
                new = session.execute(
                    insert(table)
                    .values(
                        tenant_id=tenant_id,
                        id=new_id(),
                        principal=principal,
                        key=key,
                        fingerprint=fingerprint,
                        method=method,
                        path=path[:2000],
                        state="running",
                        headers=[],
                        created_at=now,
                        expires_at=now + self.ttl,
                        locked_until=now + RUNNING_LEASE,
                    )
                    .on_conflict_do_nothing(index_elements=["tenant_id", "principal", "key"])
                    .returning(table.c.id)
                ).scalar()
                if new is not None:
                    return Begin("run", record_id=new)
                row = self._find(session, principal, key)  # a concurrent first request won
                if row is None:
                    return Begin("running")
            if row.fingerprint != fingerprint:
                return Begin("mismatch")
            if row.state == "done":
                try:
                    kept = _open_body(session, tenant_id, row.id, bytes(row.body or b""))
                except DecryptionError:
                    return Begin("unreadable")
                return Begin(
                    "replay",
                    status_code=int(row.status_code or 200),
                    headers=tuple((str(k), str(v)) for k, v in row.headers),
                    body=kept,
                )
            if row.locked_until is not None and _aware(row.locked_until) > now:
                return Begin("running")
            row.locked_until = now + RUNNING_LEASE  # the first request died: take it over
            return Begin("run", record_id=row.id)

    def complete(
        self,
        tenant_id: uuid.UUID,
        record_id: uuid.UUID,
        status_code: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        """Keep the response of a successful first request."""
        with self.db.tenant_transaction(tenant_id) as session:
            session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == record_id, IdempotencyRecord.state == "running")
                .values(
                    state="done",
                    status_code=status_code,
                    headers=[[k, v] for k, v in headers],
                    body=_seal_body(session, tenant_id, record_id, body),
                    locked_until=None,
                )
                .execution_options(synchronize_session=False)
            )

    def release(self, tenant_id: uuid.UUID, record_id: uuid.UUID) -> None:
        """Forget a key whose first request failed (the client may send it again)."""
        with self.db.tenant_transaction(tenant_id) as session:
            session.execute(
                delete(IdempotencyRecord)
                .where(IdempotencyRecord.id == record_id, IdempotencyRecord.state == "running")
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _find(session: Any, principal: str, key: str) -> IdempotencyRecord | None:
        return session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
            )
        ).one_or_none()


def _aad(record_id: uuid.UUID) -> bytes:
    return f"idempotency_keys:{record_id}".encode()


def _seal_body(session: Any, tenant_id: uuid.UUID, record_id: uuid.UUID, body: bytes) -> bytes:
    """The kept response body, sealed with the tenant's data key: a response may hold personal
    data in clear (a read declared for a purpose), and the table must not."""
    keyring = keyring_of(session)
    version = keyring.active_version(session, tenant_id)
    token = keyring.seal(
        keyring.cipher(session, tenant_id, version), version, body, _aad(record_id)
    )
    return token.encode("ascii")


def _open_body(session: Any, tenant_id: uuid.UUID, record_id: uuid.UUID, kept: bytes) -> bytes:
    """The response body :func:`_seal_body` kept.

    :raises DecryptionError: the key it was sealed with has been destroyed since.
    """
    return keyring_of(session).open(session, tenant_id, kept.decode("ascii"), _aad(record_id))


def purge_expired(db: Database, *, now: datetime | None = None) -> int:
    """Delete expired keys of every tenant (the platform path); returns how many. Requests
    purge their own tenant's now and then (:data:`PURGE_SHARE`); this is for operators."""
    now = now or utcnow()
    with db.platform_transaction() as session:
        result = session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- the middleware ---------------------------------------------------------------------------


class IdempotencyMiddleware:
    """ASGI middleware applying :mod:`core.api.idempotency` (after authentication)."""

    def __init__(self, app: ASGIApp, settings: Settings, db: Database) -> None:
        self.app = app
        self.max_body = max(settings.max_body_bytes, 32 * 1024 * 1024)
        self.store = IdempotencyStore(db, timedelta(seconds=settings.idempotency_ttl))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, replay, refuse, or run and keep the response."""
        method = str(scope.get("method", ""))
        if (
            scope["type"] != "http"
            or method not in METHODS
            or not scope.get("path", "").startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        key = headers.get(HEADER)
        principal = scope.get("user")
        if key is None or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        if not valid_key(key):
            raise Problem(
                400,
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
                slug="invalid-idempotency-key",
            )
        body = await self._read_body(receive)
        query = scope.get("query_string", b"").decode("latin-1")
        print_ = fingerprint(method, scope["path"], query, headers.get("content-type", ""), body)
        begin = await anyio.to_thread.run_sync(
            self.store.begin,
            principal.tenant_id,
            principal_key(principal),
            key,
            print_,
            method,
            scope["path"],
        )
        if begin.action == "mismatch":
            raise Problem(
                422,
                "this Idempotency-Key was already used with a different request; use a new key "
                "for a new request",
                slug="idempotency-key-reused",
            )
        if begin.action == "running":
            raise Problem(
                409,
                "a request with this Idempotency-Key is still being processed; retry shortly",
                slug="idempotency-key-in-use",
                headers={"Retry-After": "1"},
            )
        if begin.action == "unreadable":
            raise Problem(
                409,
                "the first response to this Idempotency-Key can no longer be replayed (its key was "
                "rotated away); read the resource it created instead of retrying",
                slug="idempotency-replay-unavailable",
            )
        if begin.action == "replay":
            await _replay(send, begin)
            return
        assert begin.record_id is not None
        await self._run(scope, body, send, principal.tenant_id, begin.record_id)

    async def _run(
        self, scope: Scope, body: bytes, send: Send, tenant_id: uuid.UUID, record_id: uuid.UUID
    ) -> None:
        status = 0
        kept: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        delivered = False
        settled = False

        async def replay_receive() -> ReceiveMessage:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def capture(message: Message) -> None:
            nonlocal status, size, settled
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    lower = name.decode("latin-1").lower()
                    if lower not in _SKIP_HEADERS and not lower.startswith("ratelimit"):
                        kept.append((name.decode("latin-1"), value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size <= MAX_STORED_BODY:
                    chunks.append(chunk)
                if not message.get("more_body", False) and not settled:
                    # Settle the key before the client sees the end of the answer, so a retry
                    # sent right after it finds the stored response, never a running key.
                    settled = True
                    await self._settle(tenant_id, record_id, status, size, kept, chunks)
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            if not settled:
                await anyio.to_thread.run_sync(self.store.release, tenant_id, record_id)
            raise
        if not settled:
            await anyio.to_thread.run_sync(self.store.release, tenant_id, record_id)

    async def _settle(
        self,
        tenant_id: uuid.UUID,
        record_id: uuid.UUID,
        status: int,
        size: int,
        headers: list[tuple[str, str]],
        chunks: list[bytes],
    ) -> None:
        if 200 <= status < 300 and size <= MAX_STORED_BODY:
            await anyio.to_thread.run_sync(
                self.store.complete, tenant_id, record_id, status, headers, b"".join(chunks)
            )
        else:
            await anyio.to_thread.run_sync(self.store.release, tenant_id, record_id)

    async def _read_body(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = cast(bytes, message.get("body", b""))
            size += len(chunk)
            if size > self.max_body:
                raise Problem(413, "the request body is too large")
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


async def _replay(send: Send, begin: Begin) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in begin.headers]
    headers.append((REPLAYED_HEADER.encode(), b"true"))
    headers.append((b"content-length", str(len(begin.body)).encode()))
    start: Message = {
        "type": "http.response.start",
        "status": begin.status_code,
        "headers": headers,
    }
    end: Message = {"type": "http.response.body", "body": begin.body, "more_body": False}
    await send(start)
    await send(end)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def idempotency_middleware(settings: Settings, db: Database) -> DefineMiddleware:
    """The middleware, for ``Litestar(middleware=[...])`` (after authentication)."""
    return DefineMiddleware(IdempotencyMiddleware, settings=settings, db=db)
