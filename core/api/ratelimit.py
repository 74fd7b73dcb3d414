"""Rate limits per caller and per tenant: token buckets, shared across processes.

Every authenticated ``/api/`` request takes one token from two buckets: the caller's (an
integrator's client; for a person's token, that person) and the tenant's. A bucket holds at
most ``limit`` tokens (the burst) and refills at ``limit`` per minute. When either is empty
the answer is a ``429`` problem with ``Retry-After``; every answer carries the IETF draft
headers of the tighter bucket::

    RateLimit-Limit: 1200          # the bucket's size (requests per minute)
    RateLimit-Remaining: 1187      # tokens left
    RateLimit-Reset: 1             # seconds until the bucket is full again
    RateLimit-Policy: 1200;w=60

Where the buckets live (``INSURDESK_RATE_LIMIT_BACKEND``): ``redis`` (one Lua script per
request, atomic over both buckets; the production choice), ``database`` (one upsert for the
request's buckets that computes each refill in SQL, run by the authentication middleware in the
transaction that checks the token, :meth:`RateLimiter.in_auth_transaction`; PostgreSQL
deployments without Redis), ``memory`` (this
process only: the embedded default on SQLite, a single process), ``off``. ``auto`` picks the
first that applies. If Redis cannot be reached the request is let through and a warning is
logged: losing the limiter must not take the API down.

**Leases** (shared backends: ``redis``, ``database``). A process takes tokens from a shared
bucket ahead of need and spends them locally (:class:`Leases`): one shared round trip per
lease instead of one per request. A lease starts at one token (exactly the per-request
behaviour) and doubles each time a caller spends it within :data:`LEASE_SECONDS`, up to
1/:data:`LEASE_SHARE` of the bucket (at most :data:`LEASE_MAX`); tokens not spent by then are
dropped, never returned, and the next lease is halved. So the limit is never exceeded (every
token spent was taken from the shared bucket first); what a busy process holds is at most 2 %
of a bucket, which is all a caller can lose to leases (a little early ``429`` when several
processes hold leases of the same nearly empty bucket). Buckets of 50 or fewer tokens per
minute are never leased: every request asks the shared bucket, as without leases.

Limits: ``INSURDESK_RATE_LIMIT_CLIENT`` and ``INSURDESK_RATE_LIMIT_TENANT`` (per minute), and
per tenant ``INSURDESK_RATE_LIMIT_OVERRIDES`` (JSON by tenant slug, with optional per-client
values: ``{"huaxia": {"client": 3000, "tenant": 20000, "clients": {"huaxia.erp": 600}}}``;
0 means unlimited).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import Float, Uuid, bindparam, text
from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.auth.principal import Principal
from core.db import Database, new_id
from core.settings import Settings

log = structlog.get_logger("insurdesk.ratelimit")

PREFIX = "/api/"
BACKENDS = ("auto", "redis", "database", "memory", "off")
WINDOW_SECONDS = 60
PURGE_SHARE = 0.001
"""Share of requests (database backend) that also delete their tenant's idle buckets."""
LEASE_SECONDS = 1.0
"""How long tokens taken ahead (a lease) may be spent by this process."""
LEASE_SHARE = 50
"""A lease is at most this fraction of its bucket (1/50: 2 %)."""
LEASE_MAX = 100
"""A lease is at most this many tokens, however large the bucket."""


@dataclass(frozen=True)
class Bucket:
    """A bucket to take a token from: ``capacity`` tokens, refilled at ``rate`` per second."""

    key: str
    capacity: int

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.capacity / WINDOW_SECONDS


@dataclass(frozen=True)
class Decision:
    """The outcome for one request, and the headers that tell the caller."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (and ``Retry-After`` when refused)."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": f"{self.limit};w={WINDOW_SECONDS}",
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


def decide(buckets: Sequence[Bucket], allowed: bool, levels: Sequence[float]) -> Decision:
    """The decision from each bucket's level after the request (the tightest one reported)."""
    pairs = sorted(zip(buckets, levels, strict=True), key=lambda p: p[1] / p[0].capacity)
    if not allowed:
        pairs = [p for p in pairs if p[1] < 1] or pairs
    bucket, level = pairs[0]
    remaining = max(0, math.floor(level))
    reset = max(0, math.ceil((bucket.capacity - level) / bucket.rate))
    retry = max(1, math.ceil((1 - level) / bucket.rate)) if level < 1 else 0
    return Decision(allowed, bucket.capacity, remaining, reset, retry)


