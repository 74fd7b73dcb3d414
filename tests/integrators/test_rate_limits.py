"""Rate limits from the integrator's side: RateLimit headers, 429 problems with Retry-After,
per client and per tenant, per-tenant overrides, and buckets shared by several processes
through Redis or the database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import pytest
from litestar.testing import TestClient

from core.api.ratelimit import Bucket, MemoryBackend, decide, parse_overrides
from core.app import create_app
from core.db import Database
from core.settings import Settings
from tests.conftest import LiveServer
from tests.factories import TenantWorld, make_tenant
from tests.integrators.conftest import Integrator, problem, register_client
from tests.outbox.fixtures import REDIS_URL, redis_problem

NO_WORKER = "redis://127.0.0.1:1/0"
"""A broker URL that keeps the app from starting an embedded worker (never connected)."""


@contextmanager
def platform(settings: Settings, database: Database, **changes: object) -> Iterator[TestClient]:
    """The platform with other rate-limit settings, in this process."""
    app = create_app(replace(settings, broker_url=NO_WORKER, **changes), database)  # type: ignore[arg-type]
    with TestClient(app, base_url=settings.issuer) as client:
        yield client


def two_processes(
    settings: Settings, database: Database, headers: dict[str, str], count: int, **changes: object
) -> tuple[list[int], float]:
    """The statuses of ``count`` calls of ``/api/v1/me``, alternating between two platforms
    with the same rate-limit settings (two processes sharing the buckets), and the seconds the
    calls took."""
    with (
        platform(settings, database, **changes) as one,
        platform(settings, database, **changes) as two,
    ):
        started = time.monotonic()
        statuses = [
            (one if n % 2 else two).get("/api/v1/me", headers=headers).status_code
            for n in range(count)
        ]
        return statuses, time.monotonic() - started


@pytest.fixture
def tenant(database: Database) -> TenantWorld:
    """A fresh tenant per test: its buckets start full."""
    return make_tenant(database, "rl")


def two_clients(
    api: httpx.Client, person_token: object, tenant: TenantWorld, live_server: LiveServer
) -> tuple[Integrator, Integrator]:
    from tests.api.conftest import auth

    admin = auth(person_token(tenant, "admin"))  # type: ignore[operator]
    return (
        register_client(api, admin, live_server, scopes=["org:read"]),
        register_client(api, admin, live_server, scopes=["org:read"]),
    )


def test_headers_then_429_with_retry_after(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
) -> None:
    first, second = two_clients(api, person_token, tenant, live_server)
    with platform(
        app_settings,
        database,
        rate_limit_backend="memory",
        rate_limit_client=5,
        rate_limit_tenant=8,
    ) as client:
        remaining = []
        for _ in range(5):
            answer = client.get("/api/v1/org-units", headers=first.headers)
            assert answer.status_code == 200
            assert answer.headers["ratelimit-limit"] == "5"
            assert answer.headers["ratelimit-policy"] == "5;w=60"
            remaining.append(int(answer.headers["ratelimit-remaining"]))
            assert 0 <= int(answer.headers["ratelimit-reset"]) <= 60
        assert remaining == [4, 3, 2, 1, 0]
        refused = client.get("/api/v1/org-units", headers=first.headers)
        body = problem(refused, 429)
        assert body["type"] == "/problems/rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert refused.headers["ratelimit-remaining"] == "0"
        # another client of the tenant has its own bucket, until the tenant's runs dry (8)
        for _ in range(3):
            assert client.get("/api/v1/org-units", headers=second.headers).status_code == 200
        tenant_refused = client.get("/api/v1/org-units", headers=second.headers)
        problem(tenant_refused, 429)
        assert tenant_refused.headers["ratelimit-limit"] == "8"
        # unauthenticated requests and the OAuth endpoints are not counted here
        assert client.get("/healthz").status_code == 200
        assert "ratelimit-limit" not in client.get("/healthz").headers


class ManualClock:
    """A monotonic clock the test moves by hand: the refill is the bucket's own arithmetic,
    however long the requests take on a busy machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_the_bucket_refills(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
) -> None:
    first, _ = two_clients(api, person_token, tenant, live_server)
    clock = ManualClock()
    with platform(
        app_settings,
        database,
        rate_limit_backend="memory",
        rate_limit_client=60,
        rate_limit_tenant=0,
    ) as client:
        limiter = client.app.state.rate_limiter
        assert isinstance(limiter.backend, MemoryBackend)
        limiter.backend = MemoryBackend(clock=clock)
        for _ in range(60):  # the burst: the whole bucket, however long these take
            assert client.get("/api/v1/me", headers=first.headers).status_code == 200
        refused = client.get("/api/v1/me", headers=first.headers)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        clock.advance(0.5)  # half a token: still refused
        half = client.get("/api/v1/me", headers=first.headers)
        assert half.status_code == 429 and half.headers["retry-after"] == "1"
        clock.advance(0.5)  # one token per second (60 per minute)
        again = client.get("/api/v1/me", headers=first.headers)
        assert again.status_code == 200 and again.headers["ratelimit-remaining"] == "0"
        assert client.get("/api/v1/me", headers=first.headers).status_code == 429
        clock.advance(60)  # a minute fills the bucket again, never beyond its size
        assert (
            client.get("/api/v1/me", headers=first.headers).headers["ratelimit-remaining"] == "59"
        )


