"""A registration's writes in one statement on PostgreSQL (decision 0012, core.db_batch).

The case, its clocks and their reminders, the timeline event, the outbox rows, the audit head's
move and the audit entry are collected in a :class:`~core.db_batch.WriteBatch`: one statement
(data-modifying CTEs) on PostgreSQL, one per table on SQLite. Checked here on both: the
statements sent, the rows written (equal to the one-by-one path's), a failing insert rolling
everything back with the same error, the audit chain under concurrent registrations, and
row-level security.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Uuid, bindparam, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from core import db_batch
from core.audit.services import AuditActor, record, verify
from core.cases import flows, services
from core.cases.models import CaseEvent
from core.cases.schemas import TransitionIn
from core.db import Database, new_id, utcnow
from core.db_batch import WriteBatch
from core.outbox.models import OutboxEvent
from core.outbox.services import emit_many
from tests.cases.conftest import Acting, complaint
from tests.factories import TenantWorld

NOW = utcnow().replace(microsecond=0)
"""The registrations' time: now, so that no background sweep of the test session's database
(a live server's scheduler) reaches their clocks while the test reads them."""

WRITTEN = ("cases", "case_clocks", "clock_reminders", "case_events", "outbox", "audit_log")
"""The tables a registration writes (besides the counter and the audit head)."""


def _sql(query: str) -> Any:
    """``query`` with its ``:case`` and ``:tenant`` parameters typed as UUIDs (SQLite keeps
    UUIDs as text)."""
    stmt = text(query)
    for name in ("case", "tenant"):
        if f":{name}" in query:
            stmt = stmt.bindparams(bindparam(name, type_=Uuid()))
    return stmt


@contextmanager
def statements(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and execution context) of every statement this thread sends meanwhile on
    ``database``'s engine (``set_config`` goes to the driver directly and is not seen). Other
    threads' statements are left out: the session's live server runs its embedded scheduler
    and relay on the same engine."""
    seen: list[tuple[str, Any]] = []
    here = threading.get_ident()

    def note(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: Any) -> None:
        if threading.get_ident() == here:
            seen.append((sql, context))

    event.listen(database.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", note)


def _one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, batches are sent one statement per part on every backend (the path SQLite
    always takes)."""
    monkeypatch.setattr(db_batch, "one_statement", lambda _connection, _parts: False)


def test_a_registration_sends_its_writes_as_one_statement_on_postgresql(
    acting: Acting, world: TenantWorld, database: Database, backend: str
) -> None:
    with acting(world, "agent_bj") as ctx:  # the same shape once: compiled and cached
        flows.register_case(ctx, complaint(world))
    with acting(world, "agent_bj") as ctx, statements(database) as seen:
        flows.register_case(ctx, complaint(world))
    sql = [s.lstrip() for s, _ in seen]
    if backend == "sqlite":  # one statement per table, as before
        assert len(sql) == 10
        assert not any(s.startswith("WITH") for s in sql)
        return
    # the one read; the case number's counter and the audit head, locked and read together;
    # then the writes
    assert len(sql) == 3, sql
    assert sql[1].startswith("WITH w AS")
    assert "INSERT INTO case_counters" in sql[1] and "INSERT INTO audit_heads" in sql[1]
    writes, context = seen[2]
    assert writes.startswith("WITH")
    # one data-modifying CTE per row: the case, two clocks and their reminders, the event,
    # the outbox's case.created and follow-up, the audit head's move and the entry
    for part, rows in (
        ("INSERT INTO cases ", 1),
        ("INSERT INTO case_clocks ", 2),
        ("INSERT INTO clock_reminders ", 2),
        ("INSERT INTO case_events ", 1),
        ("INSERT INTO outbox ", 2),
        ("UPDATE audit_heads ", 1),
        ("INSERT INTO audit_log ", 1),
    ):
        assert writes.count(part) == rows, part
    assert context.cache_hit == context.dialect.CACHE_HIT  # not compiled again


def test_a_transition_sends_its_outbox_rows_and_audit_entry_as_one_statement(
    acting: Acting, world: TenantWorld, database: Database, backend: str
) -> None:
    case_id = _register(acting, world)
    with acting(world, "agent_bj") as ctx:
        case = services.get_case(ctx.session, case_id)
        with statements(database) as seen:
            flows.transition(
                ctx, case, TransitionIn(action="begin_review"), if_match=flows.etag(case)
            )
    sql = [s.lstrip() for s, _ in seen]
    if backend == "sqlite":  # the head locked, then the batch's parts one by one
        assert [s.split(" ")[:3] for s in sql[-4:]] == [
            ["INSERT", "INTO", "audit_heads"],
            ["INSERT", "INTO", "outbox"],
            ["UPDATE", "audit_heads", "SET"],
            ["INSERT", "INTO", "audit_log"],
        ]
    else:  # after the flush: the audit head, then the outbox row, its move and the entry
        assert sql[-2].startswith("INSERT INTO audit_heads")
        assert sql[-1].startswith("WITH")
        for part in ("INSERT INTO outbox ", "UPDATE audit_heads ", "INSERT INTO audit_log "):
            assert sql[-1].count(part) == 1, part
        assert not any(s.startswith("INSERT INTO outbox") for s in sql)
    with database.tenant_transaction(world.id) as s:
        assert services.get_case(s, case_id).state == "under_review"
        assert verify(s).ok


def _written(database: Database, world: TenantWorld, case_id: uuid.UUID) -> dict[str, Any]:
    """What a registration of ``case_id`` wrote, every table, with what differs between two
    registrations of the same data (ids, number, sealed bytes, write times, the audit entry's
    place in the chain) left out or replaced by placeholders."""
    queries = {
        "cases": "SELECT * FROM cases WHERE id = :case",
        "case_clocks": "SELECT * FROM case_clocks WHERE case_id = :case ORDER BY clock",
        "clock_reminders": "SELECT r.*, k.clock AS of_clock FROM clock_reminders r "
        "JOIN case_clocks k ON k.tenant_id = r.tenant_id AND k.id = r.clock_id "
        "WHERE r.case_id = :case ORDER BY k.clock",
        "case_events": "SELECT * FROM case_events WHERE case_id = :case ORDER BY seq",
        "outbox": "SELECT * FROM outbox WHERE CAST(payload AS TEXT) LIKE :like "
        "AND event_type IN ('case.created', 'case.follow_up') "
        "ORDER BY event_type, CAST(payload AS TEXT)",
        "audit_log": "SELECT * FROM audit_log WHERE target_id = :text",
    }
    volatile = {
        "cases": {"sealed_enc", "number"},
        "case_clocks": {"id", "created_at", "updated_at"},
        "clock_reminders": {"id", "clock_id"},
        "case_events": {"id", "sealed_enc"},
        # the relay (a live server's, on the test session's database) may have sent them
        "outbox": {"id", "created_at", "available_at", "status", "attempts"}
        | {"dispatched_at", "processed_at", "last_error"},
        "audit_log": {"id", "seq", "at", "prev_hash", "hash"},
    }
    params = {"case": case_id, "text": str(case_id), "like": f"%{case_id}%"}
    with database.tenant_transaction(world.id) as s:
        connection = s.connection()
        case = services.get_case(s, case_id)
        found: dict[str, Any] = {"sealed": [case.subject, case.description]}
        subs = {str(case_id): "<case>", case.number: "<number>", case_id.hex: "<case>"}
        for table, sql in queries.items():
            rows = [dict(r._mapping) for r in connection.execute(_sql(sql), params)]
            assert rows, table
            kept = [{k: v for k, v in r.items() if k not in volatile[table]} for r in rows]
            dumped = json.dumps(kept, default=str, sort_keys=True)
            for old, new in subs.items():
                dumped = dumped.replace(old, new)
            found[table] = json.loads(dumped)
    return found


def _register(acting: Acting, world: TenantWorld, **fields: Any) -> uuid.UUID:
    with acting(world, "agent_bj", now=NOW) as ctx:
        return flows.register_case(ctx, complaint(world, **fields)).id


@pytest.fixture
def batched_and_one_by_one(
    acting: Acting, world: TenantWorld, database: Database, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rows of the same registration (a complaint: two clocks, a follow-up in the outbox)
    written as one statement, then one statement per table."""
    fields = {"description": "电话里说明了情况"}
    batched = _register(acting, world, **fields)
    _one_by_one(monkeypatch)
    one_by_one = _register(acting, world, **fields)
    return _written(database, world, batched), _written(database, world, one_by_one)


def test_the_rows_written_are_those_of_the_one_by_one_path(
    batched_and_one_by_one: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    batched, one_by_one = batched_and_one_by_one
    assert len(batched["case_clocks"]) >= 2
    assert len(batched["clock_reminders"]) == len(batched["case_clocks"])
    assert batched["sealed"] == ["理赔进度慢 / slow claim", "电话里说明了情况"]
    for table in batched:
        assert batched[table] == one_by_one[table], table


def _counts(database: Database, world: TenantWorld) -> dict[str, Any]:
    """The tenant's rows in the tables a registration writes, its audit head and counters."""
    tenant = {"tenant": world.id}
    with database.tenant_transaction(world.id) as s:
        found: dict[str, Any] = {
            table: s.execute(
                _sql(f"SELECT count(*) FROM {table} WHERE tenant_id = :tenant"), tenant
            ).scalar()
            for table in WRITTEN
        }
        found["head"] = s.execute(
            _sql("SELECT seq, hash FROM audit_heads WHERE tenant_id = :tenant"), tenant
        ).one()
        found["counters"] = s.execute(
            _sql("SELECT sum(value) FROM case_counters WHERE tenant_id = :tenant"), tenant
        ).scalar()
    return found


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one_by_one"])
def test_a_failing_insert_writes_nothing_and_raises_the_same_error(
    acting: Acting,
    world: TenantWorld,
    database: Database,
    backend: str,
    batched: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not batched:
        _one_by_one(monkeypatch)
    _register(acting, world)  # the audit head exists
    real = flows.insert_new

    def event_of_no_case(session: Any, objects: Any, batch: Any = None) -> None:
        for obj in objects:
            if isinstance(obj, CaseEvent):
                obj.case_id = new_id()  # a foreign key to no case: checked at statement end
        real(session, objects, batch)

    monkeypatch.setattr(flows, "insert_new", event_of_no_case)
    before = _counts(database, world)
    with pytest.raises(IntegrityError) as failed:
        _register(acting, world)
    if backend == "postgres":
        assert failed.value.orig.sqlstate == "23503"  # type: ignore[union-attr]
    else:
        assert "FOREIGN KEY" in str(failed.value.orig)
    assert _counts(database, world) == before


def _register_many(acting: Acting, world: TenantWorld, count: int) -> None:
    for _ in range(count):
        with acting(world, "agent_bj") as ctx:
            flows.register_case(ctx, complaint(world))


def test_the_audit_chain_verifies_after_many_registrations_in_two_tenants(
    acting: Acting, world: TenantWorld, other: TenantWorld, database: Database, backend: str
) -> None:
    before = {}
    for w in (world, other):
        with database.tenant_transaction(w.id) as s:
            before[w.id] = verify(s).last_seq
    # Concurrent registrations in the same tenant serialize on its audit head (PostgreSQL;
    # SQLite has one writer at a time and is run in turn).
    workers = [
        threading.Thread(target=_register_many, args=(acting, w, 4))
        for w in (world, other, world, other)
    ]
    if backend == "sqlite":
        for worker in workers:
            worker.run()
    else:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    for w in (world, other):
        with database.tenant_transaction(w.id) as s:
            checked = verify(s)
            assert checked.ok, checked.as_dict()
            assert checked.last_seq == before[w.id] + 8


@pytest.mark.postgres_only
def test_another_tenant_sees_none_of_the_rows(
    acting: Acting, world: TenantWorld, other: TenantWorld, database: Database
) -> None:
    case_id = _register(acting, world)
    sql = {
        "cases": "SELECT count(*) FROM cases WHERE id = :case",
        "case_clocks": "SELECT count(*) FROM case_clocks WHERE case_id = :case",
        "clock_reminders": "SELECT count(*) FROM clock_reminders WHERE case_id = :case",
        "case_events": "SELECT count(*) FROM case_events WHERE case_id = :case",
        "outbox": "SELECT count(*) FROM outbox WHERE CAST(payload AS TEXT) LIKE :like",
        "audit_log": "SELECT count(*) FROM audit_log WHERE target_id = :text",
    }
    params = {"case": case_id, "text": str(case_id), "like": f"%{case_id}%"}

    def counts(w: TenantWorld) -> list[int]:
        with database.tenant_transaction(w.id) as s:  # raw SQL: only RLS filters
            return [s.execute(_sql(q), params).scalar() or 0 for q in sql.values()]

    assert all(counts(world))
    assert counts(other) == [0] * len(sql)


@pytest.mark.postgres_only
def test_a_batch_is_subject_to_row_level_security(
    world: TenantWorld, other: TenantWorld, database: Database
) -> None:
    foreign = {
        "tenant_id": world.id,
        "id": new_id(),
        "event_type": "case.created",
        "payload": {},
        "status": "pending",
        "attempts": 0,
        "created_at": utcnow(),
        "available_at": utcnow(),
        "dedupe_key": None,
    }
    with pytest.raises(DBAPIError) as refused, database.tenant_transaction(other.id) as s:
        batch = WriteBatch(s)
        emit_many(s, [("case.created", {"case_id": str(new_id())})], batch)
        batch.insert(OutboxEvent.__table__, [foreign])  # type: ignore[arg-type]
        assert len(batch) == 2
        batch.execute()
    assert refused.value.orig.sqlstate == "42501"  # type: ignore[union-attr]


def test_an_audit_entry_waits_for_the_batch_that_holds_the_previous_one(
    world: TenantWorld, database: Database
) -> None:
    actor = AuditActor.system("test")
    with database.tenant_transaction(world.id) as s:
        batch = WriteBatch(s)
        first = record(s, action="test.first", actor=actor, batch=batch)
        with pytest.raises(RuntimeError):
            record(s, action="test.second", actor=actor)
        batch.execute()
        second = record(s, action="test.second", actor=actor)
        assert second.seq == first.seq + 1
        assert second.prev_hash == first.hash
    with database.tenant_transaction(world.id) as s:
        assert verify(s).ok