class Backend(Protocol):
    """Where buckets live. ``take`` is all-or-nothing where the backend can make it so."""

    name: str

    async def take(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket]
    ) -> tuple[bool, list[float]]:
        """Take one token from each bucket; return whether allowed and each level after."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class SharedBackend:
    """Base of the backends every process shares, which can take several tokens at once (a
    lease, :class:`Leases`); their ``take`` is ``take_many`` of one token per bucket."""

    name: str

    async def take(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket]
    ) -> tuple[bool, list[float]]:
        """See :class:`Backend`."""
        taken, levels = await self.take_many(tenant_id, buckets, [1] * len(buckets))
        return all(taken), levels

    async def take_many(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket], wants: Sequence[int]
    ) -> tuple[list[bool], list[float]]:
        """Take ``wants[i]`` tokens from bucket ``i`` if it holds that many; return, per
        bucket, whether they were taken and its level after."""
        raise NotImplementedError


class MemoryBackend:
    """Buckets in this process's memory (the embedded default: one process).

    :param clock: seconds on a monotonic clock (tests pass a clock they move by hand).
    """

    name = "memory"
    MAX_KEYS = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.clock = clock

    async def take(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket]
    ) -> tuple[bool, list[float]]:
        """See :class:`Backend` (atomic over the buckets)."""
        now = self.clock()
        with self._lock:
            if len(self._levels) > self.MAX_KEYS:
                self._levels.clear()
            levels = []
            for b in buckets:
                tokens, stamp = self._levels.get(b.key, (float(b.capacity), now))
                levels.append(min(b.capacity, tokens + max(0.0, now - stamp) * b.rate))
            allowed = all(level >= 1 for level in levels)
            if allowed:
                levels = [level - 1 for level in levels]
            for b, level in zip(buckets, levels, strict=True):
                self._levels[b.key] = (level, now)
        return allowed, levels

    async def close(self) -> None:
        """Nothing to release."""


_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local levels = {}
local ok = 1
for i = 1, n do
  local cap = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local data = redis.call('HMGET', KEYS[i], 't', 's')
  local tokens = tonumber(data[1]) or cap
  local stamp = tonumber(data[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate)
  levels[i] = tokens
  if tokens < want then ok = 0 end
end
local out = {ok}
for i = 1, n do
  local cap = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  if ok == 1 then levels[i] = levels[i] - tonumber(ARGV[3 * i]) end
  redis.call('HSET', KEYS[i], 't', tostring(levels[i]), 's', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 1000)
  out[i + 1] = tostring(levels[i])
end
return out
"""