def test_limits_per_tenant_and_per_client(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
) -> None:
    first, second = two_clients(api, person_token, tenant, live_server)
    overrides = {tenant.tenant.slug: {"client": 2, "clients": {second.client_id: 4}}}
    with platform(
        app_settings,
        database,
        rate_limit_backend="memory",
        rate_limit_client=100,
        rate_limit_overrides=json.dumps(overrides),
    ) as client:
        assert [client.get("/api/v1/me", headers=first.headers).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert [client.get("/api/v1/me", headers=second.headers).status_code for _ in range(5)] == [
            200,
            200,
            200,
            200,
            429,
        ]


@pytest.mark.parametrize("kind", ["redis", "database"])
def test_processes_share_the_buckets(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
    kind: str,
) -> None:
    if kind == "redis" and redis_problem():
        pytest.skip(str(redis_problem()))
    first, _ = two_clients(api, person_token, tenant, live_server)
    settings = {"rate_limit_backend": kind, "rate_limit_client": 6, "redis_url": REDIS_URL}
    statuses, _ = two_processes(app_settings, database, first.headers, 8, **settings)
    assert statuses == [200] * 6 + [429] * 2


def test_redis_down_lets_requests_through(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
) -> None:
    first, _ = two_clients(api, person_token, tenant, live_server)
    with platform(
        app_settings,
        database,
        rate_limit_backend="redis",
        rate_limit_client=1,
        redis_url="redis://127.0.0.1:1/0",
    ) as client:
        for _ in range(3):
            answer = client.get("/api/v1/me", headers=first.headers)
            assert answer.status_code == 200 and "ratelimit-limit" not in answer.headers


def test_settings_are_checked(app_settings: Settings, database: Database) -> None:
    with pytest.raises(ValueError, match="INSURDESK_RATE_LIMIT_BACKEND"):
        create_app(replace(app_settings, rate_limit_backend="carrier-pigeon"), database)
    with pytest.raises(ValueError, match="INSURDESK_RATE_LIMIT_OVERRIDES"):
        parse_overrides('{"t": {"client": -1}}')
    with pytest.raises(ValueError, match="INSURDESK_RATE_LIMIT_OVERRIDES"):
        parse_overrides("[1]")


def test_the_token_bucket() -> None:
    import uuid

    import anyio

    backend = MemoryBackend()
    buckets = [Bucket("a", 2), Bucket("b", 10)]
    tid = uuid.uuid4()

    def take() -> tuple[bool, list[float]]:
        return anyio.run(backend.take, tid, buckets)

    allowed, levels = take()
    assert allowed and levels[0] == pytest.approx(1, abs=0.01)
    decision = decide(buckets, allowed, levels)
    assert (decision.limit, decision.remaining) == (2, 1)
    take()
    allowed, levels = take()
    assert not allowed and levels[1] == pytest.approx(8, abs=0.01)  # nothing taken when refused
    assert decide(buckets, allowed, levels).retry_after == 30


def test_leases_grow_while_spent_and_shrink_when_they_expire() -> None:
    from core.api.ratelimit import LEASE_MAX, LEASE_SECONDS, Leases, lease_ceiling

    clock = ManualClock()
    leases = Leases(clock=clock)
    small, big = Bucket("small", 50), Bucket("big", 100_000)
    assert lease_ceiling(small) == 1  # 50 a minute or fewer: every request asks the bucket
    assert lease_ceiling(big) == LEASE_MAX
    assert leases.wants([small, big]) == [1, 1]  # nothing known yet: one token, as before
    sizes = []
    for _ in range(9):  # each lease spent within its time: the next one doubles
        want = leases.wants([big])[0]
        sizes.append(want)
        leases.add(big, want, 1000.0)
        while leases.spend([big]) is not None:
            pass
        clock.advance(0.01)
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 100, 100]
    leases.add(big, 10, 900.0)
    assert leases.spend([big]) == [909.0]  # reported: the shared level plus what is held
    clock.advance(LEASE_SECONDS)  # expired unspent: dropped, and the next lease is halved
    assert leases.spend([big]) is None
    assert leases.wants([big]) == [50]
    assert leases.spend([small, big]) is None  # one bucket without a lease: nothing spent


