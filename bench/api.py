"""Benchmark: the full HTTP stack beside a bare Litestar + asyncpg handler, on PostgreSQL.

    python bench/api.py                          # defaults: 10 tenants, 15 s phases, 3 rounds
    python bench/api.py --duration 20 --connections 16 --profile py-spy
    python bench/api.py --show-sql               # print the SQL the full stack issues, then stop

Two scenarios, each measured against two servers in the same run, with the same load generator
(``wrk``, fixed connections and duration, loopback only) and the same server settings (uvicorn
as ``insurdesk serve`` runs it: its ``auto`` event loop and HTTP parser, uvloop and httptools;
one process, ``access_log`` off, ``log_level`` warning, same host,
the heap frozen after start-up as ``insurdesk serve`` does,
:func:`core.app.freeze_startup_heap`). Both servers of a scenario run side by side and are
measured in ``--rounds`` rounds, alternately (full then bare, then bare then full, ...), so a
drift of the machine's speed during the run — on a shared virtual machine it can move either
server's throughput by a third within minutes — does not favour one of them; the report gives
each server's medians and the median of the rounds' ratios, with every round's ratio:

* **register** — ``POST /api/v1/cases``: a complaint at the Beijing branch, by its agent (a
  person's bearer token from the authorization-code flow). Full stack: auth middleware (token
  verification; the token's state and the caller's roles from the process's cache, decision
  0011, read again whenever they change), the rate limiter (``--rate-limit``: by default
  PostgreSQL buckets, the default without Redis, leased by the process; limits set high
  enough never to refuse), tenancy (RLS ``set_config``), the
  plugins' deadline rules and the deadline engine, number allocation, the case (its free text
  sealed), its clocks and reminders, the first timeline event, the outbox rows and the audit
  chain in one transaction, then the case detail as answer.
* **queue** — ``GET /api/v1/cases?assignee_id=<me>&open=true``: the agent's own open cases,
  nearest deadline first, first page (50), with per-case clock flags, free text opened and
  masked.

The **bare** server is a Litestar app defined below: ``async`` handlers on an asyncpg pool,
no ORM, no auth, no plugins, no rate limiter, no msgspec validation of the body beyond
``json.loads``. It replays the statements the full stack issues for the same request (captured
with ``before_cursor_execute``; ``--show-sql`` prints them), connecting as the same non-owner
role with the same ``set_config('app.tenant_id', …)`` so row-level security costs the same on
both sides; when the full stack's statements change, the bare handler follows them. The tenant
and the person (with the username the timeline and audit entries name) come from
``X-Bench-*`` headers that both servers receive (the full stack ignores them; the bare one
ignores ``Authorization``). Clock due times are a fixed 15 days /
7 days: the bare handler does no calendar arithmetic. Where the full stack writes a sealed
record (the case's free text, AES-256-GCM under the tenant's data key) the bare handler writes
an opaque token of the same size, and its queue returns that column as it is: it encrypts,
decrypts and masks nothing. (Its registered cases are unassigned, so they never appear in the
measured queue; the platform cannot open their token.)

Background work: the measured full-stack process runs **no** embedded relay, worker or
scheduler (``INSURDESK_BROKER_URL`` points at RabbitMQ, as in production, where they are
separate processes); outbox rows simply accumulate in the throw-away database.

The database is created on the local server, seeded (``--tenants`` tenants, ``--cases`` cases
each, registered through the real flows), and dropped at the end. The target (issue 4): the full
stack reaches at least half the bare handler's throughput in both scenarios.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_SUPERUSER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
"""Redis for ``--rate-limit redis`` (its ``insurdesk:rl:`` keys expire by themselves)."""
APP_ROLE = "insurdesk_app_bench"
HERE = Path(__file__).resolve()
TARGET_RATIO = 0.5
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
"""py-spy: on the PATH, or installed beside this interpreter (``pip install -e '.[bench]'``)."""


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the servers (each runs in its own process: ``python bench/api.py serve …``) ---------------


def full_settings(state: dict[str, Any], issuer: str) -> Any:
    """The platform settings of the measured full-stack server."""
    from core.settings import load_settings

    return load_settings(
        environ={},
        var_dir=Path(state["var_dir"]),
        database_url=state["app_url"],
        admin_database_url=state["admin_url"],
        issuer=issuer,
        log_level="WARNING",
        access_token_ttl=7200,
        broker_url="amqp://guest:guest@127.0.0.1:5672/",  # no embedded background work here
        rate_limit_backend=state.get("rate_limit", "database"),
        redis_url=REDIS_URL if state.get("rate_limit") == "redis" else "",
        rate_limit_client=10_000_000,
        rate_limit_tenant=10_000_000,
    )


def run_uvicorn(app: Any, port: int, workers: int = 1) -> None:
    """The same server settings for both apps: uvicorn as ``insurdesk serve`` runs it (its
    ``auto`` event loop and HTTP parser: uvloop and httptools, which the platform installs),
    one process (``insurdesk serve``'s setting; ``--workers`` for more, each app then built by
    :func:`worker_app` in its process), ``access_log`` off, ``log_level`` warning."""
    import uvicorn

    from core.api.http_protocol import server_options

    target: Any = app
    extra: dict[str, Any] = {}
    if workers > 1:
        target, extra = "api:worker_app", {"factory": True, "app_dir": str(HERE.parent)}
    uvicorn.run(
        target,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        **extra,
        **server_options(),
    )


def server_stack() -> str:
    """The event loop and HTTP parser uvicorn's ``auto`` picks here (both servers use them)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for fast, fallback in (("uvloop", "asyncio"), ("httptools", "h11")):
        try:
            parts.append(f"{fast} {version(fast)}")
        except PackageNotFoundError:
            parts.append(fallback)
    return ", ".join(parts)