class RedisBackend(SharedBackend):
    """Buckets in Redis: one Lua script per take, atomic over the buckets (all or nothing),
    Redis's clock."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "insurdesk:rl:") -> None:
        self.url = url
        self.prefix = prefix
        self._clients: dict[int, tuple[Any, Any]] = {}

    def _script(self) -> Any:
        import redis.asyncio as aioredis

        loop = _loop_id()  # a client per event loop (connections belong to their loop)
        found = self._clients.get(loop)
        if found is None:
            client = aioredis.Redis.from_url(
                self.url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            found = (client, client.register_script(_LUA))
            self._clients[loop] = found
        return found[1]

    async def take_many(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket], wants: Sequence[int]
    ) -> tuple[list[bool], list[float]]:
        """See :class:`SharedBackend`: all or nothing (nothing is taken unless every bucket
        holds what is asked of it)."""
        script = self._script()
        args: list[Any] = []
        for b, want in zip(buckets, wants, strict=True):
            args += [b.capacity, b.rate, want]
        result = await script(keys=[self.prefix + b.key for b in buckets], args=args)
        ok = bool(int(result[0]))
        return [ok] * len(buckets), [float(v) for v in result[1:]]

    async def close(self) -> None:
        """Close the connection pools."""
        for client, _ in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _loop_id() -> int:
    import asyncio

    return id(asyncio.get_running_loop())


class DatabaseBackend(SharedBackend):
    """Buckets in ``rate_limit_buckets``: one upsert for all of a request's buckets computes
    each refill in SQL with the database's clock, so every process shares the buckets without
    lost updates.

    A new bucket is inserted with ``capacity - want`` tokens (``want``: the tokens asked of each
    bucket of the statement, 1 but for leases), so in the conflict branch ``excluded.tokens +
    want`` is the bucket's capacity (and ``/ 60`` its refill per second)."""

    name = "database"

    def __init__(self, db: Database) -> None:
        self.db = db
        dialect = db.engine.dialect.name
        if dialect == "postgresql":
            self._now = "EXTRACT(EPOCH FROM clock_timestamp())"
            self._least, self._greatest = "LEAST", "GREATEST"
        else:
            self._now = "((julianday('now') - 2440587.5) * 86400.0)"
            self._least, self._greatest = "MIN", "MAX"
        self._statements: dict[int, Any] = {}
        self.purge = text(
            "DELETE FROM rate_limit_buckets WHERE tenant_id = :tenant AND stamp < :before"
        ).bindparams(bindparam("tenant", type_=Uuid()))

    def _statement(self, count: int) -> Any:
        """The upsert of ``count`` buckets (built once per count)."""
        found = self._statements.get(count)
        if found is not None:
            return found
        now, least, greatest = self._now, self._least, self._greatest
        cap = "(excluded.tokens + :want)"
        level = (
            f"{least}({cap}, rate_limit_buckets.tokens + "
            f"{greatest}(0, {now} - rate_limit_buckets.stamp) * {cap} / {WINDOW_SECONDS})"
        )
        rows = ", ".join(
            f"(:tenant, :id{i}, :key{i}, :cap{i} - :want, {now}, true)" for i in range(count)
        )
        found = text(
            "INSERT INTO rate_limit_buckets (tenant_id, id, key, tokens, stamp, allowed) "
            f"VALUES {rows} "
            "ON CONFLICT (tenant_id, key) DO UPDATE SET "
            f"tokens = CASE WHEN {level} >= :want THEN {level} - :want ELSE {level} END, "
            f"allowed = ({level} >= :want), "
            f"stamp = {greatest}(rate_limit_buckets.stamp, {now}) "
            "RETURNING key, tokens, allowed"
        ).bindparams(
            bindparam("tenant", type_=Uuid()),
            bindparam("want", type_=Float()),
            *(bindparam(f"id{i}", type_=Uuid()) for i in range(count)),
            *(bindparam(f"cap{i}", type_=Float()) for i in range(count)),
        )
        self._statements[count] = found
        return found

    def take_in(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        buckets: Sequence[Bucket],
        wants: Sequence[int] | None = None,
    ) -> tuple[list[bool], list[float]]:
        """Take ``wants[i]`` tokens (default 1) from bucket ``i`` in ``session``'s transaction (a
        session of ``tenant_id``): one statement per distinct want (one without leases); the
        caller commits (promptly: the rows stay locked until then). Per bucket: whether its
        tokens were taken, and its level after (not all-or-nothing)."""
        if random.random() < PURGE_SHARE:  # buckets untouched for an hour are full anyway
            session.execute(self.purge, {"tenant": tenant_id, "before": time.time() - 3600})
        asked = list(wants) if wants is not None else [1] * len(buckets)
        rows: dict[str, tuple[float, bool]] = {}
        for want in sorted(set(asked)):
            group = [b for b, w in zip(buckets, asked, strict=True) if w == want]
            params: dict[str, Any] = {"tenant": tenant_id, "want": float(want)}
            for i, b in enumerate(group):
                params[f"id{i}"] = new_id()
                params[f"key{i}"] = b.key
                params[f"cap{i}"] = float(b.capacity)
            for key, tokens, allowed in session.execute(self._statement(len(group)), params):
                rows[str(key)] = (float(tokens), bool(allowed))
        return [rows[b.key][1] for b in buckets], [rows[b.key][0] for b in buckets]

    def _take(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket], wants: Sequence[int]
    ) -> tuple[list[bool], list[float]]:
        with self.db.tenant_transaction(tenant_id) as session:
            return self.take_in(session, tenant_id, buckets, wants)

    async def take_many(
        self, tenant_id: uuid.UUID, buckets: Sequence[Bucket], wants: Sequence[int]
    ) -> tuple[list[bool], list[float]]:
        """See :class:`SharedBackend` (per bucket, not all or nothing: a refused request may
        spend a token of another bucket)."""
        return await self.db.run(self._take, tenant_id, buckets, wants)

    async def close(self) -> None:
        """Nothing to release (the app owns the database)."""


