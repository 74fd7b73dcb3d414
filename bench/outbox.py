"""Benchmark: outbox → RabbitMQ → actor → delivery log, end to end, on PostgreSQL.

    python bench/outbox.py                                  # defaults: see --help
    python bench/outbox.py --events 20000 --workers 2 --threads 8 --rate 500 --seconds 15

What runs (each its own process, as in production):

* a **receiver** (uvicorn, a minimal ASGI app) standing for the integrator's webhook endpoint;
* the **relay** (``Relay`` in a ``BackgroundRuntime`` with ``consume=False``);
* ``--workers`` **worker** processes with ``--threads`` threads each, consuming from RabbitMQ
  with the real ``webhook`` channel (signed messages) and the real delivery log;
* this process, which creates a throw-away PostgreSQL database (the application connecting as
  a non-owner role, row-level security on), a tenant, and then emits events the way a request
  does: one ``emit`` in a committed transaction.

Phase 1, **throughput**: ``--events`` events are committed first (100 per transaction) while
no relay runs, as after a broker outage; then the relay starts, and the time from its start to
the last delivery recorded ``sent`` gives notifications per second through outbox → broker →
actor → delivery log. (Committing events at the same time on this machine would measure the
emitting process too: it shares the CPUs.)

Phase 2, **latency**: events are committed one per transaction at ``--rate`` per second (default
half the measured throughput, capped at 500/s as the target states it) for ``--seconds``;
the latency of each is ``sent_at`` of its delivery minus the time its transaction committed.
Prints the median and the 95th percentile.

Targets (issue 5): at least 1,000 notifications/s end to end; p95 under 1 s at half that rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_SUPERUSER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
APP_ROLE = "insurdesk_app_bench"
EVENT = "bench.notification"
SECRET = "whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC0zMmI="


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- roles run in subprocesses -----------------------------------------------------------------


def run_receiver(port: int) -> None:
    """The webhook endpoint: accepts every POST with 204."""
    import uvicorn

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def run_background(role: str) -> None:
    """The relay (role ``relay``) or a consuming worker (role ``worker``), until SIGTERM."""
    from core.db import Database
    from core.models import import_all_models
    from core.notifications.channels import ResolvedChannel, StaticChannels
    from core.outbox.runtime import BackgroundRuntime, RuntimeOptions
    from core.settings import load_settings
    from plugins.webhook import WebhookChannel

    import_all_models()
    settings = load_settings()
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    hook = {"url": os.environ["BENCH_WEBHOOK_URL"], "secret": SECRET, "events": ["*"]}
    channels = StaticChannels([ResolvedChannel(WebhookChannel(hook), "webhook", hook)])
    options = RuntimeOptions(
        relay=role == "relay",
        consume=role == "worker",
        namespace=os.environ["BENCH_NAMESPACE"],
        worker_threads=int(os.environ.get("BENCH_THREADS", "8")),
        message_size=int(os.environ.get("BENCH_MESSAGE_SIZE", "20")),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with BackgroundRuntime(settings, db, options, channels=channels):
        print("ready", flush=True)
        stop.wait()


# -- the driver ---------------------------------------------------------------------------------


def create_database() -> tuple[str, str, str]:
    """A throw-away database; returns (name, owner URL, application-role URL)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_SUPERUSER, isolation_level="AUTOCOMMIT")
    name = f"insurdesk_bench_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        if not conn.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE}
        ).scalar():
            conn.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    admin = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    app = f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:5432/{name}"
    return name, admin, app


def drop_database(name: str) -> None:
    """Drop the benchmark's database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_SUPERUSER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def delete_queues(amqp_url: str, namespace: str) -> None:
    """Remove the benchmark's queues from RabbitMQ."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for suffix in ("", ".DQ", ".XQ"):
        channel.queue_delete(f"{namespace}.outbox{suffix}")
    connection.close()


def spawn(role: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """Start this script in ``role``; wait for its ``ready`` line (receivers: the port)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", role, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if role in ("relay", "worker"):
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                break
        else:
            raise SystemExit(f"{role} exited: {proc.wait()}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


def wait_port(port: int, timeout: float = 20) -> None:
    """Wait until something listens on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def sent_count(db: object, tenant_id: uuid.UUID) -> int:
    """Deliveries recorded ``sent`` for the tenant."""
    from sqlalchemy import func, select

    from core.notifications.models import Delivery

    with db.tenant_session(tenant_id) as session:  # type: ignore[attr-defined]
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "sent")
            )
            or 0
        )


