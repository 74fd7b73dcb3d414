"""The isolation suite: every tenant-owned table, checked by walking the metadata.

A new tenant-owned table is covered automatically by the structural checks, and fails
``test_every_tenant_table_has_rows_in_the_fixture`` until the two-tenant fixture holds rows
of it, so the data checks below run on it too.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text
from sqlalchemy.exc import IntegrityError

from core.db import Base, Database, TenantRequiredError, tenant_owned_tables
from core.migrate import APPEND_ONLY_TABLES
from core.models import import_all_models
from tests.factories import TenantWorld, make_tenant

import_all_models()
TABLES = tenant_owned_tables()


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _model(name: str) -> Any:
    for mapper in Base.registry.mappers:
        if mapper.local_table.name == name:
            return mapper.class_
    raise LookupError(name)


@pytest.fixture(scope="module")
def two_tenants(database: Database) -> tuple[TenantWorld, TenantWorld]:
    """Two tenants with rows in every tenant-owned table."""
    return make_tenant(database, "iso-a"), make_tenant(database, "iso-b")


@pytest.fixture(scope="module")
def pg_two_tenants(pg_database: Database) -> tuple[TenantWorld, TenantWorld]:
    """Two tenants with rows in every tenant-owned table, on PostgreSQL."""
    return make_tenant(pg_database, "rls-a"), make_tenant(pg_database, "rls-b")


@pytest.mark.parametrize("name", TABLES)
def test_tenant_id_leads_the_primary_key(name: str) -> None:
    assert [c.name for c in _table(name).primary_key.columns][:2] == ["tenant_id", "id"]


@pytest.mark.parametrize("name", TABLES)
def test_foreign_keys_between_tenant_tables_include_tenant_id(name: str) -> None:
    for fk in _table(name).foreign_key_constraints:
        if fk.referred_table.name in TABLES:
            assert "tenant_id" in fk.column_keys, f"{name}: {fk.column_keys} lacks tenant_id"
            assert "tenant_id" in [e.column.name for e in fk.elements]


def test_every_tenant_table_has_rows_in_the_fixture(
    database: Database, two_tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    empty = []
    with database.platform_session() as s:
        for world in two_tenants:
            for name in TABLES:
                t = _table(name)
                if (
                    s.execute(select(t.c.id).where(t.c.tenant_id == world.id).limit(1)).first()
                    is None
                ):
                    empty.append(name)
    assert not empty, f"the isolation fixture has no rows in: {sorted(set(empty))}"


@pytest.mark.parametrize("name", TABLES)
def test_orm_queries_never_return_another_tenants_rows(
    database: Database, two_tenants: tuple[TenantWorld, TenantWorld], name: str
) -> None:
    a, b = two_tenants
    model = _model(name)
    with database.tenant_session(a.id) as s:
        rows = s.scalars(select(model)).all()
        assert rows, f"tenant A sees none of its own {name}"
        assert {r.tenant_id for r in rows} == {a.id}
        b_id = _any_id(database, name, b.id)
        assert s.get(model, (b.id, b_id)) is None
        assert s.scalars(select(model).where(model.id == b_id)).first() is None


@pytest.mark.parametrize("name", TABLES)
def test_orm_counts_never_count_another_tenants_rows(
    database: Database, two_tenants: tuple[TenantWorld, TenantWorld], name: str
) -> None:
    """Aggregates name no entity in their columns (``count(*)`` over ``select_from(Model)``,
    ``count(Model.id)``): the tenant's criteria apply to them too, on SQLite as well."""
    from sqlalchemy import func

    a, _ = two_tenants
    model = _model(name)
    with database.platform_session() as s:
        t = _table(name)
        own = s.scalar(select(func.count()).select_from(t).where(t.c.tenant_id == a.id))
    with database.tenant_session(a.id) as s:
        assert s.scalar(select(func.count()).select_from(model)) == own
        assert s.scalar(select(func.count(model.id))) == own
        assert s.scalar(select(func.count()).select_from(model).where(model.id.isnot(None))) == own


