"""Benchmark: the deadline clocks of a new case, and the due-clock query at scale.

    python bench/deadlines.py                      # both parts (PostgreSQL on 127.0.0.1:5432)
    python bench/deadlines.py --part compute
    python bench/deadlines.py --part query --pg-url postgresql+psycopg://postgres@127.0.0.1/postgres

**compute** — what registering a case costs in the deadline engine: the plugins enabled at the
case's unit are asked for their rules (``statutory_cn``, ``service_rules_cn`` and ``group_policy``
with settings, through the real registry and per-unit resolution: the cached path of a request),
then the engine resolves one clock per name on the tenant calendar (cached) and the flow's
``ClockState`` objects are built. Median and p99 over many cases with different receipt times
(across holidays, both years); fails unless the median is under 200 µs.

**query** — the SLA sweep's query, "open clocks due in the next hour or already breached", across
100 tenants, at 100,000 and then at 1,000,000 open cases (one running decision clock each, plus a
completed materials clock), with the same 1,000 clocks due in both. The database is a throw-away
one on the local server, loaded with ``INSERT … SELECT generate_series`` and analysed. The query
runs on the partial index ``ix_case_clocks_open_due (due_at) WHERE status = 'running'``; the plan
is printed. Fails unless the median at 1M is under 100 ms and at most 1.5x the median at 100k.
The per-tenant variant (what a work queue asks under RLS) is measured too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

CN = ZoneInfo("Asia/Shanghai")
COMPUTE_BUDGET_US = 200.0
QUERY_BUDGET_MS = 100.0
MAX_RATIO = 1.5
TENANTS = 100
DUE = 1_000


# -- compute ----------------------------------------------------------------------------------


def bench_compute(iterations: int) -> bool:
    """Median time to compute every clock of a new case, plugins and cached calendar included."""
    from types import MappingProxyType

    from core.deadlines import TenantCalendar, clock_from_resolved
    from core.logging import configure_logging
    from core.plugins.flows import compute_deadlines, unit_calendar
    from core.plugins.registry import build_registry
    from core.plugins.resolution import TenantConfig, UnitRow, resolve
    from core.plugins.types import CaseFacts, PolicyFacts, UnitFacts

    configure_logging("ERROR")  # the ignored-rule warnings would be printed, not measured
    registry = build_registry()
    group, company, branch = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    path = f"/{group}/{company}/{branch}/"
    twelve = MappingProxyType({"complaint_decision_days": 12})
    config = TenantConfig(
        tenant_id=uuid.uuid4(),
        revision=1,
        rows=MappingProxyType(
            {
                "group_policy": MappingProxyType({str(group): UnitRow(True, twelve, 1)}),
                "service_rules_cn": MappingProxyType(
                    {
                        str(company): UnitRow(
                            None,
                            MappingProxyType({"life_complaint_answer_10_working_days": True}),
                            1,
                        )
                    }
                ),
            }
        ),
    )
    tp = resolve(registry, config, path)
    unit = UnitFacts(id=branch, code="BJ", kind="branch", path=path)
    base = TenantCalendar({}, CN)
    calendar = unit_calendar(tp, unit, base)
    policy = PolicyFacts(line_of_business="life", term_months=240)
    starts = [
        dt.datetime(2025, 1, 1, 9, tzinfo=CN) + dt.timedelta(hours=7 * i) for i in range(2000)
    ]
    kinds = ["complaint", "claim_report", "appeal", "consultation"]
    facts = [
        CaseFacts(
            case_type=kinds[i % len(kinds)],  # type: ignore[arg-type]
            channel="hotline",
            unit=unit,
            received_at=start,
            policy=policy,
        )
        for i, start in enumerate(starts)
    ]
    for f in facts:  # warm the calendar's years
        compute_deadlines(tp, f, calendar)
    samples = []
    clocks = 0
    for i in range(iterations):
        f = facts[i % len(facts)]
        t0 = time.perf_counter_ns()
        plan = compute_deadlines(tp, f, calendar)
        states = [clock_from_resolved(c) for c in plan.clocks]
        samples.append(time.perf_counter_ns() - t0)
        clocks += len(states)
    median = statistics.median(samples) / 1000
    p99 = sorted(samples)[int(len(samples) * 0.99)] / 1000
    print(
        f"compute: {iterations} cases, {clocks / iterations:.1f} clocks each, plugins "
        f"{list(tp.enabled)}: median {median:.1f} µs, p99 {p99:.1f} µs "
        f"(budget {COMPUTE_BUDGET_US:.0f} µs)"
    )
    return median < COMPUTE_BUDGET_US


# -- query ------------------------------------------------------------------------------------

SWEEP = text(
    "SELECT tenant_id, id, case_id, clock, due_at FROM case_clocks "
    "WHERE status = 'running' AND due_at < :horizon ORDER BY due_at"
)
TENANT_QUEUE = text(
    "SELECT id, case_id, clock, due_at FROM case_clocks "
    "WHERE tenant_id = :tenant AND status = 'running' AND due_at < :horizon ORDER BY due_at"
)


def _create_database(pg_url: str) -> tuple[Engine, str, str]:
    from sqlalchemy.engine import make_url

    from core.migrate import upgrade

    root = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"insurdesk_bench_{uuid.uuid4().hex[:10]}"
    with root.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return root, name, url


def _load(engine: Engine, per_tenant: int, offset: int, now: dt.datetime, due: bool) -> float:
    """Add ``per_tenant`` cases (each with a running and a met clock) to every tenant."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO cases (tenant_id, id, number, type, channel, state, subject,
                    received_at, unit_id, created_by, complexity, reporter_anonymous,
                    missing_materials, version, last_event_seq, next_due_at,
                    created_at, updated_at)
                SELECT u.tenant_id, gen_random_uuid(),
                    'TS-2026-' || lpad((:offset + gs.n)::text, 7, '0'),
                    'complaint', 'hotline', 'in_progress', 'bench', :now - interval '1 day',
                    u.id, 'bench', '[]', false, '[]', 1, 0,
                    :now + interval '2 hours' + (gs.n % 50000) * interval '1 minute', :now, :now
                FROM bench_units u CROSS JOIN generate_series(1, :n) AS gs(n)
                """
            ),
            {"n": per_tenant, "offset": offset, "now": now},
        )
        conn.execute(
            text(
                """
                INSERT INTO case_clocks (tenant_id, id, case_id, clock, citation, source,
                    statutory, amount, unit, started_at, due_at, last_day, status,
                    paused_seconds, extensions, provisional, history, created_at, updated_at)
                SELECT c.tenant_id, gen_random_uuid(), c.id, k.clock, '2020-complaints/18',
                    'statutory_cn', true, 15, 'natural_days', c.received_at,
                    CASE WHEN k.clock = 'complaint.decision' THEN c.next_due_at
                         ELSE c.received_at + interval '5 days' END,
                    (c.next_due_at AT TIME ZONE 'Asia/Shanghai')::date,
                    CASE WHEN k.clock = 'complaint.decision' THEN 'running' ELSE 'met' END,
                    0, 0, false, '{}', :now, :now
                FROM cases c
                CROSS JOIN (VALUES ('complaint.decision'), ('complaint.missing_materials_notice'))
                    AS k(clock)
                WHERE c.number > :floor
                """
            ),
            {"now": now, "floor": f"TS-2026-{offset:07d}"},
        )
        if due:
            # The same 1,000 clocks at both scales: due in the last two hours or the next 50 min.
            conn.execute(
                text(
                    """
                    UPDATE case_clocks SET due_at = :now - interval '2 hours'
                        + (random() * interval '170 minutes')
                    WHERE id IN (
                        SELECT id FROM case_clocks WHERE status = 'running'
                        ORDER BY id LIMIT :due)
                    """
                ),
                {"now": now, "due": DUE},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE cases"))
        conn.execute(text("VACUUM ANALYZE case_clocks"))
    return time.perf_counter() - t0


def _timed(conn: Any, stmt: Any, params: dict[str, Any]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = conn.execute(stmt, params).all()
    return time.perf_counter() - t0, len(rows)


def _server_ms(conn: Any, params: dict[str, Any]) -> float:
    plan = conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(SWEEP)), params).scalar()
    return float(plan[0]["Execution Time"])


def _plan(conn: Any, params: dict[str, Any]) -> str:
    lines = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + str(SWEEP)), params).scalars()
    return "\n".join(f"    {line}" for line in lines)


def _setup_tenants(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE TABLE bench_units AS
                SELECT gen_random_uuid() AS tenant_id, gen_random_uuid() AS id, g
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": TENANTS},
        )
        conn.execute(
            text(
                """
                INSERT INTO tenants (id, slug, name, time_zone, locale, status,
                    case_number_format, created_at, updated_at)
                SELECT tenant_id, 'bench-' || g, 'Bench ' || g, 'Asia/Shanghai', 'zh-CN',
                    'active', '{prefix}-{year}-{seq:06d}', now(), now()
                FROM bench_units
                """
            )
        )
        conn.execute(
            text(
                """
                INSERT INTO org_units (tenant_id, id, code, name, kind, path, depth,
                    active, created_at, updated_at)
                SELECT tenant_id, id, 'BR', '分公司', 'branch', '/' || id || '/', 0, true,
                    now(), now()
                FROM bench_units
                """
            )
        )


def bench_query(pg_url: str, small: int, large: int, runs: int, keep: bool) -> bool:
    """The due-clock query at ``small`` and ``large`` open cases across 100 tenants.

    Two databases, one per scale, loaded the same way (the large one gets the extra cases,
    none of them due); the two are then queried alternately, so that load on the machine
    affects both medians alike.
    """
    from sqlalchemy.engine import make_url

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    horizon = now + dt.timedelta(hours=1)
    params = {"horizon": horizon}
    made = [_create_database(pg_url) for _ in range(2)]
    engines = [
        create_engine(make_url(url).set(drivername="postgresql+psycopg")) for _, _, url in made
    ]
    ok = True
    try:
        for engine, size in zip(engines, (small, large), strict=True):
            _setup_tenants(engine)
            seconds = _load(engine, small // TENANTS, 0, now, due=True)
            if size > small:
                seconds += _load(engine, (size - small) // TENANTS, small // TENANTS, now, False)
            print(f"query: loaded {size:,} open cases across {TENANTS} tenants in {seconds:.1f} s")
        with engines[0].connect() as c_small, engines[1].connect() as c_large:
            conns = (c_small, c_large)
            for conn in conns:
                for _ in range(10):
                    _timed(conn, SWEEP, params)
            wall: tuple[list[float], list[float]] = ([], [])
            server: tuple[list[float], list[float]] = ([], [])
            rows = [0, 0]
            for _ in range(runs):
                for i, conn in enumerate(conns):
                    seconds, rows[i] = _timed(conn, SWEEP, params)
                    wall[i].append(seconds * 1000)
                    server[i].append(_server_ms(conn, params))
            tenants = [r[0] for r in c_large.execute(text("SELECT tenant_id FROM bench_units"))]
            queue = []
            for i in range(runs):
                t0 = time.perf_counter()
                c_large.execute(TENANT_QUEUE, {"tenant": tenants[i % TENANTS], **params}).all()
                queue.append((time.perf_counter() - t0) * 1000)
            plans = [_plan(conn, params) for conn in conns]
        w_small, w_large = (statistics.median(w) for w in wall)
        s_small, s_large = (statistics.median(s) for s in server)
        ratio = w_large / w_small
        print(
            f"query (all tenants, the SLA sweep), median of {runs}, wall time incl. fetching "
            f"the rows: {small:,} cases {w_small:.2f} ms ({rows[0]} due); {large:,} cases "
            f"{w_large:.2f} ms ({rows[1]} due); ratio {ratio:.2f}"
        )
        print(
            f"query (all tenants), server execution time: {small:,} cases {s_small:.3f} ms; "
            f"{large:,} cases {s_large:.3f} ms; ratio {s_large / s_small:.2f}"
        )
        print(
            f"query (one tenant, work queue under its tenant_id) at {large:,} cases: "
            f"median {statistics.median(queue):.3f} ms"
        )
        print(f"plan at {small:,}:\n{plans[0]}\nplan at {large:,}:\n{plans[1]}")
        ok = w_large < QUERY_BUDGET_MS and ratio <= MAX_RATIO and rows[0] == rows[1] == DUE
        print(
            f"budget: < {QUERY_BUDGET_MS:.0f} ms at {large:,} and ratio <= {MAX_RATIO}: "
            f"{'met' if ok else 'MISSED'}"
        )
    finally:
        for engine in engines:
            engine.dispose()
        for root, name, _ in made:
            if keep:
                print(f"kept database {name}")
            else:
                with root.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            root.dispose()
    return ok


def main() -> int:
    """Run the benchmark; exit 1 if a budget is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["compute", "query", "all"], default="all")
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    args = parser.parse_args()
    ok = True
    if args.part in ("compute", "all"):
        ok &= bench_compute(args.iterations)
    if args.part in ("query", "all"):
        ok &= bench_query(args.pg_url, args.small, args.large, args.runs, args.keep)
    print("OK" if ok else "FAILED: a budget was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
