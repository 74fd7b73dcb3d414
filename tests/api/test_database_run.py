"""Where a request's database work runs (docs/decisions/0010): on PostgreSQL in a greenlet on
the event loop over asyncpg, on SQLite in a worker thread; row-level
security and the tenant filter hold on either connection; a transaction never moves between
connections; blocking work that is not the database leaves the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from core.db import Database, off_loop
from core.orgs.models import OrgUnit
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld, make_tenant

T = TypeVar("T")


def on_loop(db: Database, fn: Callable[..., T], *args: Any) -> tuple[T, int]:
    """Run ``fn`` through ``db.run`` on a fresh event loop: its result and the loop's thread."""

    async def main() -> tuple[T, int]:
        return await db.run(fn, *args), threading.get_ident()

    return asyncio.run(main())


def test_run_uses_the_loop_on_postgres_and_a_worker_thread_on_sqlite(database: Database) -> None:
    world = make_tenant(database, "run")

    def work() -> tuple[int, type, int]:
        with database.tenant_session(world.id) as s:
            units = s.scalar(select(func.count()).select_from(OrgUnit)) or 0
            driver = type(s.connection().connection.driver_connection)
            return threading.get_ident(), driver, units

    (thread, driver, units), loop_thread = on_loop(database, work)
    assert units == len(world.units)
    if database.is_postgres:
        assert thread == loop_thread  # no worker thread
        assert issubclass(driver, asyncpg.Connection)
    else:
        assert thread != loop_thread
    # outside Database.run the same kind of session is synchronous
    with database.tenant_session(world.id) as s:
        assert not isinstance(s.connection().connection.driver_connection, asyncpg.Connection)


@pytest.mark.postgres_only
def test_row_level_security_holds_on_the_bridged_connection(database: Database) -> None:
    a, b = make_tenant(database, "rls-a"), make_tenant(database, "rls-b")

    def raw_count(tenant: TenantWorld) -> int:
        with database.tenant_session(tenant.id) as s:  # raw SQL: no ORM filter, only RLS
            return int(s.execute(text("SELECT count(*) FROM org_units")).scalar_one())

    assert on_loop(database, raw_count, a)[0] == len(a.units)
    assert on_loop(database, raw_count, b)[0] == len(b.units)


@pytest.mark.postgres_only
def test_a_transaction_stays_on_the_connection_it_began_on(database: Database) -> None:
    world = make_tenant(database, "stay")
    pid = text("SELECT pg_backend_pid()")

    # begun on the synchronous connection, continued inside Database.run on the same one
    session = database.tenant_session(world.id)
    first = session.execute(pid).scalar_one()
    again, _ = on_loop(database, lambda: session.execute(pid).scalar_one())
    assert again == first
    session.close()

    # begun inside Database.run: refused outside, with a message, and ended where it began
    session = database.tenant_session(world.id)

    async def main() -> None:
        await database.run(lambda: session.execute(pid))
        with pytest.raises(RuntimeError, match=r"began in Database\.run"):
            session.execute(pid)
        await database.end(session)

    asyncio.run(main())
    assert not session.in_transaction()


def test_off_loop_moves_blocking_work_to_a_worker_thread_inside_run(database: Database) -> None:
    (inside, _), loop_thread = on_loop(database, lambda: (off_loop(threading.get_ident), 0))
    if database.is_postgres:
        assert inside != loop_thread
    assert off_loop(threading.get_ident) == threading.get_ident()  # outside: called directly


@pytest.mark.postgres_only
def test_each_loop_gets_its_own_connections_and_releases_them(database: Database) -> None:
    db = Database(
        database.engine.url.render_as_string(hide_password=False),
        database.admin_engine.url.render_as_string(hide_password=False),
    )
    world = make_tenant(db, "loops")
    admin = create_engine(database.admin_engine.url)

    def backend() -> int:
        with db.tenant_session(world.id) as s:
            return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def alive(pids: list[int], expected: list[int]) -> list[int]:
        """The backends still there (a closed one's backend exits a moment after)."""
        deadline = time.monotonic() + 5
        while True:
            with admin.connect() as conn:
                rows = conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:p) ORDER BY pid"),
                    {"p": pids},
                )
                found = [r[0] for r in rows]
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    async def serve(release: bool) -> int:
        """What an app on one loop does: requests, then its shutdown releases the loop."""
        pid = await db.run(backend)
        assert await db.run(backend) == pid  # pooled: the same connection again
        if release:
            await db.release_loop()
        return pid

    try:
        first = asyncio.run(serve(release=True))
        unreleased = asyncio.run(serve(release=False))  # a loop that closed without it
        last = asyncio.run(serve(release=True))
        assert len({first, unreleased, last}) == 3  # a connection belongs to its loop
        assert alive([first, last], []) == []
    finally:
        db.dispose()
        admin.dispose()


def test_concurrent_requests_of_two_tenants_see_only_their_own(
    api: httpx.Client,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    person_token: TokenFor,
) -> None:
    """Many requests interleaved on the server's loop: each answers with its own tenant's
    cases only (the session, the RLS setting and the principal never leak between them)."""
    tokens = {w.id: person_token(w, "agent_bj") for w in (tenant_a, tenant_b)}

    def queue(world: TenantWorld) -> tuple[TenantWorld, list[dict[str, Any]]]:
        r = api.get("/api/v1/cases?limit=200", headers=auth(tokens[world.id]))
        assert r.status_code == 200, r.text
        return world, r.json()["items"]

    worlds = [tenant_a, tenant_b] * 20
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(queue, worlds))
    for world, items in answers:
        own_units = {str(u.id) for u in world.units.values()}
        assert str(world.cases["bj"].id) in {c["id"] for c in items}
        assert {c["unit_id"] for c in items} <= own_units