@pytest.mark.parametrize("name", TABLES)
def test_raw_sql_under_rls_sees_only_the_transaction_tenant(
    pg_database: Database, pg_two_tenants: tuple[TenantWorld, TenantWorld], name: str
) -> None:
    a, b = pg_two_tenants
    with pg_database.tenant_transaction(a.id) as s:
        tenants = set(s.execute(text(f'SELECT tenant_id FROM "{name}"')).scalars())
        assert tenants == {a.id}
        # Writing B's tenant id is refused by the policy's WITH CHECK.
        with pytest.raises(Exception, match="row-level security"), s.begin_nested():
            if name in APPEND_ONLY_TABLES:  # no UPDATE for the app role: insert as B instead
                _insert_copy(s, name, b.id)
            else:
                s.execute(text(f'UPDATE "{name}" SET tenant_id = :b'), {"b": b.id})


def test_a_tenant_read_sees_only_its_tenant_under_rls(
    pg_database: Database, pg_two_tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    """Database.tenant_read (the work queue's read without an ORM session): row-level
    security applies with its tenant, and the tenant ends with the transaction, so the
    connection goes back to the pool with none."""
    import asyncio

    a, b = pg_two_tenants

    def read(tenant: uuid.UUID) -> dict[str, set[Any]]:
        seen = {}
        with pg_database.tenant_read(tenant) as conn:
            for name in TABLES:
                seen[name] = set(conn.execute(text(f'SELECT tenant_id FROM "{name}"')).scalars())
        return seen

    for tenant in (a.id, b.id):
        seen = read(tenant)  # the synchronous engine (psycopg)
        assert {n for n, ids in seen.items() if ids != {tenant}} == set()
        bridged = asyncio.run(pg_database.run(read, tenant))  # in Database.run: asyncpg
        assert {n for n, ids in bridged.items() if ids != {tenant}} == set()
    with pg_database.engine.connect() as conn:  # the pooled connection carries no tenant
        assert not conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar()
        assert conn.execute(text('SELECT count(*) FROM "cases"')).scalar() == 0


def test_a_tenant_read_writes_nothing(database: Database) -> None:
    """A tenant read always ends in a rollback: a write in it is not kept."""
    from sqlalchemy import func, update

    world = make_tenant(database, f"read-{uuid.uuid4().hex[:6]}")
    t = _table("case_categories")
    mine = t.c.tenant_id == world.id

    def active() -> int:
        with database.platform_session() as s:
            return int(s.scalar(select(func.count()).where(mine, t.c.active)) or 0)

    before = active()
    assert before > 0
    with database.tenant_read(world.id) as conn:
        assert conn.execute(update(t).where(mine).values(active=False)).rowcount == before
    assert active() == before


def _in_loop(db: Database, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` inside Database.run (on PostgreSQL: a greenlet on the bridged engine),
    the bridged connections closed afterwards."""
    import asyncio

    async def main() -> Any:
        try:
            return await db.run(fn, *args)
        finally:
            await db.release_loop()

    return asyncio.run(main())


def _active_categories(db: Database, tenant_id: uuid.UUID) -> int:
    from sqlalchemy import func

    t = _table("case_categories")
    with db.platform_session() as s:
        return int(
            s.scalar(select(func.count()).where(t.c.tenant_id == tenant_id, t.c.active)) or 0
        )


def test_a_held_tenant_write_sees_and_writes_only_its_tenant(
    pg_database: Database, pg_two_tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    """Database.tenant_write on the bridged engine (the API's registration): one transaction
    begun with its tenant, so row-level security applies to every statement in it; what it
    writes is committed at the end, an update of another tenant's rows changes nothing, and
    the connection goes back to the pool with no tenant and no open transaction."""
    from sqlalchemy import update

    a, b = pg_two_tenants
    t = _table("case_categories")
    before_a, before_b = (
        _active_categories(pg_database, a.id),
        _active_categories(pg_database, b.id),
    )
    assert before_a > 0 and before_b > 0

    def write() -> tuple[dict[str, set[Any]], int, int, bool]:
        session = pg_database.tenant_session(a.id)
        try:
            with pg_database.tenant_write(session):
                conn = session.connection()
                seen = {
                    name: set(conn.execute(text(f'SELECT tenant_id FROM "{name}"')).scalars())
                    for name in TABLES
                }
                mine = conn.execute(update(t).where(t.c.tenant_id == a.id).values(active=False))
                theirs = conn.execute(update(t).where(t.c.tenant_id == b.id).values(active=False))
                began = session.in_transaction()  # the session itself began nothing
            return seen, mine.rowcount, theirs.rowcount, began
        finally:
            session.close()

    seen, mine, theirs, began = _in_loop(pg_database, write)
    assert {n for n, ids in seen.items() if ids != {a.id}} == set()
    assert (mine, theirs, began) == (before_a, 0, False)
    assert _active_categories(pg_database, a.id) == 0  # committed
    assert _active_categories(pg_database, b.id) == before_b  # untouched
    with pg_database.engine.connect() as conn:  # the pooled connections carry no tenant
        assert not conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar()


def test_a_held_tenant_write_keeps_nothing_when_it_fails(pg_database: Database) -> None:
    """An error inside the block rolls everything back (nothing half-written), the next
    transaction on the same pool starts clean, and a session that rolled back inside the
    block is refused rather than committed."""
    from sqlalchemy import update

    world = make_tenant(pg_database, f"hold-{uuid.uuid4().hex[:6]}")
    t = _table("case_categories")
    before = _active_categories(pg_database, world.id)

    def fail(kind: str) -> None:
        session = pg_database.tenant_session(world.id)
        try:
            with pg_database.tenant_write(session):
                session.connection().execute(
                    update(t).where(t.c.tenant_id == world.id).values(active=False)
                )
                if kind == "raise":
                    raise LookupError("the flow failed")
                session.execute(select(t.c.id).limit(1))  # ORM work joins the transaction
                session.rollback()
        finally:
            session.close()

    with pytest.raises(LookupError):
        _in_loop(pg_database, fail, "raise")
    assert _active_categories(pg_database, world.id) == before
    with pytest.raises(RuntimeError, match="rolled back inside"):
        _in_loop(pg_database, fail, "rollback")
    assert _active_categories(pg_database, world.id) == before

    def count() -> int:  # the pool lends a clean connection: a new transaction works
        session = pg_database.tenant_session(world.id)
        try:
            with pg_database.tenant_write(session):
                return int(session.scalar(select(t.c.id).where(t.c.active).limit(1)) is not None)
        finally:
            session.close()

    assert _in_loop(pg_database, count) == 1


def test_orm_work_in_a_held_tenant_write_is_committed_with_it(pg_database: Database) -> None:
    """A flush inside the block (ORM objects) writes into the held transaction, stamped with
    the session's tenant, and is committed with the block's own statements."""
    from core.cases.models import CaseCategory

    world = make_tenant(pg_database, f"hold-{uuid.uuid4().hex[:6]}")
    code = f"hold_{uuid.uuid4().hex[:6]}"

    def write() -> None:
        session = pg_database.tenant_session(world.id)
        try:
            with pg_database.tenant_write(session):
                session.add(CaseCategory(code=code, name_zh="保持", name_en="held"))
                session.flush()
        finally:
            session.close()

    _in_loop(pg_database, write)
    t = _table("case_categories")
    with pg_database.platform_session() as s:
        assert s.scalar(select(t.c.tenant_id).where(t.c.code == code)) == world.id


def test_a_tenant_write_elsewhere_is_the_sessions_transaction(database: Database) -> None:
    """Outside Database.run (and on SQLite) tenant_write is the session's own transaction:
    committed at the end, rolled back on an error; a platform session is refused."""
    from sqlalchemy import update

    world = make_tenant(database, f"tw-{uuid.uuid4().hex[:6]}")
    t = _table("case_categories")
    before = _active_categories(database, world.id)
    with database.tenant_session(world.id) as session:
        with pytest.raises(LookupError), database.tenant_write(session):
            session.execute(update(t).where(t.c.tenant_id == world.id).values(active=False))
            raise LookupError("the flow failed")
        session.rollback()
        assert _active_categories(database, world.id) == before
        with database.tenant_write(session):
            session.execute(update(t).where(t.c.tenant_id == world.id).values(active=False))
    assert _active_categories(database, world.id) == 0
    with (
        database.platform_session() as s,
        pytest.raises(TenantRequiredError),
        database.tenant_write(s),
    ):
        pass


def test_rls_without_tenant_sees_nothing(
    pg_database: Database, pg_two_tenants: tuple[TenantWorld, TenantWorld]
) -> None:
    with pg_database.engine.connect() as conn:
        for name in TABLES:
            assert conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar() == 0


def test_rls_policies_exist_and_are_forced(pg_database: Database) -> None:
    with pg_database.admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname) "
                "FROM pg_class c WHERE c.relname = ANY(:names)"
            ),
            {"names": TABLES},
        ).all()
    assert {r[0] for r in rows} == set(TABLES)
    for name, enabled, forced, policies in rows:
        assert enabled and forced and policies >= 1, name


def test_application_role_does_not_own_the_tables(pg_database: Database) -> None:
    with pg_database.engine.connect() as conn:
        me = conn.execute(text("SELECT current_user")).scalar()
        owners = set(
            conn.execute(
                text("SELECT tableowner FROM pg_tables WHERE tablename = ANY(:n)"), {"n": TABLES}
            ).scalars()
        )
    assert me not in owners


@pytest.mark.parametrize(
    "name",
    [
        t
        for t in TABLES
        if any(
            fk.referred_table.name in TABLES
            for fk in Base.metadata.tables[t].foreign_key_constraints
        )
    ],
)
def test_a_row_cannot_reference_another_tenants_row(
    database: Database, two_tenants: tuple[TenantWorld, TenantWorld], name: str
) -> None:
    a, b = two_tenants
    table = _table(name)
    for fk in table.foreign_key_constraints:
        target = fk.referred_table.name
        if target not in TABLES:
            continue
        column = next(c for c in fk.column_keys if c != "tenant_id")
        with database.platform_session() as s:
            row = dict(
                s.execute(select(table).where(table.c.tenant_id == a.id).limit(1)).mappings().one()
            )
            row["id"] = uuid.uuid4()
            for col in table.c:  # keep unique constraints happy
                if col.name in {"code", "username", "number", "key"}:
                    row[col.name] = f"x-{uuid.uuid4().hex[:8]}"
            row[column] = _any_id(database, target, b.id)
            with pytest.raises(IntegrityError):
                s.execute(insert(table).values(**row))
            s.rollback()


def test_a_session_without_tenant_is_refused(database: Database) -> None:
    from sqlalchemy.orm import Session

    with Session(database.engine) as s, pytest.raises(TenantRequiredError):
        s.scalars(select(_model("customers"))).all()


def _insert_copy(session: Any, name: str, tenant_id: uuid.UUID) -> None:
    """Insert a copy of one visible row of ``name`` under ``tenant_id`` (fresh id and seq)."""
    table = _table(name)
    row = dict(session.execute(select(table).limit(1)).mappings().one())
    row.update(tenant_id=tenant_id, id=uuid.uuid4())
    if "seq" in row:
        row["seq"] = 10**12
    session.execute(insert(table).values(**row))


def _any_id(database: Database, name: str, tenant_id: uuid.UUID) -> uuid.UUID:
    table = _table(name)
    with database.platform_session() as s:
        value = s.execute(
            select(table.c.id).where(table.c.tenant_id == tenant_id).limit(1)
        ).scalar_one()
    return uuid.UUID(str(value))