def wait_sent(db: object, tenant_id: uuid.UUID, target: int, timeout: float) -> float:
    """Wait until ``target`` deliveries are sent; returns when (perf counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if sent_count(db, tenant_id) >= target:
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit(f"only {sent_count(db, tenant_id)} of {target} delivered in {timeout} s")


def emit_backlog(db: object, tenant_id: uuid.UUID, events: int, phase: str) -> None:
    """Commit ``events`` events, 100 per transaction."""
    from core.outbox import emit

    for first in range(0, events, 100):
        with db.tenant_transaction(tenant_id) as session:  # type: ignore[attr-defined]
            for n in range(first, min(events, first + 100)):
                emit(session, EVENT, {"n": n, "phase": phase})


def phase_latency(
    db: object, tenant_id: uuid.UUID, rate: float, seconds: float, already: int
) -> list[float]:
    """Commit one event per transaction at ``rate``/s; return commit-to-sent latencies (s)."""
    from sqlalchemy import select

    from core.notifications.models import Delivery
    from core.outbox import emit

    committed: dict[uuid.UUID, dt.datetime] = {}
    interval = 1.0 / rate
    count = int(rate * seconds)
    start = time.perf_counter()
    for n in range(count):
        target = start + n * interval
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        with db.tenant_transaction(tenant_id) as session:  # type: ignore[attr-defined]
            row_id = emit(session, EVENT, {"n": n, "phase": "latency"})
        committed[row_id] = dt.datetime.now(dt.UTC)  # type: ignore[index]
    achieved = count / (time.perf_counter() - start)
    wait_sent(db, tenant_id, already + count, timeout=300)
    with db.tenant_session(tenant_id) as session:  # type: ignore[attr-defined]
        rows = session.execute(
            select(Delivery.outbox_id, Delivery.sent_at).where(
                Delivery.outbox_id.in_(list(committed))
            )
        ).all()
    print(f"  latency phase: {count} events at {achieved:.0f}/s requested {rate:.0f}/s")
    return [(sent - committed[oid]).total_seconds() for oid, sent in rows]


def main() -> int:
    """Run the benchmark (or one of its roles)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role", default="driver", choices=["driver", "receiver", "relay", "worker"]
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument(
        "--message-size",
        type=int,
        default=20,
        help="outbox rows per broker message at most (relay)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="latency phase rate (default: half the throughput, max 500/s)",
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    if args.role == "receiver":
        run_receiver(args.port)
        return 0
    if args.role in ("relay", "worker"):
        run_background(args.role)
        return 0

    from core.db import Database
    from core.migrate import upgrade
    from core.models import import_all_models
    from core.orgs.models import UnitKind
    from core.orgs.services import create_unit
    from tenants.provisioning import provision_tenant

    import_all_models()
    name, admin, app = create_database()
    namespace = f"insurdesk-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        upgrade(admin, app)
        db = Database(app, admin)
        tenant = provision_tenant(db, slug=f"bench-{uuid.uuid4().hex[:6]}", name="Bench")
        with db.tenant_transaction(tenant.id) as session:
            create_unit(session, code="G", name="集团", kind=UnitKind.GROUP, parent_id=None)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
        env.update(
            INSURDESK_DATABASE_URL=app,
            INSURDESK_ADMIN_DATABASE_URL=admin,
            INSURDESK_BROKER_URL=args.amqp_url,
            INSURDESK_LOG_LEVEL="WARNING",
            BENCH_NAMESPACE=namespace,
            BENCH_THREADS=str(args.threads),
            BENCH_WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks",
        )
        procs.append(spawn("receiver", env, "--port", str(port)))
        wait_port(port)
        procs += [spawn("worker", env) for _ in range(args.workers)]
        print(
            f"outbox bench: PostgreSQL (RLS, app role), RabbitMQ, {args.workers} worker "
            f"processes x {args.threads} threads, {os.cpu_count()} CPUs"
        )
        emit_backlog(db, tenant.id, 200, "warm-up")
        emit_backlog(db, tenant.id, args.events, "throughput")
        start = time.perf_counter()
        procs.append(spawn("relay", env))
        started = time.perf_counter()
        done = wait_sent(db, tenant.id, 200 + args.events, timeout=900)
        per_s = (200 + args.events) / (done - started)
        print(
            f"throughput: {args.events} notifications (+200 warm-up) in {done - started:.1f} s "
            f"after the relay started ({started - start:.1f} s to start): {per_s:,.0f}/s"
        )
        base = sent_count(db, tenant.id)
        rate = args.rate or min(500.0, per_s / 2)
        latencies = phase_latency(db, tenant.id, rate, args.seconds, base)
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"latency at {rate:,.0f}/s: median {statistics.median(latencies) * 1000:,.0f} ms, "
            f"p95 {p95 * 1000:,.0f} ms, max {latencies[-1] * 1000:,.0f} ms "
            f"({len(latencies)} notifications)"
        )
        ok = per_s >= 1000 and p95 < 1.0
        print("targets (>= 1,000/s; p95 < 1 s at half rate):", "met" if ok else "NOT met")
        db.dispose()
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        delete_queues(args.amqp_url, namespace)
        if not args.keep:
            drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
