"""Database infrastructure: the declarative base, tenant scoping and session factories.

Tenancy is enforced twice (see docs/decisions/0002-tenancy.md):

1. the ORM: every query on a :class:`TenantScoped` model run through a tenant session gets
   ``WHERE tenant_id = :current`` added (``with_loader_criteria``), and every object flushed
   by it is stamped with, and checked against, the session's tenant;
2. PostgreSQL row-level security: every transaction of a tenant session starts with
   ``set_config('app.tenant_id', <tenant>, true)`` and the policies created by the migrations
   compare each row's ``tenant_id`` with it, so raw SQL that forgets the filter sees nothing
   of another tenant.

Cross-tenant work goes through :func:`platform_session` only (the owner's connection,
which the migrations leave outside RLS) and is audited by its callers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import anyio.to_thread
import msgspec
import uuid_utils.compat as uuid_utils
from sqlalchemy import (
    DateTime,
    Engine,
    MetaData,
    Select,
    String,
    Table,
    TypeDecorator,
    Uuid,
    create_engine,
    event,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DataError, DisconnectionError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    make_transient_to_detached,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.selectable import Join, SelectState
from sqlalchemy.util.concurrency import await_, greenlet_spawn, in_greenlet

from core.db_batch import WriteBatch, execute_insert
from core.db_driver import asyncpg_of, begin_tenant_transaction, end_transaction, kept_rows

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7, so new rows land at the end of primary-key indexes (uuid-utils:
    monotonic within a millisecond by a counter, with the clock's time; ``uuid6``, used
    before, moved the time one millisecond ahead for every id within the same millisecond,
    so a busy process wrote ids dated minutes into the future)."""
    return uuid_utils.uuid7()


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC (storage is always UTC)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that stores UTC and reads back aware UTC values.

    SQLite keeps no offset, so an aware value is converted to UTC before it is written (its wall
    time would otherwise be stored as if it were UTC), and a naive value read back is marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        """None on PostgreSQL: ``timestamptz`` keeps the instant of an aware value and psycopg
        reads back aware values, so the per-value Python hop would change nothing."""
        if dialect.name == "postgresql":
            return None
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """None on PostgreSQL (see :meth:`bind_processor`)."""
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every model, with the constraint naming convention Alembic needs."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid()}


