"""Benchmark: outbox → RabbitMQ → actor → delivery log, end to end, on PostgreSQL.

    python bench/outbox.py                                  # defaults: see --help
    python bench/outbox.py --events 20000 --workers 2 --threads 8 --rate 500 --seconds 15

What runs (each its own process, as in production):

* a **receiver** standing for the integrator's webhook endpoint (``--receiver light``, the
  default: a minimal asyncio HTTP/1.1 server with keep-alive; ``uvicorn``: an ASGI app);
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

Phase 2, **latency**: events are committed at ``--rate`` per second (default half the measured
throughput, capped at 500/s as the target states it) for ``--seconds``, by ``--emitters``
processes, each committing its share on a fixed schedule, one event per transaction as a
request does (``--per-transaction N`` commits N per transaction instead, which the output
states: on a loaded machine a few processes cannot commit hundreds of transactions a second);
the latency of each is ``sent_at`` of its delivery minus the time its transaction committed
(taken after the commit returned). Prints the median and the 95th percentile, and the rate the
emitters actually achieved.

For both phases the script prints the load average and the CPU time used per notification by
the workers, the relay, the receiver and the database's backends (from ``/proc``), which is
what the worker optimisations change; the rate itself depends on what else runs on the machine.

The receiver is deliberately light (it only reads the request and answers 204): it stands for
the integrator's endpoint, which is not ours to measure (its CPU is reported apart); signature
verification on the receiving side is tested in ``tests/outbox``. RabbitMQ's own CPU is reported
too (the broker process is shared with anything else using it).

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
DRIVER_APP = "insurdesk-bench-driver"
"""The application name of this script's own connections (its polling is not the pipeline's)."""
POLL = "bench poll"
SECRET = "whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC0zMmI="


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- roles run in subprocesses -----------------------------------------------------------------


def run_receiver(port: int, kind: str = "light") -> None:
    """The webhook endpoint: answers every POST with 204.

    ``light`` (the default): a minimal HTTP/1.1 server on asyncio streams that reads the
    request head and ``Content-Length`` bytes of body and answers, keeping the connection
    open. The receiver stands for the integrator's endpoint, which is not the platform's to
    measure, so it is kept cheap (its CPU is still reported); signatures are verified by the
    receivers of ``tests/outbox``. ``uvicorn``: a minimal ASGI app under uvicorn, for comparison.
    """
    if kind == "uvicorn":
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
        return

    import asyncio

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far (Linux ``/proc``; 0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rabbitmq_pids() -> list[int]:
    """The RabbitMQ server's processes on this machine (its Erlang VM), if it runs here."""
    found = subprocess.run(
        ["pgrep", "-f", "beam.*rabbit"], capture_output=True, text=True, check=False
    ).stdout.split()
    return [int(p) for p in found]


def backend_pids(admin_url: str, name: str) -> dict[int, str]:
    """PostgreSQL backends connected to the benchmark's database, with their application name."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        ).all()
        found = {int(pid): str(app or "") for pid, app in rows}
    engine.dispose()
    return found


class CpuMeter:
    """CPU time of the benchmark's processes over a phase, by role."""

    def __init__(self, roles: dict[str, list[int]], admin_url: str, name: str) -> None:
        self.roles = roles
        self.admin_url = admin_url
        self.name = name
        self.start: dict[str, float] = {}
        self.pg_start: dict[int, float] = {}
        self.pg_names: dict[int, str] = {}

    def begin(self) -> None:
        """Take the starting figures."""
        self.start = {r: sum(cpu_seconds(p) for p in pids) for r, pids in self.roles.items()}
        self.pg_names = backend_pids(self.admin_url, self.name)
        self.pg_start = {p: cpu_seconds(p) for p in self.pg_names}

    def end(self) -> dict[str, float]:
        """CPU seconds used per role since :meth:`begin` (``postgres``: the backends)."""
        used = {
            r: sum(cpu_seconds(p) for p in pids) - self.start.get(r, 0.0)
            for r, pids in self.roles.items()
        }
        names = {**self.pg_names, **backend_pids(self.admin_url, self.name)}
        spent = {p: cpu_seconds(p) - self.pg_start.get(p, 0.0) for p in names}
        used["postgres"] = sum(v for p, v in spent.items() if names[p] != DRIVER_APP)
        used[POLL] = sum(v for p, v in spent.items() if names[p] == DRIVER_APP)
        return used