# -- the bare server: Litestar + asyncpg, the same statements, nothing else ----------------------

BARE_CASE_COLUMNS = (
    "id, number, type, channel, state, received_at, unit_id, category_id, customer_id,"
    " policy_id, assignee_id, service_kind, complexity, parent_case_id, regulator_reference,"
    " regulator_due_date, regulator_reported_at, missing_materials, refer_to, decided_at,"
    " answered_at, review_decided_at, closed_at, next_due_at, version, created_at, updated_at,"
    " sealed_enc, reporter_anonymous"
)
"""The columns of the full stack's queue statement (``core.cases.controllers._queue_columns``:
what a ``CaseOut`` shows, the sealed record, ``reporter_anonymous``), in its order."""
BARE_FLAGS = (
    "EXISTS (SELECT 1 FROM case_clocks k WHERE k.case_id = cases.id AND k.tenant_id ="
    " cases.tenant_id AND k.provisional AND k.status IN ('running', 'paused', 'window'))"
    " AS flag_provisional, EXISTS (SELECT 1 FROM case_clocks k WHERE k.case_id = cases.id AND"
    " k.tenant_id = cases.tenant_id AND (k.status = 'breached' OR (k.status = 'running' AND"
    " k.due_at <= $4))) AS flag_breached"
)
BARE_SEALED = "v1:1:" + base64.b64encode(bytes(range(96))).decode()
"""What the bare handler writes where the full stack writes a sealed record: an opaque token of
the same shape and size. The bare handler encrypts, decrypts and masks nothing."""
BARE_WRITES = (
    "WITH c AS (INSERT INTO cases (tenant_id, id, number, type, channel, state, sealed_enc,"
    " key_version, received_at, unit_id, category_id, customer_id, policy_id, created_by_id,"
    " created_by, complexity, reporter_anonymous, missing_materials, next_due_at, version,"
    " last_event_seq, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'registered', $6, $7,"
    " $8, $9, $10, $11, $12, $13, $14, '[]'::json, false, '[]'::json, $15, 1, 1, $8, $8)),"
    " k AS (INSERT INTO case_clocks (tenant_id, id, case_id, clock, citation, source,"
    " statutory, amount, unit, started_at, due_at, last_day, status, paused_seconds,"
    " extensions, provisional, history, created_at, updated_at) VALUES"
    " ($1, $16, $2, 'complaint.decision', '2020-complaints/18', 'statutory_cn', true, 15,"
    " 'natural_days', $8, $17, $18, 'running', 0, 0, false, $19::json, $8, $8),"
    " ($1, $20, $2, 'complaint.missing_materials', 'seed:客户服务管理规定/12', 'group_policy',"
    " false, 5, 'working_days', $8, $15, $21, 'running', 0, 0, false, $19::json, $8, $8)),"
    " r AS (INSERT INTO clock_reminders (tenant_id, id, clock_id, case_id, remind_at, due_at,"
    " fraction, status) VALUES ($1, $22, $16, $2, $23, $17, 0.8, 'pending'),"
    " ($1, $24, $20, $2, $25, $15, 0.8, 'pending') ON CONFLICT (tenant_id, clock_id)"
    " DO UPDATE SET remind_at = excluded.remind_at, due_at = excluded.due_at),"
    " e AS (INSERT INTO case_events (tenant_id, id, case_id, seq, at, recorded_at, kind,"
    " actor_id, actor, to_state, before, after, data, sealed_enc, key_version) VALUES"
    " ($1, $26, $2, 1, $8, $8, 'registered', $13, $14, 'registered', '{}'::json, $27::json,"
    " $28::json, $6, $7)),"
    " o AS (INSERT INTO outbox (tenant_id, id, event_type, payload, status, attempts,"
    " created_at, available_at) VALUES ($1, $29, 'case.created', $31::json, 'pending', 0, $8,"
    " $8), ($1, $30, 'case.follow_up', $31::json, 'pending', 0, $8, $8)),"
    " h AS (UPDATE audit_heads SET seq = $32, hash = $33, at = $8 WHERE tenant_id = $1),"
    " a AS (INSERT INTO audit_log (tenant_id, id, seq, at, actor_kind, actor, actor_id, action,"
    " target_type, target_id, details, prev_hash, hash) VALUES ($1, $34, $32, $8, 'person',"
    " $14, $13::text, 'case.registered', 'case', $2::text, $27::json, $35, $33))"
    " SELECT 1"
)
"""The registration's writes after the counter and the audit head: the case, two clocks, two
reminders, the event, two outbox rows, the head's move and the audit entry, in one statement
of data-modifying CTEs, as the full stack's write batch sends them on PostgreSQL."""


