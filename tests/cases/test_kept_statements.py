"""Kept statements on the driver (``core.db_driver.kept_rows``, decision 0014): inside a
request's database work on PostgreSQL they go to asyncpg directly, and give exactly the rows,
errors, events and tenant separation SQLAlchemy's execution gives; elsewhere they run through
SQLAlchemy."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import (
    Integer,
    String,
    Uuid,
    bindparam,
    cast,
    event,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, StatementError

from core.audit.services import verify
from core.cases import controllers, flows
from core.cases.models import Case, CaseClock, CaseCounter, CaseEvent
from core.db import Database, tenant_rows, utcnow
from core.db_driver import constant_in, kept_rows, sql_constant
from tests.cases.conftest import Acting, complaint
from tests.factories import TenantWorld

T = TypeVar("T")


def in_request(database: Database, fn: Callable[[], T]) -> T:
    """Run ``fn`` where a request's database work runs (``Database.run``: asyncpg in a
    greenlet on PostgreSQL, a worker thread on SQLite)."""

    async def main() -> T:
        try:
            return await database.run(fn)
        finally:
            await database.release_loop()

    return asyncio.run(main())


def _queue_statement() -> Any:
    """A queue statement as the handler keeps it: the page's columns and flags, open cases."""
    return (
        select(*controllers._QUEUE_COLUMNS)
        .where(constant_in(Case.state, ("closed", "withdrawn"), negate=True))
        .order_by(Case.received_at, Case.id)
    )


@pytest.fixture(scope="module")
def registered(acting: Acting, world: TenantWorld) -> list[uuid.UUID]:
    """Three cases of ``world``: a complaint, one with complexity, a whistle-blowing report."""
    with acting(world, "agent_bj") as ctx:
        return [
            flows.register_case(ctx, case).id
            for case in (
                complaint(world),
                complaint(world, complexity=["multiple_parties"]),
                complaint(
                    world,
                    case_type="whistleblowing",
                    channel="online",
                    customer_id=None,
                    policy_id=None,
                    reporter_anonymous=True,
                ),
            )
        ]


def test_kept_rows_give_what_sqlalchemy_gives(
    database: Database, world: TenantWorld, registered: list[uuid.UUID], backend: str
) -> None:
    statement = _queue_statement()
    now = utcnow()
    seen: list[Any] = []

    here: list[int] = []

    def note(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: Any) -> None:
        if threading.get_ident() in here:  # not the live server's background work
            seen.append((sql, context))

    def both() -> tuple[list[Any], list[Any], list[Any]]:
        tenant_column = controllers._CASES.c.tenant_id
        with database.tenant_session(world.id) as s:
            s.connection()  # begun (set_config) before listening
            here.append(threading.get_ident())
            event.listen(Engine, "before_cursor_execute", note)
            try:
                kept = tenant_rows(s, statement, tenant_column, kept=True, flags_now=now)
                again = tenant_rows(s, statement, tenant_column, kept=True, flags_now=now)
            finally:
                event.remove(Engine, "before_cursor_execute", note)
            plain = tenant_rows(s, statement, tenant_column, flags_now=now)
            return list(kept), list(again), list(plain)

    kept, again, plain = in_request(database, both)
    assert {row.id for row in kept} >= set(registered)
    assert [tuple(r) for r in kept] == [tuple(r) for r in plain] == [tuple(r) for r in again]
    assert all(r._fields == p._fields for r, p in zip(kept, plain, strict=True))
    assert [r._asdict() for r in kept] == [p._asdict() for p in plain]
    whistle = next(r for r in kept if r.id == registered[2])
    assert whistle.type == "whistleblowing" and whistle.reporter_anonymous is True
    assert isinstance(whistle.type, type(plain[0].type))  # the enum, processed alike
    # the statements were seen by the engine's listeners both times; on PostgreSQL they went
    # to the driver itself (no SQLAlchemy execution context)
    assert len(seen) == 2
    assert all(sql.lstrip().startswith("SELECT") for sql, _ in seen)
    if backend == "postgres":
        assert all(context is None for _, context in seen)
    else:
        assert all(context is not None for _, context in seen)