def report_cpu(used: dict[str, float], notifications: int) -> None:
    """Print CPU milliseconds per notification by role, and what two busy CPUs would allow."""
    per = {r: 1000 * s / notifications for r, s in used.items()}
    poll = per.pop(POLL, 0.0)
    total = sum(per.values())
    parts = ", ".join(f"{r} {v:.2f}" for r, v in per.items())
    cpus = os.cpu_count() or 1
    print(
        f"  CPU per notification (ms): {parts}; total {total:.2f} "
        f"(all {cpus} CPUs busy with nothing else: ~{1000 * cpus / total:,.0f}/s); "
        f"not counted: this script's own polling and reading, {poll:.2f} in its PostgreSQL backend"
    )


def others() -> str:
    """The busiest processes that are not this benchmark's (what else loaded the machine)."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu,args", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    busy = [
        line.strip()[:90]
        for line in out
        if "bench/outbox.py" not in line and "postgres:" not in line and " ps " not in line
    ]
    return "; ".join(busy[:3])


def load() -> str:
    """The 1-minute load average."""
    return f"{os.getloadavg()[0]:.1f}"


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
        time.sleep(0.1)  # each poll counts the sent rows: not too often
    raise SystemExit(f"only {sent_count(db, tenant_id)} of {target} delivered in {timeout} s")


def emit_backlog(db: object, tenant_id: uuid.UUID, events: int, phase: str) -> None:
    """Commit ``events`` events, 100 per transaction."""
    from core.outbox import emit

    for first in range(0, events, 100):
        with db.tenant_transaction(tenant_id) as session:  # type: ignore[attr-defined]
            for n in range(first, min(events, first + 100)):
                emit(session, EVENT, {"n": n, "phase": phase})


def _emitter_ready() -> None:
    """Pool initializer: import what emitting needs before the clock starts."""
    import core.outbox  # noqa: F401
    from core.models import import_all_models

    import_all_models()


def emit_share(
    app_url: str, tenant_id: str, times: list[float], per_transaction: int
) -> list[tuple[str, str]]:
    """One emitting process: at each of ``times`` (epoch seconds) commit one transaction of
    ``per_transaction`` events; returns ``(outbox id, commit time)`` pairs."""
    from sqlalchemy import text

    from core.db import Database
    from core.outbox import emit

    db = Database(app_url)
    tid = uuid.UUID(tenant_id)
    with db.tenant_transaction(tid) as session:  # connect before the schedule starts
        session.execute(text("SELECT 1"))
    committed = []
    for n, at in enumerate(times):
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        with db.tenant_transaction(tid) as session:
            ids = [
                emit(session, EVENT, {"n": n, "k": k, "phase": "latency"})
                for k in range(per_transaction)
            ]
        now = dt.datetime.now(dt.UTC).isoformat()
        committed += [(str(row_id), now) for row_id in ids]
    db.dispose()
    return committed


def phase_latency(
    db: object,
    app_url: str,
    tenant_id: uuid.UUID,
    rate: float,
    seconds: float,
    already: int,
    emitters: int,
    per_transaction: int = 1,
) -> tuple[list[float], float]:
    """Commit events at ``rate``/s from ``emitters`` processes, ``per_transaction`` events per
    transaction; returns the commit-to-sent latencies (s) and the rate achieved."""
    import multiprocessing

    from sqlalchemy import select

    from core.notifications.models import Delivery

    transactions = int(rate * seconds / per_transaction)
    count = transactions * per_transaction
    with multiprocessing.get_context("spawn").Pool(emitters, initializer=_emitter_ready) as pool:
        pool.map(abs, range(emitters))  # every process started and ready
        start = time.time() + 0.5
        schedule = [start + n * per_transaction / rate for n in range(transactions)]
        shares = [schedule[k::emitters] for k in range(emitters)]
        results = pool.starmap(
            emit_share, [(app_url, str(tenant_id), s, per_transaction) for s in shares]
        )
    committed = {
        uuid.UUID(i): dt.datetime.fromisoformat(at) for share in results for i, at in share
    }
    last = max(committed.values()).timestamp()
    achieved = count / max(last - start, 1e-9)
    wait_sent(db, tenant_id, already + count, timeout=300)
    with db.tenant_session(tenant_id) as session:  # type: ignore[attr-defined]
        rows = session.execute(
            select(Delivery.outbox_id, Delivery.sent_at).where(
                Delivery.outbox_id.in_(list(committed))
            )
        ).all()
    print(
        f"  latency phase: {count} events from {emitters} emitting processes, "
        f"{per_transaction} per transaction, at {achieved:.0f}/s (asked {rate:.0f}/s)"
    )
    return [(sent - committed[oid]).total_seconds() for oid, sent in rows], achieved


def main() -> int:
    """Run the benchmark (or one of its roles)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role", default="driver", choices=["driver", "receiver", "relay", "worker"]
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--receiver",
        default="light",
        choices=["light", "uvicorn"],
        help="the webhook receiver standing for the integrator's endpoint",
    )
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
    parser.add_argument(
        "--emitters", type=int, default=4, help="emitting processes in the latency phase"
    )
    parser.add_argument(
        "--per-transaction",
        type=int,
        default=1,
        help="events committed per transaction in the latency phase (1: as a request does)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    if args.role == "receiver":
        run_receiver(args.port, args.receiver)
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
        # this script's connections are named, so its backends' CPU is reported apart
        db = Database(f"{app}?application_name={DRIVER_APP}", admin)
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
            BENCH_MESSAGE_SIZE=str(args.message_size),  # the relay's (not passed on before)
            BENCH_WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks",
        )
        receiver = spawn("receiver", env, "--port", str(port), "--receiver", args.receiver)
        procs.append(receiver)
        wait_port(port)
        workers = [spawn("worker", env) for _ in range(args.workers)]
        procs += workers
        print(
            f"outbox bench: PostgreSQL (RLS, app role), RabbitMQ, {args.workers} worker "
            f"processes x {args.threads} threads, {args.message_size} rows per message, "
            f"{args.receiver} receiver, "
            f"{os.cpu_count()} CPUs; load average {load()}; busiest other processes: {others()}"
        )
        emit_backlog(db, tenant.id, 200, "warm-up")
        emit_backlog(db, tenant.id, args.events, "throughput")
        # A production outbox has statistics; this database was empty a moment ago, and until
        # autovacuum's first ANALYZE (a minute or more) the planner takes the tenant's rows for a
        # handful and reads a message's rows by scanning all of them through an index that
        # leads with tenant_id, which made the database's CPU per notification grow with the
        # backlog. Analyzed as autovacuum would.
        with db.admin_engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE outbox")
        start = time.perf_counter()
        relay = spawn("relay", env)
        procs.append(relay)
        started = time.perf_counter()
        roles = {
            "workers": [w.pid for w in workers],
            "relay": [relay.pid],
            "receiver": [receiver.pid],
            "rabbitmq": rabbitmq_pids(),
        }
        meter = CpuMeter(roles, admin, name)
        meter.begin()
        done = wait_sent(db, tenant.id, 200 + args.events, timeout=900)
        used = meter.end()
        per_s = (200 + args.events) / (done - started)
        print(
            f"throughput: {args.events} notifications (+200 warm-up) in {done - started:.1f} s "
            f"after the relay started ({started - start:.1f} s to start): {per_s:,.0f}/s; "
            f"load average {load()}; busiest other processes: {others()}"
        )
        report_cpu(used, 200 + args.events)
        base = sent_count(db, tenant.id)
        rate = args.rate or min(500.0, per_s / 2)
        meter.begin()
        latencies, achieved = phase_latency(
            db, app, tenant.id, rate, args.seconds, base, args.emitters, args.per_transaction
        )
        report_cpu(meter.end(), len(latencies))
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"latency at {achieved:,.0f}/s: median {statistics.median(latencies) * 1000:,.0f} ms, "
            f"p95 {p95 * 1000:,.0f} ms, max {latencies[-1] * 1000:,.0f} ms "
            f"({len(latencies)} notifications); load average {load()}"
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