@pytest.mark.parametrize("kind", ["redis", "database"])
def test_leases_keep_the_limit_across_processes(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
    kind: str,
) -> None:
    """Two processes leasing tokens of one bucket of 500 a minute (leases of up to 10):
    together they never let more through than the bucket holds plus its refill, and lose at
    most what they hold to each other."""
    if kind == "redis" and redis_problem():
        pytest.skip(str(redis_problem()))
    first, _ = two_clients(api, person_token, tenant, live_server)
    settings = {
        "rate_limit_backend": kind,
        "rate_limit_client": 500,
        "rate_limit_tenant": 0,
        "redis_url": REDIS_URL,
    }
    statuses, elapsed = two_processes(app_settings, database, first.headers, 600, **settings)
    allowed = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert allowed <= 500 + elapsed * 500 / 60 + 1  # never beyond the bucket and its refill
    assert allowed >= 500 - 2 * 10  # at most one lease per process lost to the other


def test_leases_spare_the_database_its_round_trips(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
) -> None:
    """With a large bucket, 200 requests take their tokens from the shared bucket in a few
    leases, not one statement each; small buckets keep one statement per request."""
    from sqlalchemy import Engine, event

    first, _ = two_clients(api, person_token, tenant, live_server)
    takes: list[str] = []

    def count(conn: object, cursor: object, statement: str, *_: object) -> None:
        if "rate_limit_buckets" in statement and statement.lstrip().startswith("INSERT"):
            takes.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        for client_limit, expected in ((6000, range(1, 40)), (50, range(200, 201))):
            takes.clear()
            with platform(
                app_settings,
                database,
                rate_limit_backend="database",
                rate_limit_client=client_limit,
                rate_limit_tenant=0,
            ) as client:
                for _ in range(200):
                    assert client.get("/api/v1/me", headers=first.headers).status_code in (
                        200,
                        429,
                    )
            assert len(takes) in expected, (client_limit, len(takes))
    finally:
        event.remove(Engine, "before_cursor_execute", count)


@pytest.mark.postgres_only
def test_a_cached_token_with_a_leased_token_needs_no_database(
    app_settings: Settings,
    database: Database,
    api: httpx.Client,
    person_token: object,
    tenant: TenantWorld,
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL, database rate limiter: once the token's state is cached and the process
    holds a lease of the caller's bucket, authenticating and rate limiting a request do no
    database work at all: not even a session (``/api/v1/me`` itself reads nothing)."""
    from typing import Any

    first, _ = two_clients(api, person_token, tenant, live_server)
    runs: list[str] = []
    run = database.run

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(getattr(fn, "__name__", repr(fn)))
        return await run(fn, *args, **kwargs)

    with platform(
        app_settings,
        database,
        rate_limit_backend="database",
        rate_limit_client=6000,
        rate_limit_tenant=0,
    ) as client:
        for _ in range(20):  # the state cached; leases of 1, 2, 4, 8, 16 tokens
            assert client.get("/api/v1/me", headers=first.headers).status_code == 200
        monkeypatch.setattr(database, "run", counted)
        answers = [client.get("/api/v1/me", headers=first.headers) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    assert all("ratelimit-remaining" in a.headers for a in answers)
    assert len(runs) <= 1, runs  # at most one lease taken (32 tokens) in these 20 requests