def test_a_registration_sends_its_statements_to_the_driver(
    acting: Acting, database: Database, world: TenantWorld, backend: str
) -> None:
    """The read, the case number, the audit head and the one write statement (decision 0012):
    on PostgreSQL all four go to asyncpg directly, in the request's transaction."""
    seen: list[tuple[str, Any]] = []
    here: list[int] = []

    def note(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: Any) -> None:
        if threading.get_ident() in here:
            seen.append((sql.lstrip(), context))

    def register() -> uuid.UUID:
        with acting(world, "agent_bj") as ctx:
            ctx.session.connection()  # begun (set_config) before listening
            here.append(threading.get_ident())
            event.listen(Engine, "before_cursor_execute", note)
            try:
                return flows.register_case(ctx, complaint(world)).id
            finally:
                event.remove(Engine, "before_cursor_execute", note)

    in_request(database, register)  # the batch's shape seen once
    seen.clear()
    case_id = in_request(database, register)
    with database.tenant_transaction(world.id) as s:
        assert s.get(Case, (world.id, case_id)) is not None  # committed
    if backend == "sqlite":
        assert all(context is not None for _, context in seen)
        return
    assert [sql.split(" ")[0] for sql, _ in seen] == ["SELECT", "WITH", "WITH"]  # counter + head
    assert all(context is None for _, context in seen)
    # on the driver, the writes are one data-modifying CTE per table, several rows in one
    # VALUES (two clocks, their two reminders, two outbox rows): PostgreSQL sets up one insert
    # per table, not per row
    writes = seen[2][0]
    assert "w0_1 AS" not in writes and "w1_1 AS" not in writes
    for table in ("case_clocks", "clock_reminders", "outbox"):
        assert writes.count(f"INSERT INTO {table} ") == 1, table
    with database.tenant_transaction(world.id) as s:
        clocks = select(CaseClock.clock).where(CaseClock.case_id == case_id)
        assert len(list(s.scalars(clocks))) == 2
        count = text("SELECT count(*) FROM clock_reminders WHERE case_id = :case")
        assert s.scalar(count.bindparams(bindparam("case", type_=Uuid())), {"case": case_id}) == 2
        outbox = text("SELECT count(*) FROM outbox WHERE payload->>'case_id' = :case")
        assert s.scalar(outbox, {"case": str(case_id)}) == 2


def test_a_registration_that_keeps_nothing_in_the_session_writes_the_same(
    acting: Acting, database: Database, world: TenantWorld
) -> None:
    """What the API does (``register(..., keep=False)``, then commit): the case, its clocks,
    event and audit entry, and the unit, tenant and policy read, stay out of the session; what
    is written and answered is the same as with them kept."""

    def register(keep: bool) -> tuple[flows.Registration, list[Any], int]:
        with acting(world, "agent_bj") as ctx:
            case = complaint(world, complexity=["multiple_parties"])
            done = flows.register(ctx, case, keep=keep)
            return done, list(ctx.session.identity_map.values()), len(done.clocks)

    kept_done, kept, clocks = register(True)
    loose_done, loose, loose_clocks = register(False)
    assert kept_done.case in kept and kept_done.unit in kept
    assert not loose  # nothing in the session: the objects are plain loaded ones
    assert loose_clocks == clocks >= 1
    case = loose_done.case
    assert (case.number, case.state, case.version) != (None, None, None)
    with database.tenant_transaction(world.id) as s:
        for done in (kept_done, loose_done):
            stored = s.get(Case, (world.id, done.case.id))
            assert stored is not None and stored.state == done.case.state
            assert stored.next_due_at == done.case.next_due_at
            clocks_of = select(CaseClock.clock).where(CaseClock.case_id == done.case.id)
            assert sorted(s.scalars(clocks_of)) == sorted(c.clock for c in done.clocks)
            kinds = select(CaseEvent.kind).where(CaseEvent.case_id == done.case.id)
            assert list(s.scalars(kinds)) == ["registered"]
        assert verify(s).ok  # the audit chain holds with the entries written either way


def test_another_tenant_gets_none_of_the_rows(
    database: Database, world: TenantWorld, other: TenantWorld, registered: list[uuid.UUID]
) -> None:
    statement = _queue_statement()

    def rows_of(tenant: TenantWorld) -> set[uuid.UUID]:
        with database.tenant_session(tenant.id) as s:
            rows = tenant_rows(
                s, statement, controllers._CASES.c.tenant_id, kept=True, flags_now=utcnow()
            )
            return {row.id for row in rows}

    assert set(registered) <= in_request(database, lambda: rows_of(world))
    assert not set(registered) & in_request(database, lambda: rows_of(other))