def lease_ceiling(bucket: Bucket) -> int:
    """The most tokens one lease takes from ``bucket`` (1: never leased)."""
    return max(1, min(LEASE_MAX, bucket.capacity // LEASE_SHARE))


class _Lease:
    __slots__ = ("expires", "level", "size", "tokens")

    def __init__(self) -> None:
        self.tokens = 0  # taken from the shared bucket, not spent yet
        self.level = 0.0  # the shared bucket's level after the last take
        self.expires = 0.0
        self.size = 1  # what the next take asks for


class Leases:
    """Tokens this process took ahead from shared buckets, spent here (see the module
    docstring). Thread-safe; one per :class:`RateLimiter`.

    :param clock: seconds on a monotonic clock (tests pass a clock they move by hand).
    """

    MAX_KEYS = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_key: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def spend(self, buckets: Sequence[Bucket]) -> list[float] | None:
        """One token from each bucket's lease if every one holds a token still valid (the
        levels to report: the shared level plus what is held here), else None and nothing
        is spent."""
        now = self.clock()
        with self._lock:
            leases = [self._by_key.get(b.key) for b in buckets]
            if any(x is None or x.tokens < 1 or x.expires <= now for x in leases):
                return None
            levels = []
            for lease in leases:
                assert lease is not None
                lease.tokens -= 1
                levels.append(lease.level + lease.tokens)
            return levels

    def wants(self, buckets: Sequence[Bucket]) -> list[int]:
        """How many tokens to ask of each bucket now: the lease size, doubled when the last
        lease was spent in time, halved when it expired unspent (at least 1, at most
        :func:`lease_ceiling`)."""
        now = self.clock()
        out = []
        with self._lock:
            for b in buckets:
                lease = self._by_key.get(b.key)
                ceiling = lease_ceiling(b)
                if lease is None or ceiling == 1:
                    out.append(1)
                    continue
                if lease.tokens < 1 and lease.expires > now:
                    lease.size = min(ceiling, lease.size * 2)
                elif lease.tokens >= 1 and lease.expires <= now:
                    lease.size = max(1, lease.size // 2)
                lease.size = min(lease.size, ceiling)
                out.append(lease.size)
        return out

    def add(self, bucket: Bucket, tokens: int, level: float) -> None:
        """Keep ``tokens`` just taken from ``bucket`` (whose level is now ``level``) for
        :data:`LEASE_SECONDS`; tokens still held and valid are kept too."""
        now = self.clock()
        with self._lock:
            lease = self._by_key.get(bucket.key)
            if lease is None:
                if len(self._by_key) >= self.MAX_KEYS:
                    self._by_key.clear()
                lease = self._by_key[bucket.key] = _Lease()
            held = lease.tokens if lease.expires > now else 0
            lease.tokens = held + tokens
            lease.level = level
            lease.expires = now + LEASE_SECONDS

    def held(self, bucket: Bucket) -> float:
        """The level to report for ``bucket`` when this request did not take from it."""
        now = self.clock()
        with self._lock:
            lease = self._by_key.get(bucket.key)
            if lease is None or lease.expires <= now:
                return float(bucket.capacity)
            return lease.level + lease.tokens


@dataclass(frozen=True)
class TenantLimits:
    """Per-minute limits of a tenant (0: unlimited)."""

    client: int
    tenant: int
    clients: Mapping[str, int]


def parse_overrides(raw: str) -> dict[str, TenantLimits]:
    """Read ``INSURDESK_RATE_LIMIT_OVERRIDES``; raises ValueError naming what is wrong."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"INSURDESK_RATE_LIMIT_OVERRIDES is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("INSURDESK_RATE_LIMIT_OVERRIDES must be an object by tenant slug")
    out: dict[str, TenantLimits] = {}
    for slug, value in data.items():
        if not isinstance(value, dict) or set(value) - {"client", "tenant", "clients"}:
            raise ValueError(
                f"INSURDESK_RATE_LIMIT_OVERRIDES[{slug!r}]: use client, tenant and clients"
            )
        clients = value.get("clients", {})
        numbers = [value.get("client", 0), value.get("tenant", 0), *dict(clients).values()]
        if not all(isinstance(n, int) and n >= 0 for n in numbers):
            raise ValueError(f"INSURDESK_RATE_LIMIT_OVERRIDES[{slug!r}]: limits are integers ≥ 0")
        out[str(slug)] = TenantLimits(
            client=int(value.get("client", -1)),
            tenant=int(value.get("tenant", -1)),
            clients={str(k): int(v) for k, v in dict(clients).items()},
        )
    return out


def make_backend(settings: Settings, db: Database) -> Backend | None:
    """The backend ``settings`` ask for (None: rate limiting is off)."""
    choice = settings.rate_limit_backend.strip().lower()
    if choice not in BACKENDS:
        raise ValueError(
            f"INSURDESK_RATE_LIMIT_BACKEND must be one of {', '.join(BACKENDS)}, not {choice!r}"
        )
    if choice == "auto":
        if settings.redis_url:
            choice = "redis"
        elif db.is_postgres:
            choice = "database"
        else:
            choice = "memory"
    if choice == "off":
        return None
    if choice == "redis":
        if not settings.redis_url:
            raise ValueError("INSURDESK_RATE_LIMIT_BACKEND=redis needs INSURDESK_REDIS_URL")
        return RedisBackend(settings.redis_url)
    if choice == "database":
        return DatabaseBackend(db)
    return MemoryBackend()


TAKEN_KEY = "insurdesk.rate_limit"
"""ASGI scope key of the tokens taken in the authentication's transaction (a :class:`Taken`)."""


@dataclass(frozen=True)
class Taken:
    """The request's tokens were taken already; ``decision`` is None when nothing limits it."""

    decision: Decision | None


def _slug(claims: Any) -> str | None:
    return claims.get("tenant_slug") if isinstance(claims, dict) else None


class RateLimiter:
    """Chooses the buckets of a request and asks the backend (see the module docstring)."""

    def __init__(self, settings: Settings, backend: Backend | None) -> None:
        self.backend = backend
        self.leases = Leases()
        self.client_limit = settings.rate_limit_client
        self.tenant_limit = settings.rate_limit_tenant
        self.overrides = parse_overrides(settings.rate_limit_overrides)

    def buckets(self, principal: Principal, tenant_slug: str | None) -> list[Bucket]:
        """The caller's and the tenant's buckets (unlimited ones left out)."""
        client_limit, tenant_limit = self.client_limit, self.tenant_limit
        override = self.overrides.get(tenant_slug or "")
        if override is not None:
            client_limit = override.client if override.client >= 0 else client_limit
            tenant_limit = override.tenant if override.tenant >= 0 else tenant_limit
            client_limit = override.clients.get(str(principal.client_id), client_limit)
        tid = principal.tenant_id
        who = (
            f"person:{principal.subject}"
            if principal.kind == "person"
            else f"client:{principal.client_id}"
        )
        found = []
        if client_limit > 0:
            found.append(Bucket(f"{tid}:{who}", client_limit))
        if tenant_limit > 0:
            found.append(Bucket(f"{tid}:tenant", tenant_limit))
        return found

    @property
    def in_database(self) -> bool:
        """Whether the buckets are in the database (taken by :meth:`in_auth_transaction`)."""
        return isinstance(self.backend, DatabaseBackend)

    def in_auth_transaction(
        self, session: Session, principal: Principal, claims: dict[str, Any]
    ) -> Taken | None:
        """The authentication middleware's hook (:data:`core.auth.middleware.AuthHook`): with
        the database backend, take the request's tokens in the transaction that checked the
        token (one statement, no extra transaction or connection). None with other backends:
        the middleware then asks the backend itself."""
        backend = self.backend
        if not isinstance(backend, DatabaseBackend):
            return None
        buckets = self.buckets(principal, _slug(claims))
        if not buckets:
            return Taken(None)
        settle = self._settle(buckets)
        try:
            ask = next(settle)
            while True:
                ask = settle.send(backend.take_in(session, principal.tenant_id, *ask))
        except StopIteration as done:
            return Taken(done.value)

    def spend_leased(self, principal: Principal, claims: dict[str, Any]) -> Taken | None:
        """The request's decision from this process's leases alone (database backend), or
        None when a bucket's lease is spent: then :meth:`in_auth_transaction` must take."""
        if not self.in_database:
            return None
        buckets = self.buckets(principal, _slug(claims))
        if not buckets:
            return Taken(None)
        levels = self.leases.spend(buckets)
        return Taken(decide(buckets, True, levels)) if levels is not None else None

    def _settle(
        self, buckets: Sequence[Bucket]
    ) -> Generator[tuple[list[Bucket], list[int]], tuple[list[bool], list[float]], Decision]:
        """The decision for ``buckets``: from the leases if they hold a token each, else after
        taking from the shared buckets (each ``yield`` asks the caller to take ``wants`` tokens
        from ``buckets`` and send back what was taken and the levels). A lease that cannot be
        had in full is asked again for one token, so leasing never refuses a request that the
        bucket would allow."""
        levels = self.leases.spend(buckets)
        if levels is not None:
            return decide(buckets, True, levels)
        wants = self.leases.wants(buckets)
        taken, after = yield list(buckets), wants
        short = [i for i, ok in enumerate(taken) if not ok]
        if any(wants[i] > 1 for i in short):
            again, levels_again = yield [buckets[i] for i in short], [1] * len(short)
            for j, i in enumerate(short):
                taken[i], after[i], wants[i] = again[j], levels_again[j], 1
        for i, b in enumerate(buckets):
            if taken[i]:
                self.leases.add(b, wants[i], after[i])
        if all(taken):
            spent = self.leases.spend(buckets)
            if spent is not None:  # None only if a lease expired in between: report levels
                return decide(buckets, True, spent)
            return decide(buckets, True, after)
        reported = [
            after[i] if not ok else self.leases.held(b)
            for i, (b, ok) in enumerate(zip(buckets, taken, strict=True))
        ]
        return decide(buckets, False, reported)

    async def check(self, principal: Principal, tenant_slug: str | None) -> Decision | None:
        """Take the request's tokens; None when nothing limits it (or the backend failed)."""
        backend = self.backend
        if backend is None:
            return None
        buckets = self.buckets(principal, tenant_slug)
        if not buckets:
            return None
        try:
            if not isinstance(backend, SharedBackend):
                allowed, levels = await backend.take(principal.tenant_id, buckets)
                return decide(buckets, allowed, levels)
            settle = self._settle(buckets)
            try:
                ask = next(settle)
                while True:
                    ask = settle.send(await backend.take_many(principal.tenant_id, *ask))
            except StopIteration as done:
                return done.value
        except Exception as exc:  # the limiter must not take the API down
            log.warning("rate_limit_backend_failed", backend=backend.name, error=repr(exc))
            return None


class RateLimitMiddleware:
    """ASGI middleware applying :class:`RateLimiter` to ``/api/`` (after authentication)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse with 429, or call the app and add the ``RateLimit-*`` headers."""
        principal = scope.get("user")
        if (
            scope["type"] != "http"
            or not scope.get("path", "").startswith(PREFIX)
            or not isinstance(principal, Principal)
        ):
            await self.app(scope, receive, send)
            return
        taken = scope.get(TAKEN_KEY)
        if isinstance(taken, Taken):  # taken with the authentication (database backend)
            decision = taken.decision
        else:
            decision = await self.limiter.check(principal, _slug(scope.get("auth")))
        if decision is None:
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            raise Problem(
                429,
                f"rate limit exceeded ({decision.limit} requests per minute); retry after "
                f"{decision.retry_after} s",
                slug="rate-limited",
                headers=decision.headers(),
                limit=decision.limit,
                retry_after=decision.retry_after,
            )
        extra = [(k.encode(), v.encode()) for k, v in decision.headers().items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def rate_limit_middleware(limiter: RateLimiter) -> DefineMiddleware:
    """The middleware, for ``Litestar(middleware=[...])`` (after authentication)."""
    return DefineMiddleware(RateLimitMiddleware, limiter=limiter)