@contextlib.asynccontextmanager
async def tenant_transaction(conn: Any, tenant: uuid.UUID, *, commit: bool) -> AsyncIterator[None]:
    """The bare handlers' transaction, begun as the full stack's (``Database.tenant_write``,
    ``tenant_read``): ``BEGIN`` with the RLS tenant in one round trip, the same SQL; then
    ``COMMIT`` (``commit``) or ``ROLLBACK``, and ``ROLLBACK`` on an error."""
    from core.db_driver import BEGIN_TENANT

    await conn.execute(BEGIN_TENANT.format(tenant=tenant))
    try:
        yield
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT" if commit else "ROLLBACK")


def bare_app(state: dict[str, Any]) -> Any:
    """The bare handlers: what the full stack's statements do, written by hand on asyncpg."""
    import hashlib

    import asyncpg
    from litestar import Litestar, Request, get, post

    from core.db import POOL_OVERFLOW, POOL_SIZE, new_id

    dsn = state["app_url"].replace("postgresql+psycopg://", "postgresql://")
    pool: dict[str, Any] = {}

    async def open_pool(app: Litestar) -> None:
        # the same limit as the full stack's pool (core.db): as many connections at most
        pool["p"] = await asyncpg.create_pool(
            dsn, min_size=min(10, POOL_SIZE), max_size=POOL_SIZE + POOL_OVERFLOW
        )

    async def close_pool(app: Litestar) -> None:
        await pool["p"].close()

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @post("/api/v1/cases", status_code=201)
    async def register(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = json.loads(await request.body())
        tenant = uuid.UUID(request.headers["x-bench-tenant"])
        person = uuid.UUID(request.headers["x-bench-person"])
        unit_id = uuid.UUID(body["unit_id"])
        now = dt.datetime.now(dt.UTC)
        actor_name = f"person:{request.headers['x-bench-username']}"
        async with pool["p"].acquire() as conn, tenant_transaction(conn, tenant, commit=True):
            # One read of tenant, unit, customer, policy, category and key, as the full stack.
            found = await conn.fetchrow(
                "SELECT t.*, u.*, c.id AS c_id, p.*, k.id AS k_id, (SELECT version FROM"
                " tenant_keys WHERE tenant_id = $1 AND purpose = 'data' AND status = 'active'"
                " FOR SHARE) AS key_version FROM tenants t"
                " LEFT JOIN org_units u ON u.tenant_id = $1 AND u.id = $2"
                " LEFT JOIN customers c ON c.tenant_id = $1 AND c.id = $3"
                " LEFT JOIN policies p ON p.tenant_id = $1 AND p.id = $4"
                " LEFT JOIN case_categories k ON k.tenant_id = $1 AND k.code = $5"
                " WHERE t.id = $1",
                tenant,
                unit_id,
                uuid.UUID(body["customer_id"]),
                uuid.UUID(body["policy_id"]),
                body["category"],
            )
            unit, category = {"id": unit_id}, {"id": found["k_id"]}
            # The case number's counter and the audit head in one statement, as the full
            # stack's lock_head_with.
            head = await conn.fetchrow(
                "WITH w AS (INSERT INTO case_counters (tenant_id, id, key, value)"
                " VALUES ($1, $2, $3, 1) ON CONFLICT (tenant_id, key) DO UPDATE"
                " SET value = case_counters.value + 1 RETURNING value),"
                " h AS (INSERT INTO audit_heads (tenant_id, id, seq, hash) VALUES ($1, $4, 0, $5)"
                " ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq RETURNING seq, hash)"
                " SELECT w.value, h.seq, h.hash FROM w JOIN h ON true",
                tenant,
                new_id(),
                f"number:bare|prefix=TS|year={now.year}",
                new_id(),
                "0" * 64,
            )
            seq = head["value"]
            case_id, number = new_id(), f"TS-{now.year}-B{seq:06d}"
            decision_due = now + dt.timedelta(days=15)
            materials_due = now + dt.timedelta(days=7)
            decision, materials = new_id(), new_id()
            after = {"number": number, "type": body["type"], "state": "registered"}
            digest = hashlib.sha256(f"{head['hash']}|{case_id}".encode()).hexdigest()
            # The rest in one statement, as the full stack's write batch (decision 0012).
            await conn.execute(
                BARE_WRITES,
                tenant,
                case_id,
                number,
                body["type"],
                body["channel"],
                BARE_SEALED,
                found["key_version"],
                now,
                unit_id,
                category["id"],
                uuid.UUID(body["customer_id"]),
                uuid.UUID(body["policy_id"]),
                person,
                actor_name,
                materials_due,
                decision,
                decision_due,
                decision_due.date(),
                json.dumps({"rule": {"bare": True}, "events": []}),
                materials,
                materials_due.date(),
                new_id(),
                now + (decision_due - now) * 0.8,
                new_id(),
                now + (materials_due - now) * 0.8,
                new_id(),
                json.dumps(after),
                json.dumps({"clocks": [str(decision), str(materials)]}),
                new_id(),
                new_id(),
                json.dumps({"case_id": str(case_id), "number": number}),
                head["seq"] + 1,
                digest,
                new_id(),
                head["hash"],
            )
        case = {
            "id": case_id,
            "number": number,
            "state": "registered",
            "unit_id": unit["id"],
            "category_id": category["id"],
            **{k: body.get(k) for k in ("type", "channel", "subject", "description")},
            "received_at": now,
            "next_due_at": materials_due,
        }
        clocks = [
            {"id": decision, "clock": "complaint.decision", "due_at": decision_due},
            {"id": materials, "clock": "complaint.missing_materials", "due_at": materials_due},
        ]
        return {
            "case": case,
            "clocks": [{**c, "status": "running"} for c in clocks],
            "actions": ["request_materials", "accept", "not_accept", "transfer", "withdraw"],
            "attachments": [],
        }

    @get("/api/v1/cases")
    async def queue(
        request: Request[Any, Any, Any], assignee_id: uuid.UUID, open: bool = True
    ) -> dict[str, Any]:
        tenant = uuid.UUID(request.headers["x-bench-tenant"])
        path = request.headers["x-bench-path"]
        now = dt.datetime.now(dt.UTC)
        async with pool["p"].acquire() as conn, tenant_transaction(conn, tenant, commit=False):
            rows = await conn.fetch(
                f"SELECT {BARE_CASE_COLUMNS}, {BARE_FLAGS} FROM cases WHERE cases.unit_id IN"
                " (SELECT id FROM org_units WHERE tenant_id = $2 AND path LIKE $1 || '%') AND"
                " state NOT IN ('closed', 'withdrawn') AND assignee_id = $3 AND tenant_id = $2"
                " ORDER BY next_due_at ASC NULLS LAST, id LIMIT 51",
                path,
                tenant,
                assignee_id,
                now,
            )
            page = rows[:50]
        items = [dict(r) for r in page]
        return {"items": items, "next_cursor": "x" if len(rows) > 50 else None}

    return Litestar(
        route_handlers=[healthz, register, queue],
        on_startup=[open_pool],
        on_shutdown=[close_pool],
        debug=False,
    )


def built_app(kind: str, state: dict[str, Any], port: int) -> Any:
    """The app of a ``full`` server (the platform's ``core.app.create_app``) or a ``bare`` one,
    its start-up heap frozen, as ``app_from_env`` (``insurdesk serve``) does."""
    from core.app import create_app, freeze_startup_heap
    from core.db import Database

    if kind == "full":
        db = Database(state["app_url"], state["admin_url"])
        app = create_app(full_settings(state, f"http://127.0.0.1:{port}"), db)
    else:
        app = bare_app(state)
    freeze_startup_heap()
    return app


def worker_app() -> Any:
    """The app of one worker process when a server runs several (``--workers``): built from
    the state file, kind and port the serving process put in the environment."""
    state = json.loads(Path(os.environ["BENCH_STATE"]).read_text())
    return built_app(os.environ["BENCH_KIND"], state, int(os.environ["BENCH_PORT"]))


def serve(kind: str, state: dict[str, Any], port: int, capture: Path | None) -> None:
    """Run a server under uvicorn with the same settings for both kinds: one process, or
    ``--workers`` processes (not when capturing the full stack's statements into
    ``capture``: that server is one process)."""
    if capture is not None:
        from sqlalchemy import Engine, event

        out = capture.open("a", encoding="utf-8")

        def log_sql(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            out.write(json.dumps({"sql": statement, "params": repr(params)[:1500]}) + "\n")
            out.flush()

        # every engine: the requests' statements go through the bridged engine that
        # Database.run makes on first use (decision 0010), not through db.engine
        event.listen(Engine, "before_cursor_execute", log_sql)
    elif state.get("workers", 1) > 1:
        run_uvicorn(None, port, workers=state["workers"])
        return
    run_uvicorn(built_app(kind, state, port), port)


# -- set-up: database, tenants, seed, tokens ---------------------------------------------------


@dataclass
class Caller:
    """One agent of one tenant, as the load generator sends it."""

    tenant_id: str
    person_id: str
    unit_id: str
    customer_id: str
    policy_id: str
    unit_path: str
    token: str = ""
    username: str = "agent_bj"


class Throwaway:
    """A database on the local server, created here and dropped at the end."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine, text

        self.engine = create_engine(PG_SUPERUSER, isolation_level="AUTOCOMMIT")
        self.name = f"insurdesk_bench_api_{uuid.uuid4().hex[:8]}"
        with self.engine.connect() as conn:
            if not conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE}
            ).scalar():
                conn.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        base = self.engine.url
        self.admin_url = base.set(database=self.name).render_as_string(hide_password=False)
        self.app_url = base.set(database=self.name, username=APP_ROLE).render_as_string(
            hide_password=False
        )

    def analyze(self) -> None:
        """``ANALYZE`` the database: what autovacuum does on a production server (it is off on
        some test machines), so the planner knows the tables as they are after seeding and
        after the registrations of the first scenario."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
        finally:
            engine.dispose()

    def drop(self) -> None:
        """Drop the database (connections forced off)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.engine.dispose()


def seed(state: dict[str, Any], tenants: int, cases: int) -> list[Any]:
    """``tenants`` tenants (the test factory's world), ``cases`` cases each through the real
    registration flow: 60 % at Beijing (half of them the Beijing agent's), 40 % at Shanghai,
    received over the last 40 days (so some clocks are breached)."""
    from core.auth.guards import load_access
    from core.auth.principal import Principal
    from core.cases.flows import make_context, register_case
    from core.cases.schemas import CaseCreate
    from core.cases.storage import LocalStorage
    from core.db import Database
    from core.logging import configure_logging
    from core.people.permissions import ALL_PERMISSIONS
    from core.plugins.host import PluginHost
    from core.plugins.registry import build_registry
    from tests.factories import make_tenant

    configure_logging("ERROR")
    db = Database(state["app_url"], state["admin_url"])
    host = PluginHost(build_registry(), db, listen=False)
    store = LocalStorage(Path(state["var_dir"]) / "attachments")
    worlds = []
    now = dt.datetime.now(dt.UTC)
    categories = ["sales", "underwriting", "claims", "policy_service", "premium", "other"]
    for t in range(tenants):
        world = make_tenant(db, f"bench{t}")
        worlds.append(world)
        admin = world.people["admin"]
        with db.tenant_transaction(world.id) as s:
            principal = Principal(
                tenant_id=world.id,
                subject=str(admin.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=admin.id,
            )
            ctx = make_context(s, load_access(s, principal), plugins=host, storage=store)
            for i in range(cases):
                unit = "bj" if i % 10 < 6 else "sh"
                assignee = (
                    world.people["agent_bj"].id
                    if unit == "bj" and i % 2 == 0
                    else world.people[f"agent_{unit}"].id
                    if i % 3 == 0
                    else None
                )
                received = now - dt.timedelta(minutes=(i * 7919) % (40 * 24 * 60))
                body = {
                    "type": "complaint",
                    "channel": ["hotline", "online", "letter"][i % 3],
                    "subject": f"投诉 {i}",
                    "unit_id": str(world.units[unit].id),
                    "customer_id": str(world.customers[unit].id),
                    "policy_id": str(world.policies[unit].id),
                    "category": categories[i % len(categories)],
                    "received_at": received.isoformat(),
                    "assignee_id": str(assignee) if assignee else None,
                }
                import msgspec

                register_case(ctx, msgspec.convert(body, CaseCreate, str_keys=True))
                if i % 200 == 199:
                    s.flush()
    host.close()
    db.dispose()
    return worlds


def person_tokens(state: dict[str, Any], worlds: list[Any], base: str) -> list[Caller]:
    """Each tenant's Beijing agent, signed in through the login form (authorization code)."""
    from core.db import Database
    from tests.cases.http import person_token

    db = Database(state["app_url"], state["admin_url"])
    callers = []
    for w in worlds:
        callers.append(
            Caller(
                tenant_id=str(w.id),
                person_id=str(w.people["agent_bj"].id),
                unit_id=str(w.units["bj"].id),
                customer_id=str(w.customers["bj"].id),
                policy_id=str(w.policies["bj"].id),
                unit_path=w.units["bj"].path,
                token=person_token(db, w, base, "agent_bj"),
            )
        )
    db.dispose()
    return callers


class Server:
    """``python bench/api.py serve KIND`` in a subprocess, on a free loopback port."""

    def __init__(self, kind: str, state_file: Path, port: int, capture: Path | None = None) -> None:
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(HERE), "serve", kind, str(state_file), str(self.port)]
        if capture is not None:
            cmd.append(str(capture))
        self.proc = subprocess.Popen(cmd, cwd=HERE.parents[1])
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited with {self.proc.returncode}")
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the {self.kind} server did not start")

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful stop), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def register_body(c: Caller) -> dict[str, Any]:
    """The complaint both servers register (the same JSON the wrk script sends)."""
    return {
        "type": "complaint",
        "channel": "hotline",
        "subject": "理赔进度慢",
        "description": "报案后三周无人联系",
        "unit_id": c.unit_id,
        "customer_id": c.customer_id,
        "policy_id": c.policy_id,
        "category": "claims",
    }


def headers(c: Caller) -> dict[str, str]:
    """What both servers receive: the bearer token and the bare server's identity headers."""
    return {
        "Authorization": f"Bearer {c.token}",
        "Content-Type": "application/json",
        "X-Bench-Tenant": c.tenant_id,
        "X-Bench-Person": c.person_id,
        "X-Bench-Path": c.unit_path,
        "X-Bench-Username": c.username,
    }


def queue_path(c: Caller) -> str:
    """The agent's queue, first page."""
    return f"/api/v1/cases?assignee_id={c.person_id}&open=true"


def one_of_each(base: str, c: Caller) -> tuple[Any, Any]:
    """One registration and one queue page (checked), returning both responses."""
    import httpx

    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/api/v1/cases", json=register_body(c), headers=headers(c))
        assert r.status_code == 201, r.text
        q = http.get(queue_path(c), headers=headers(c))
        assert q.status_code == 200, q.text
    return r, q


# -- the load generator: wrk with a Lua script, the same for both servers -----------------------

LUA = """
local callers = %(callers)s
local scenario = "%(scenario)s"
local n = 0
request = function()
  n = n + 1
  local c = callers[(n %% #callers) + 1]
  if scenario == "register" then
    return wrk.format("POST", "/api/v1/cases", c.headers, c.body)
  end
  return wrk.format("GET", c.path, c.headers)
end
local codes = {}
response = function(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d,'
    .. ' "non2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def lua_string(value: str) -> str:
    """A Lua string literal."""
    return json.dumps(value, ensure_ascii=True)


def lua_script(callers: list[Caller], scenario: str) -> str:
    """The wrk script: round-robin over the tenants' agents, one request shape per scenario."""
    entries = []
    for c in callers:
        hdrs = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers(c).items())
        entries.append(
            "{headers = {"
            + hdrs
            + "}, body = "
            + lua_string(json.dumps(register_body(c)))
            + ", path = "
            + lua_string(queue_path(c))
            + "}"
        )
    return LUA % {"callers": "{" + ",\n".join(entries) + "}", "scenario": scenario}


@dataclass
class Result:
    """One measured phase."""

    scenario: str
    server: str
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    cpu_ms: float | None = None
    """The server process's CPU time (user + system, all threads) per request."""
    load: float = 0.0
    """The host's 1-minute load average at the end of the phase (other work on the machine)."""
    round: int = 0
    """Which round (``--rounds``) the phase belongs to."""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds so far of process ``pid`` and its running children (a
    server's worker processes), from Linux ``/proc``; None elsewhere."""
    own = _stat(Path(f"/proc/{pid}/stat"))
    if own is None:
        return None
    ticks = own[1]
    for path in Path("/proc").glob("[0-9]*/stat"):
        child = _stat(path)
        if child is not None and child[0] == pid:
            ticks += child[1]
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[int, int] | None:
    """(parent pid, user + system clock ticks) from a ``/proc/<pid>/stat`` file; None when the
    process is gone."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    """One wrk run (one thread: the servers need the second core more than wrk does)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return dict(json.loads(line.removeprefix("RESULT ")))


def measure(server: Server, scenario: str, script: Path, args: argparse.Namespace) -> Result:
    """Warm up, then measure one scenario on one server."""
    run_wrk(server.url, script, args.warmup, args.connections)
    before = cpu_seconds(server.proc.pid)
    r = run_wrk(server.url, script, args.duration, args.connections)
    after = cpu_seconds(server.proc.pid)
    seconds = r["duration_us"] / 1e6
    return Result(
        scenario=scenario,
        server=server.kind,
        rps=r["requests"] / seconds,
        p50_ms=r["p50_us"] / 1000,
        p95_ms=r["p95_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        requests=r["requests"],
        non2xx=r["non2xx"] + r["socket_errors"],
        cpu_ms=(
            1000 * (after - before) / r["requests"]
            if before is not None and after is not None and r["requests"]
            else None
        ),
        load=os.getloadavg()[0],
    )


def profile_full(
    state_file: Path, port: int, scenario: str, script: Path, work: Path, args: argparse.Namespace
) -> str:
    """Sample the full-stack server with ``py-spy record --gil`` under the same load: only the
    thread holding the GIL is sampled, so the shares are shares of the server's Python CPU
    (waiting on PostgreSQL or on the network does not appear)."""
    server = Server("full", state_file, port)
    try:
        run_wrk(server.url, script, args.warmup, args.connections)
        raw = work / f"profile-{scenario}.txt"
        spy = subprocess.Popen(
            [
                PY_SPY,
                "record",
                "--gil",
                "--subprocesses",  # a server's worker processes (--workers)
                "-p",
                str(server.proc.pid),
                "-d",
                str(args.duration),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        run_wrk(server.url, script, args.duration, args.connections)
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            return f"py-spy failed: {err.decode()[-500:]}"
    finally:
        server.stop()
    return summarize_profile(raw)


PARTS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("auth: JWT signature and claims", (("core/auth/tokens.py", "verify"),)),
    ("auth: token state, roles, rate-limit buckets", (("core/auth/",), ("core/api/ratelimit",))),
    ("privacy: seal, open, mask", (("core/privacy/",),)),
    (
        "deadline engine, calendar, plugins",
        (("core/deadlines/",), ("core/calendars/",), ("core/plugins/",)),
    ),
    ("audit chain", (("core/audit/",),)),
    ("outbox and reminders", (("core/outbox/",), ("core/scheduler/",))),
    ("case flows (registration)", (("core/cases/flows.py",), ("core/cases/services.py",))),
    ("case API handlers: queue rows, rendering", (("core/cases/",), ("core/db.py",))),
)
"""Which part of the platform a sample's Python CPU serves: its innermost frame that matches
(all the strings of one alternative), so SQLAlchemy and driver work counts for the platform
code that asked for it."""
LIBRARIES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("SQLAlchemy", (("sqlalchemy/",),)),
    ("database drivers (asyncpg, psycopg)", (("asyncpg",), ("psycopg",))),
    ("Litestar / msgspec (routing, DI, serialization)", (("litestar/",), ("msgspec",))),
    (
        "uvicorn / asyncio / threads",
        (
            ("uvicorn/",),
            ("asyncio/",),
            ("anyio/",),
            ("threading",),
            ("concurrent/",),
            ("greenlet",),
        ),
    ),
)
"""Where a sample's CPU is spent, by library: the first match from the leaf up (the platform's
own code when a ``core/`` or ``plugins/`` frame comes first)."""


FRAMEWORK = ("(litestar/", "(uvicorn/", "(asyncio/", "(anyio/")
"""Frames of the HTTP server and the framework. A sample whose innermost platform frame lies
*above* one of them (an ASGI middleware's ``__call__`` that passes the request on) is the
framework's work, not that middleware's."""


def _first(frames: list[str], table: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]) -> str:
    for frame in reversed(frames):
        for name, alternatives in table:
            if any(all(k in frame for k in alt) for alt in alternatives):
                return name
        if any(f in frame for f in FRAMEWORK):
            return ""  # the framework's work below a pass-through middleware
    return ""


def _library(frames: list[str]) -> str:
    for frame in reversed(frames):
        if "core/" in frame or "plugins/" in frame:
            return "platform code itself"
        for name, alternatives in LIBRARIES:
            if any(all(k in frame for k in alt) for alt in alternatives):
                return name
    return "other"


def summarize_profile(raw: Path) -> str:
    """Shares of the server's Python CPU (GIL samples) by part of the platform and by
    library, and the ten hottest leaf functions."""
    parts: dict[str, int] = {}
    libraries: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
        part = _first(frames, PARTS) or "outside the platform's code (HTTP server, framework)"
        parts[part] = parts.get(part, 0) + count
        library = _library(frames)
        libraries[library] = libraries.get(library, 0) + count
    lines = [f"{total} samples holding the GIL"]
    for title, table in (("by part of the platform", parts), ("by library", libraries)):
        lines.append(f"  {title}:")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {100 * count / max(total, 1):5.1f} %  {name}")
    lines.append("  hottest leaf frames:")
    for leaf, count in sorted(leaves.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  {100 * count / max(total, 1):5.1f} %  {leaf}")
    return "\n".join(lines)


def capture_sql(
    state_file: Path, port: int, work: Path, c: Caller
) -> dict[str, list[dict[str, str]]]:
    """The statements the full stack sends for one registration and one queue page."""
    capture = work / "sql.jsonl"
    server = Server("full", state_file, port, capture)
    try:
        one_of_each(server.url, c)  # warm: caches, prepared plugins
        capture.write_text("")
        import httpx

        with httpx.Client(base_url=server.url, timeout=30) as http:
            http.post("/api/v1/cases", json=register_body(c), headers=headers(c))
            mark = len(capture.read_text().splitlines())
            http.get(queue_path(c), headers=headers(c))
        lines = [json.loads(x) for x in capture.read_text().splitlines()]
    finally:
        server.stop()
    return {"register": lines[:mark], "queue": lines[mark:]}


def _ms(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else "      -"


def report(results: list[Result], sql: dict[str, Any], args: argparse.Namespace) -> bool:
    """Print the table (per server the medians of its rounds; the ratio is the median of the
    rounds' ratios, each round's two phases measured one after the other); True when every
    scenario meets the target ratio without errors."""
    ok = True
    print(
        f"\n{args.connections} connections, {args.duration} s per phase, {args.rounds} rounds,"
        f" {args.tenants} tenants x {args.cases} seeded cases; uvicorn with {server_stack()},"
        f" {args.workers} worker process{'es' if args.workers > 1 else ''} per server"
    )
    print("scenario  | full rps  p50 ms  p95 ms cpu/req | bare rps  p50 ms  p95 ms cpu/req | ratio")
    for scenario in ("register", "queue"):
        mine = [r for r in results if r.scenario == scenario]
        full = [r for r in mine if r.server == "full"]
        bare = [r for r in mine if r.server == "bare"]
        ratios = [f.rps / b.rps for f, b in zip(full, bare, strict=True)]
        ratio = statistics.median(ratios)
        errors = sum(r.non2xx for r in mine)
        ok = ok and ratio >= TARGET_RATIO and errors == 0

        def cols(rs: list[Result]) -> str:
            median = statistics.median
            cpu = [r.cpu_ms for r in rs if r.cpu_ms is not None]
            return (
                f"{median([r.rps for r in rs]):8.1f} {median([r.p50_ms for r in rs]):7.1f}"
                f" {median([r.p95_ms for r in rs]):7.1f} {_ms(median(cpu) if cpu else None)}"
            )

        print(
            f"{scenario:9} | {cols(full)} | {cols(bare)} | {ratio:5.2f}  (rounds:"
            f" {', '.join(f'{x:.2f}' for x in ratios)}; errors {errors})"
        )
    print(f"target: full >= {TARGET_RATIO:.0%} of bare -> {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Set up, measure both scenarios on both servers, report, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--cases", type=int, default=300, help="seeded cases per tenant")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured phase")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per phase")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured phases per server and scenario"
    )
    parser.add_argument("--profile", choices=["none", "py-spy"], default="py-spy")
    parser.add_argument(
        "--rate-limit",
        choices=["database", "redis", "off"],
        default="database",
        help="the full stack's rate-limit backend (default: database, PostgreSQL without Redis)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of each server (default 1, as insurdesk serve runs)",
    )
    parser.add_argument("--show-sql", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    db = Throwaway()
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        from core.migrate import upgrade

        upgrade(db.admin_url, db.app_url)
        state = {
            "admin_url": db.admin_url,
            "app_url": db.app_url,
            "var_dir": str(work),
            "rate_limit": args.rate_limit,
            "workers": args.workers,
        }
        state_file = work / "state.json"
        state_file.write_text(json.dumps(state))
        t0 = time.monotonic()
        worlds = seed(state, args.tenants, args.cases)
        took = time.monotonic() - t0
        print(f"seeded {args.tenants} tenants x {args.cases} cases in {took:.0f} s")
        full_port = free_port()  # the issuer is the URL: the full server keeps its port
        server = Server("full", state_file, full_port)
        try:
            callers = person_tokens(state, worlds, server.url)
        finally:
            server.stop()
        (work / "callers.json").write_text(json.dumps([c.__dict__ for c in callers]))
        sql = capture_sql(state_file, full_port, work, callers[0])
        if args.show_sql:
            for name, statements in sql.items():
                print(f"== {name}: {len(statements)} statements")
                for s in statements:
                    print(" ".join(s["sql"].split()))
                    print("   ", s["params"])
            return 0
        results: list[Result] = []
        for scenario in ("register", "queue"):
            script = work / f"{scenario}.lua"
            script.write_text(lua_script(callers, scenario))
            db.analyze()  # the registrations so far included
            servers = {}
            try:
                for kind in ("full", "bare"):
                    port = full_port if kind == "full" else free_port()
                    servers[kind] = Server(kind, state_file, port)
                # Rounds alternate which server goes first, so a drift of the machine's speed
                # during the run does not favour one of them.
                for i in range(args.rounds):
                    for kind in ("full", "bare") if i % 2 == 0 else ("bare", "full"):
                        results.append(measure(servers[kind], scenario, script, args))
                        results[-1].round = i
                        print(results[-1])
            finally:
                for server in servers.values():
                    server.stop()
        profiles = {}
        if args.profile == "py-spy":
            for scenario in ("register", "queue"):
                profiles[scenario] = profile_full(
                    state_file, full_port, scenario, work / f"{scenario}.lua", work, args
                )
                print(f"== profile of the full stack, {scenario}:\n{profiles[scenario]}")
        ok = report(results, sql, args)
        if args.out:
            args.out.write_text(
                json.dumps(
                    {
                        "results": [r.__dict__ for r in results],
                        "profiles": profiles,
                        "statements": {k: len(v) for k, v in sql.items()},
                        "args": {k: str(v) for k, v in vars(args).items()},
                    },
                    indent=2,
                    ensure_ascii=False,
                )
            )
        return 0 if ok else 1
    finally:
        db.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        kind, state_path, port = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        cap = Path(sys.argv[5]) if len(sys.argv) > 5 else None
        st = json.loads(state_path.read_text())
        os.environ.update(BENCH_STATE=str(state_path), BENCH_KIND=kind, BENCH_PORT=str(port))
        serve(kind, st, port, cap)
        sys.exit(0)
    sys.exit(main())