class Timestamped:
    """``created_at`` / ``updated_at`` columns, maintained by the ORM."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantScoped:
    """Mixin for tenant-owned tables: ``tenant_id`` leads the primary key ``(tenant_id, id)``.

    Every foreign key from a tenant-owned table to another one must include ``tenant_id``
    (use :func:`core.db.tenant_fk`); the isolation suite checks this for every table.
    """

    __tenant_scoped__ = True

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, sort_order=-10)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id, sort_order=-9)


def tenant_owned_tables() -> list[str]:
    """Names of every tenant-owned table (mapped by a :class:`TenantScoped` model)."""
    return sorted(
        {
            str(m.class_.__tablename__)
            for m in Base.registry.mappers
            if getattr(m.class_, "__tenant_scoped__", False)
        }
    )


class TenantRequiredError(RuntimeError):
    """A tenant-scoped query or write was attempted without a tenant."""


class CrossTenantWriteError(RuntimeError):
    """An object of another tenant was about to be written through a tenant session."""


# --- engines ------------------------------------------------------------------------------

_decode_json = msgspec.json.Decoder()


def json_loads(data: str | bytes) -> Any:
    """What a JSON column reads as: ``json.loads`` of it, computed by msgspec's decoder (about
    ten times faster; a queue page reads two JSON columns per row). Whatever msgspec refuses
    and ``json.loads`` accepts (a number out of range, an unpaired surrogate escape) goes to
    ``json.loads``, so the values are the same either way."""
    try:
        return _decode_json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


def json_dumps(value: Any) -> str:
    """What a JSON column is written as: the JSON of ``value``, by msgspec's encoder (several
    times faster than ``json.dumps``; a registration writes six JSON values). The same JSON
    value as ``json.dumps`` gives for what it accepts, with non-ASCII text written as it is
    rather than escaped; beyond that, msgspec writes UUIDs, dates and decimals as strings and
    a float that is not finite as ``null`` (``json.dumps`` refused the first and wrote ``NaN``,
    which PostgreSQL refuses, for the second). What msgspec cannot write (text with unpaired
    surrogates, a type it does not know) is left to ``json.dumps``: written or refused as
    before."""
    try:
        return _encode_json.encode(value).decode()
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return json.dumps(value)


_encode_json = msgspec.json.Encoder()


POOL_SIZE, POOL_OVERFLOW = 20, 10
"""Connections a PostgreSQL pool keeps, and how many more it opens under load (per engine:
the synchronous one and each bridged one, README "Deploying"). A connection beyond the kept
ones is closed when it is returned, so a process whose concurrent requests often exceed
``POOL_SIZE`` opens and closes a connection every few dozen requests (a PostgreSQL backend
started each time, and every statement prepared again on it): 20 kept covers the concurrency
of one web process, and the most a pool opens stays 30 (until 2026-11-26: 10 kept + 20; on
``bench/api.py``'s 16 connections the queue opened a connection every 63 requests)."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets foreign keys on and a busy timeout for concurrent use.
    JSON columns are read with :func:`json_loads` and written with :func:`json_dumps`."""
    kwargs.setdefault("json_deserializer", json_loads)
    kwargs.setdefault("json_serializer", json_dumps)
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    ping_idle = "pool_pre_ping" not in kwargs  # else as the caller asks
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", POOL_OVERFLOW)
    engine = create_engine(url, **kwargs)
    if ping_idle:
        _ping_idle_connections(engine)
    return engine


def make_bridged_engine(url: str | URL) -> Engine:
    """The PostgreSQL engine of code run by :meth:`Database.run`: asyncpg's connection behind
    SQLAlchemy's synchronous API, each wait handed to the event loop (greenlets). asyncpg, not
    psycopg's asyncio connection: on the benchmark a registration took 9 ms of CPU with it
    against 12 ms, a queue page 5.3 against 6.8 ms (docs/benchmarks.md)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    if not isinstance(url, str):
        url = url.render_as_string(hide_password=False)
    url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    engine = create_async_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
    ).sync_engine
    _ping_idle_connections(engine)
    event.listen(engine, "handle_error", _data_error_by_sqlstate)
    return engine


def _data_error_by_sqlstate(context: Any) -> Any:
    """SQLAlchemy's asyncpg dialect raises a plain ``DBAPIError`` for SQLSTATE class 22 (a NUL
    byte in text, a number out of range) where psycopg's raises ``DataError``: the same class
    here, so the API answers both alike (a 400, never a 500)."""
    code = getattr(context.original_exception, "sqlstate", None) or ""
    if code.startswith("22") and not isinstance(context.sqlalchemy_exception, DataError):
        return DataError(
            context.statement, context.parameters, context.original_exception
        ).with_traceback(context.sqlalchemy_exception.__traceback__)
    return None


PING_IDLE_SECONDS = 0.5
"""A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
(HikariCP's default window); one used more recently is not: a request reuses a connection
within milliseconds under load, and a ping is a round trip on every checkout."""