def test_the_queues_constants_are_in_its_sql_not_its_parameters() -> None:
    """PostgreSQL plans a kept statement once for all its parameters: a state sent as ``$9``
    has no statistics, and the work queue's generic plan then ran its unit filter once per
    case (docs/benchmarks.md, eleventh round). The open-state list and the clock statuses of
    the flags are written into the SQL; the parameters are the request's own values."""
    from sqlalchemy.dialects import postgresql

    compiled = _queue_statement().compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    sql = compiled.string
    assert "NOT IN ('closed', 'withdrawn')" in sql
    assert "IN ('running', 'paused', 'window')" in sql
    assert "= 'breached'" in sql and "= 'running'" in sql
    assert set(compiled.params) == {"flags_now"}


@pytest.mark.parametrize("value", ["it's", "a b", "x;--", "", "закрыт"])
def test_only_plain_constants_are_written_into_sql(value: str) -> None:
    with pytest.raises(ValueError, match="not a plain SQL constant"):
        sql_constant(value)


def test_a_statement_with_a_list_parameter_runs_through_sqlalchemy(
    database: Database, world: TenantWorld, registered: list[uuid.UUID]
) -> None:
    statement = select(Case.id, Case.number).where(Case.id.in_(registered[:2]))  # expanding

    def run() -> list[Any]:
        with database.tenant_session(world.id) as s:
            return list(tenant_rows(s, statement, controllers._CASES.c.tenant_id, kept=True))

    assert {row.id for row in in_request(database, run)} == set(registered[:2])


def test_a_missing_parameter_is_refused_as_sqlalchemy_refuses_it(
    database: Database, world: TenantWorld
) -> None:
    statement = select(Case.id).where(Case.received_at < bindparam("before"))

    def run() -> None:
        with database.tenant_session(world.id) as s:
            kept_rows(s.connection(), statement, {})

    with pytest.raises(StatementError, match="before"):
        in_request(database, run)


_ONE = select((bindparam("a", type_=Integer) + 1).label("n"))
_TWO = select(
    (bindparam("a", type_=Integer) + bindparam("b", value=10, type_=Integer)).label("n"),
    cast(bindparam("when", type_=String), String).label("when"),
)


def test_parameters_are_taken_given_or_from_the_statement(
    database: Database, world: TenantWorld
) -> None:
    """One parameter, several given, and one left to the statement's own value: each in
    its place ($1, $2, ..), as SQLAlchemy's execution places them."""

    def run() -> list[tuple[Any, ...]]:
        with database.tenant_session(world.id) as s:
            conn = s.connection()
            return [
                tuple(kept_rows(conn, _ONE, {"a": 41})[0]),
                tuple(kept_rows(conn, _TWO, {"a": 1, "b": 2, "when": "now"})[0]),
                tuple(kept_rows(conn, _TWO, {"when": "later", "a": 5})[0]),
                tuple(kept_rows(conn, _ONE, {"a": 1})[0]),
            ]

    assert in_request(database, run) == [(42,), (3, "now"), (15, "later"), (2,)]


@pytest.mark.postgres_only
def test_driver_errors_are_sqlalchemys_errors_and_the_transaction_can_end(
    database: Database, world: TenantWorld
) -> None:
    bad_number = select(literal_column("1")).where(
        cast(bindparam("text", type_=String), Integer) == 1
    )
    counters = CaseCounter.__table__
    duplicate = insert(counters).values(
        {name: bindparam(name) for name in ("tenant_id", "id", "key", "value")}
    )

    def run() -> tuple[type, type, int]:
        with database.tenant_session(world.id) as s:
            with pytest.raises(DataError) as data_error:  # 22P02 as psycopg's DataError
                kept_rows(s.connection(), bad_number, {"text": "not a number"})
            s.rollback()
            row = {"tenant_id": world.id, "key": f"kept-{uuid.uuid4()}", "value": 1}
            kept_rows(s.connection(), duplicate, {**row, "id": uuid.uuid4()})
            with pytest.raises(IntegrityError) as integrity_error:
                kept_rows(s.connection(), duplicate, {**row, "id": uuid.uuid4()})
            s.rollback()
            (after,) = kept_rows(s.connection(), select(literal_column("41 + 1")), {})
            return type(data_error.value), type(integrity_error.value), int(after[0])

    data, integrity, after = in_request(database, run)
    assert (data, integrity, after) == (DataError, IntegrityError, 42)