def _ping_idle_connections(engine: Engine) -> None:
    """``pool_pre_ping`` for connections idle longer than :data:`PING_IDLE_SECONDS`: a dead
    one is replaced before use, as the pre-ping does (the same ``do_ping``)."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= PING_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool replaces it and tries again
            raise DisconnectionError("pooled connection failed its ping") from exc


# --- sessions -----------------------------------------------------------------------------

TENANT_KEY = "tenant_id"
PLATFORM_KEY = "platform"


BRIDGED_KEY = "insurdesk.bridged"
"""``session.info`` key while a transaction is open: True if it began in :meth:`Database.run`
on a bridged connection, False if on a synchronous one."""


HELD_KEY = "insurdesk.held_connection"
"""``session.info`` key inside :meth:`Database.tenant_write`: the connection of the held
transaction, which the session hands out and joins."""


TWINS_KEY = "insurdesk.bridged_twins"
"""``session.info`` key while a bridged transaction is open: the bridged engine it uses for
each bound engine (the lookup of :meth:`Database._bridge` done once per transaction)."""


class RoutedSession(Session):
    """A session that takes its connection from the engine that suits where it runs: in a
    greenlet of :meth:`Database.run` (PostgreSQL), the event loop's bridged engine (asyncpg,
    each wait handed back to the loop); anywhere else (a worker thread, the
    CLI, a Dramatiq actor, SQLite), the synchronous engine it is bound to.

    A transaction stays on the connection it began on: one begun on a synchronous connection
    continues on it inside :meth:`Database.run` (blocking the loop, never a second
    connection); one begun on a bridged connection cannot continue outside, and says so."""

    bridge: Callable[[Engine], Engine] | None = None
    """Gives the bridged engine of a synchronous one for the running event loop."""

    def connection(
        self,
        bind_arguments: Any = None,
        execution_options: Any = None,
    ) -> Connection:
        """The connection of the session's transaction; inside :meth:`Database.tenant_write`
        the held connection, without beginning a session transaction."""
        held = self.info.get(HELD_KEY)
        if held is not None and execution_options is None:
            return cast(Connection, held)
        return super().connection(bind_arguments, execution_options)

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        """The held connection inside :meth:`Database.tenant_write`; else the bound engine, or
        its bridged twin inside :meth:`Database.run`."""
        held = self.info.get(HELD_KEY)
        if held is not None:
            return held
        bind = super().get_bind(*args, **kwargs)
        if self.bridge is None or not isinstance(bind, Engine):
            return bind
        began_bridged = self.info.get(BRIDGED_KEY)
        here = in_greenlet()
        if began_bridged is None:
            return self.bridge(bind) if here else bind
        if began_bridged and not here:
            raise RuntimeError(
                "this session's transaction began in Database.run; it must end there too"
            )
        if not began_bridged:
            return bind
        twins = self.info.get(TWINS_KEY)  # the transaction's twin, looked up once
        if twins is None:
            twins = self.info[TWINS_KEY] = {}
        twin = twins.get(bind)
        if twin is None:
            twin = twins[bind] = self.bridge(bind)
        return twin


@event.listens_for(RoutedSession, "after_begin")
def _note_bridged(session: Session, transaction: Any, connection: Connection) -> None:
    if transaction.parent is None and isinstance(session, RoutedSession):
        session.info[BRIDGED_KEY] = session.bridge is not None and in_greenlet()


@event.listens_for(RoutedSession, "after_transaction_end")
def _forget_bridged(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(BRIDGED_KEY, None)
        session.info.pop(TWINS_KEY, None)


class Database:
    """The two connections of the platform and the sessions made from them.

    ``engine`` is the application's (subject to RLS on PostgreSQL); ``admin_engine`` is the
    owner's, used by migrations and :meth:`platform_session`. On PostgreSQL each has a bridged
    twin per event loop that :meth:`run` uses (see :class:`RoutedSession` and
    docs/decisions/0010-database-work-on-the-event-loop.md).
    """

    def __init__(self, url: str, admin_url: str | None = None) -> None:
        self.engine = make_engine(url)
        self.admin_engine = (
            self.engine if not admin_url or admin_url == url else make_engine(admin_url)
        )
        self._factory = sessionmaker(bind=self.engine, class_=RoutedSession, expire_on_commit=False)
        self._admin_factory = sessionmaker(
            bind=self.admin_engine, class_=RoutedSession, expire_on_commit=False
        )
        self._bridged: dict[asyncio.AbstractEventLoop, dict[Engine, Engine]] = {}
        self._bridge_lock = threading.Lock()
        if self.is_postgres:  # each sessionmaker has its own subclass: set once for its sessions
            self._factory.class_.bridge = self._bridge
            self._admin_factory.class_.bridge = self._bridge

    @property
    def is_postgres(self) -> bool:
        """True when the application database is PostgreSQL."""
        return self.engine.dialect.name == "postgresql"

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)``, synchronous code that uses this database, from the event
        loop. On PostgreSQL it runs in a greenlet on the loop itself: its sessions talk to the
        database through the loop (no worker thread, no hand-offs between threads); on SQLite,
        whose driver has no asynchronous form, in a worker thread."""
        if self.is_postgres:
            return await greenlet_spawn(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def _bridge(self, engine: Engine) -> Engine:
        """The bridged twin of ``engine`` for the running event loop (made on first use: an
        asyncio connection belongs to the loop it was opened on). Twins of loops that closed
        without :meth:`release_loop` are let go here."""
        loop = asyncio.get_running_loop()
        twins = self._bridged.get(loop)
        if twins is None:
            with self._bridge_lock:
                closed = [old for old in self._bridged if old.is_closed()]
                gone = [t for old in closed for t in self._bridged.pop(old).values()]
                twins = self._bridged.setdefault(loop, {})
            for twin in gone:
                _dispose_bridged(twin, own_loop=False)
        found = twins.get(engine)
        if found is not None:
            return found
        with self._bridge_lock:
            if engine not in twins:
                twins[engine] = make_bridged_engine(engine.url)
            return twins[engine]

    def tenant_session(self, tenant_id: uuid.UUID) -> Session:
        """A session that sees and writes only ``tenant_id``'s rows."""
        session = self._factory()
        session.info[TENANT_KEY] = tenant_id
        return session

    def platform_session(self) -> Session:
        """The one explicit cross-tenant path: no tenant filter, the owner's connection.

        Callers must be platform operations (provisioning, manifests, sweeps) and record
        what they did in the platform audit log.
        """
        session = self._admin_factory()
        session.info[PLATFORM_KEY] = True
        return session

    @contextmanager
    def tenant_transaction(self, tenant_id: uuid.UUID) -> Iterator[Session]:
        """A tenant session in one transaction: committed on success, rolled back on error."""
        with self.tenant_session(tenant_id) as session, session.begin():
            yield session

    @contextmanager
    def tenant_read(self, tenant_id: uuid.UUID) -> Iterator[Connection]:
        """A read-only transaction of ``tenant_id`` on a Core connection, without an ORM
        session, for pages of plain rows (:func:`tenant_rows_on`): a session's begin and
        rollback cost about twice the driver's BEGIN, ``set_config`` and ROLLBACK
        (docs/benchmarks.md, eighth round). Row-level security applies on PostgreSQL as in a
        tenant session (the tenant is set first); no ORM tenant criteria apply, so statements
        filter by tenant themselves (:func:`tenant_rows_on` does). Always rolled back: nothing
        read here can be written. Inside :meth:`run` the connection is the event loop's
        bridged one, as a session's would be, and its transaction begins with the tenant in
        one round trip (:func:`~core.db_driver.begin_tenant_transaction`)."""
        with self._request_connection() as connection:
            if asyncpg_of(connection) is not None:
                begin_tenant_transaction(connection, tenant_id)
                try:
                    yield connection
                finally:
                    end_transaction(connection, commit=False)
                return
            connection.begin()
            try:
                set_rls_tenant(connection, tenant_id)
                yield connection
            finally:
                connection.rollback()

    @contextmanager
    def tenant_write(self, session: Session) -> Iterator[None]:
        """Run the block in one transaction of ``session``'s tenant, committed when the block
        ends without an error and rolled back when it raises: for a request that writes
        through kept statements (:func:`~core.db_driver.kept_rows`, a
        :class:`~core.db_batch.WriteBatch`), such as the API's registration.

        Inside :meth:`run` on PostgreSQL the transaction is *held*: a Core connection of the
        bridged engine whose BEGIN, RLS tenant and COMMIT go to the driver directly (one round
        trip for the first two), and ``session.connection()`` hands out that connection
        without beginning a session transaction. A session's begin and commit cost more than
        the driver's work for them (≈ 0.15 ms of CPU per request, docs/benchmarks.md, ninth
        round). ORM work in the block (a query, a flush) still works: the session joins the
        held transaction (``rollback_only``: its commit flushes and leaves the transaction
        to this block; its rollback rolls it back, and the block then fails with an error
        rather than commit what came after). Elsewhere (SQLite, psycopg outside
        :meth:`run`, a session already in a transaction) it is the session's own
        transaction, committed at the end.

        :raises TenantRequiredError: for a session without a tenant (a platform session).
        """
        tenant_id = session.info.get(TENANT_KEY)
        if tenant_id is None or session.info.get(PLATFORM_KEY):
            raise TenantRequiredError("tenant_write needs a tenant session")
        if session.in_transaction() or not (self.is_postgres and in_greenlet()):
            yield
            session.commit()
            return
        with self._request_connection() as connection:
            begin_tenant_transaction(connection, tenant_id)
            try:
                held = connection.begin()  # SQLAlchemy's side only: a joining session keeps to it
                session.info[HELD_KEY] = connection
                yield
                if session.in_transaction():
                    session.commit()  # ORM work flushed into the held transaction
                if not held.is_active:
                    raise RuntimeError("the held transaction was rolled back inside the block")
                held.commit()  # its listeners (the token-state cache); nothing is sent
                end_transaction(connection, commit=True)
            except BaseException:
                end_transaction(connection, commit=False)
                raise
            finally:
                if session.in_transaction():
                    session.rollback()  # after a failure: the session forgets the joined one
                session.info.pop(HELD_KEY, None)

    def _request_connection(self) -> Any:
        """A Core connection of the application's engine: the event loop's bridged one inside
        :meth:`run` on PostgreSQL (as a session's would be), else the engine's."""
        engine = self._bridge(self.engine) if self.is_postgres and in_greenlet() else self.engine
        return engine.connect()

    @contextmanager
    def platform_transaction(self) -> Iterator[Session]:
        """A platform session in one transaction: committed on success, rolled back on error."""
        with self.platform_session() as session, session.begin():
            yield session

    async def end(self, session: Session) -> None:
        """Roll back what ``session`` left open and close it, where its transaction runs."""
        if not session.in_transaction():
            session.close()
            return
        if session.info.get(BRIDGED_KEY):
            await greenlet_spawn(_rollback_and_close, session)
        else:
            await anyio.to_thread.run_sync(_rollback_and_close, session)

    async def release_loop(self) -> None:
        """Close the bridged connections of the running event loop (an app's shutdown: an
        asyncio connection can only be closed by its own loop)."""
        with self._bridge_lock:
            twins = self._bridged.pop(asyncio.get_running_loop(), {})
        for twin in twins.values():
            await greenlet_spawn(twin.dispose)

    def dispose(self) -> None:
        """Close every pooled connection: the synchronous ones, and the bridged ones of the
        running loop when called from it. Bridged connections of other loops are let go:
        their loop closes them (uvloop) or they close when collected."""
        self.engine.dispose()
        if self.admin_engine is not self.engine:
            self.admin_engine.dispose()
        with self._bridge_lock:
            twins = dict(self._bridged)
            self._bridged.clear()
        running = _running_loop()
        for loop, by_engine in twins.items():
            for twin in by_engine.values():
                _dispose_bridged(twin, own_loop=running is loop)


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` that blocks on something other than the database (object storage, the
    network): from code running in a greenlet of :meth:`Database.run` in a worker thread,
    the event loop awaiting it; from anywhere else directly."""
    if in_greenlet():
        return await_(anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs)))
    return fn(*args, **kwargs)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _dispose_bridged(engine: Engine, *, own_loop: bool) -> None:
    """Close a bridged engine's connections, which only their own loop can do, from a greenlet
    of :meth:`Database.run`; elsewhere its pool is let go without closing them."""
    if own_loop and in_greenlet():
        engine.dispose()
    else:
        engine.dispose(close=False)


def _rollback_and_close(session: Session) -> None:
    session.rollback()
    session.close()


def _is_tenant_scoped(cls: type) -> bool:
    return bool(getattr(cls, "__tenant_scoped__", False))


@functools.cache
def _tenant_table_names() -> frozenset[str]:
    return frozenset(tenant_owned_tables())


def _unfiltered_tenant_tables(state: ORMExecuteState, mappers: Sequence[Any]) -> list[Any]:
    """Tenant-owned tables in a SELECT's FROM that no entity of the statement stands for (an
    aggregate such as ``count()`` over ``select_from(Model)`` or ``count(Model.id)``): the
    loader criteria do not reach them, so they get an explicit ``tenant_id`` condition."""
    if not state.is_select or not isinstance(state.statement, Select):
        return []
    covered = {m.local_table.name for m in mappers}
    names = _tenant_table_names()
    found: list[Any] = []
    # The FROM list as Core's compile state computes it: ``Select.get_final_froms()`` gives the
    # same list but compiles the whole statement for it (about 1 ms, at every ORM SELECT).
    pending = list(SelectState(state.statement, cast(Any, None))._get_display_froms())
    while pending:
        item = pending.pop()
        if isinstance(item, Join):
            pending += [item.left, item.right]
        elif isinstance(item, Table) and item.name in names and item.name not in covered:
            found.append(item)
    return found


@event.listens_for(Session, "do_orm_execute")
def _add_tenant_criteria(state: ORMExecuteState) -> None:
    session = state.session
    if session.info.get(PLATFORM_KEY):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    tenant_id = session.info.get(TENANT_KEY)
    mappers = state.all_mappers
    scoped = any(_is_tenant_scoped(m.class_) for m in mappers)
    bare = _unfiltered_tenant_tables(state, mappers)
    if not scoped and not bare:
        return
    if tenant_id is None:
        raise TenantRequiredError("a tenant-owned table was queried without a tenant")
    statement = state.statement
    for table in bare:
        statement = statement.where(table.c.tenant_id == tenant_id)  # type: ignore[attr-defined]
    if scoped:
        statement = statement.options(
            with_loader_criteria(
                TenantScoped,
                lambda cls: cls.tenant_id == tenant_id,
                include_aliases=True,
                track_closure_variables=False,
            )
        )
    state.statement = statement


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, _ctx: Any, _instances: Any) -> None:
    if session.info.get(PLATFORM_KEY):
        return
    tenant_id = session.info.get(TENANT_KEY)
    for obj in list(session.new) + list(session.dirty):
        if _is_tenant_scoped(type(obj)):
            _stamp(obj, tenant_id)


def _stamp(obj: Any, tenant_id: uuid.UUID | None) -> None:
    """Give a tenant-owned object written through a tenant session that session's tenant;
    refuse one without a tenant or of another tenant."""
    if tenant_id is None:
        raise TenantRequiredError(f"{type(obj).__name__} written without a tenant")
    current = getattr(obj, "tenant_id", None)
    if current is None:
        obj.tenant_id = tenant_id
    elif current != tenant_id:
        raise CrossTenantWriteError(
            f"{type(obj).__name__} of another tenant written through a tenant session"
        )


_SET_TENANT = "SELECT set_config('app.tenant_id', %(tenant)s, true)"
_SET_TENANT_NUMERIC = "SELECT set_config('app.tenant_id', $1, true)"


@event.listens_for(Session, "after_begin")
def _set_rls_tenant(session: Session, _tx: Any, connection: Connection) -> None:
    if session.info.get(HELD_KEY) is connection:
        return  # a held transaction began with its tenant (Database.tenant_write)
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is not None and not session.info.get(PLATFORM_KEY):
        set_rls_tenant(connection, tenant_id)


def set_rls_tenant(connection: Connection, tenant_id: uuid.UUID) -> None:
    """Make ``tenant_id`` the tenant of ``connection``'s transaction for row-level security
    (``set_config('app.tenant_id', .., true)``: it ends with the transaction); nothing on
    SQLite. The first statement of every tenant transaction (a tenant session's begin,
    :meth:`Database.tenant_read`)."""
    if connection.dialect.name != "postgresql":
        return
    # Straight to the driver's cursor: this runs at the start of every tenant transaction, and
    # SQLAlchemy's execution machinery cost more than the statement. Should it fail, it runs
    # again through SQLAlchemy, which raises the error as for any statement (and handles a
    # lost connection: the pool is invalidated).
    if connection.dialect.driver == "asyncpg":
        sql, params = _SET_TENANT_NUMERIC, (str(tenant_id),)
    else:
        sql, params = _SET_TENANT, {"tenant": str(tenant_id)}  # type: ignore[assignment]
    try:
        with connection.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(sql, params)
    except Exception:
        connection.exec_driver_sql(sql, params)


def tenant_rows(
    session: Session, stmt: Select[Any], tenant_column: Any, *, kept: bool = False, **params: Any
) -> Sequence[Any]:
    """The rows of a column-only SELECT run through ``session``'s connection, without the ORM's
    per-row processing (several times cheaper for a page of rows).

    The ORM's automatic tenant criteria do not reach this level, so ``tenant_column`` (the
    ``tenant_id`` column of the statement's main table) is filtered by the session's tenant
    here; subqueries on other tenant tables must filter or correlate on ``tenant_id``
    themselves. Row-level security applies on PostgreSQL as for every statement. ``params``
    are the values of the statement's named bind parameters.

    A caller that runs the same statement object again (built once and kept) gets the same
    filtered statement back too, so SQLAlchemy need not work out its cache key again; with
    ``kept`` it says so, and the statement runs on the driver (:func:`core.db_driver.kept_rows`).
    """
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None or session.info.get(PLATFORM_KEY):
        raise TenantRequiredError("tenant_rows needs a tenant session")
    return tenant_rows_on(session.connection(), tenant_id, stmt, tenant_column, kept=kept, **params)


def tenant_rows_on(
    connection: Connection,
    tenant_id: uuid.UUID,
    stmt: Select[Any],
    tenant_column: Any,
    *,
    kept: bool = False,
    **params: Any,
) -> Sequence[Any]:
    """:func:`tenant_rows` on a connection of ``tenant_id``'s transaction
    (:meth:`Database.tenant_read`): the same filter by ``tenant_column``, the same kept
    statements."""
    filtered_of = _FILTERED.get(stmt)
    if filtered_of is None:
        filtered_of = _FILTERED[stmt] = {}
    key = (id(tenant_column), tenant_id)
    filtered = filtered_of.get(key)
    if filtered is None:
        filtered = filtered_of[key] = stmt.where(tenant_column == tenant_id)
    if kept:
        return kept_rows(connection, filtered, params)
    return connection.execute(filtered, params).all()


_FILTERED: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
""":func:`tenant_rows`' filtered statement of each statement still in use, by tenant column (its
``id``: the filtered statement keeps it alive) and tenant; an entry goes with its statement."""


@functools.cache
def _insert_plan(cls: Any) -> tuple[Table, tuple[tuple[str, str, Any], ...]]:
    """The table of model ``cls`` and, per column attribute, (attribute, column, Python
    default or None): what :func:`insert_new` fills in and writes."""
    mapper: Any = sa_inspect(cls)
    columns = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        default = column.default
        columns.append((prop.key, column.key, default))
    return cast(Table, mapper.local_table), tuple(columns)


def insert_new(session: Session, objects: Sequence[Any], batch: WriteBatch | None = None) -> None:
    """Write new objects of one model with one Core ``INSERT`` (one statement for several),
    then keep them in ``session`` as persistent (loaded) objects, as a flush leaves them.
    With ``batch``, the insert is added to it instead (:mod:`core.db_batch`): written, and the
    objects kept (unless the batch keeps none: ``keep_objects``), when the batch is executed.

    Much cheaper than the unit of work's flush for a few rows written once. What the flush
    would do is done here: every column gets its value or its Python default, a tenant-owned
    object gets the session's tenant (another tenant's is refused). Column types still process
    the values (e.g. :class:`~core.privacy.fields.SealedText` refuses clear text), but no
    mapper events run, and sealed fields must be sealed first
    (:func:`core.privacy.fields.seal_new`).
    """
    if not objects:
        return
    table, rows = _new_rows(session, objects)

    def keep() -> None:
        for obj in objects:
            make_transient_to_detached(obj)
            session.add(obj)

    if batch is not None:
        batch.insert(table, rows, then=keep if batch.keep_objects else None)
        return
    execute_insert(session.connection(), table, rows)
    keep()


def _new_rows(session: Session, objects: Sequence[Any]) -> tuple[Table, list[dict[str, Any]]]:
    """The table of ``objects`` (new objects of one model) and their rows, each column with its
    value or Python default (set on the object too), tenant-owned ones stamped."""
    cls: Any = type(objects[0])
    table, plan = _insert_plan(cls)
    stamp = _is_tenant_scoped(cls) and not session.info.get(PLATFORM_KEY)
    tenant_id = session.info.get(TENANT_KEY)
    rows: list[dict[str, Any]] = []
    for obj in objects:
        if type(obj) is not cls:
            raise TypeError("insert_new writes objects of one model at a time")
        state = obj.__dict__
        if stamp:  # as the flush does (_stamp_tenant)
            _stamp(obj, tenant_id)
        for attr, _key, default in plan:
            if attr not in state:
                if default is None:
                    value = None
                elif default.is_callable:
                    value = default.arg(None)
                else:
                    value = default.arg
                # into the instance's dict, as new_object does: nothing tracks the changes
                # of an object no session holds, and a kept one is loaded from its dict
                state[attr] = value
        rows.append({key: state[attr] for attr, key, _ in plan})
    return table, rows


@functools.cache
def _column_keys(cls: Any) -> frozenset[str]:
    return frozenset(prop.key for prop in sa_inspect(cls).column_attrs)


def new_object(cls: type[T], /, **values: Any) -> T:
    """A new (transient) object of model ``cls`` with ``values``, as the mapped constructor
    makes it, for less: column values go straight into the instance's dict (the constructor
    fires an attribute event for each, which nothing needs on an object no session holds yet);
    anything else (a sealed field, a relationship) is set through its attribute. Flushed or
    written by :func:`insert_new` like any new object."""
    obj = sa_inspect(cls).class_manager.new_instance()
    columns = _column_keys(cast(Any, cls))
    state = obj.__dict__
    for name, value in values.items():
        if name in columns:
            state[name] = value
        else:
            setattr(obj, name, value)
    return cast(T, obj)


def attach_loaded(session: Session, cls: type[Any], values: dict[str, Any]) -> Any:
    """The object of model ``cls`` whose columns ``values`` were just read by a Core statement
    (every column attribute), as a persistent object of ``session``: the one already in its
    identity map if there is one (as :meth:`Session.get` would give), else a new one loaded
    from ``values``. For reads that filter by tenant themselves (decision 0009)."""
    key = sa_inspect(cls).identity_key_from_primary_key(
        [values[c.key] for c in sa_inspect(cls).primary_key]
    )
    found = session.identity_map.get(key)
    if found is not None:
        return found
    obj = new_object(cls, **values)  # as the ORM's loading does: no attribute events
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


__all__ = [
    "Base",
    "CrossTenantWriteError",
    "Database",
    "String",
    "TenantRequiredError",
    "TenantScoped",
    "Timestamped",
    "attach_loaded",
    "insert_new",
    "make_engine",
    "new_id",
    "new_object",
    "tenant_owned_tables",
    "utcnow",
]


def tenant_fk(
    columns: str | list[str], target: str, *, name: str | None = None, **kwargs: Any
) -> Any:
    """A composite foreign key ``(tenant_id, <columns>) -> <target>(tenant_id, id)``.

    ``target`` is a table name; ``columns`` the referring column(s) besides ``tenant_id``.
    Composite keys make it impossible for a row to point at another tenant's row.
    """
    from sqlalchemy import ForeignKeyConstraint

    cols = [columns] if isinstance(columns, str) else list(columns)
    return ForeignKeyConstraint(
        ["tenant_id", *cols], [f"{target}.tenant_id", f"{target}.id"], name=name, **kwargs
    )
