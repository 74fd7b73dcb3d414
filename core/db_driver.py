"""Kept statements run straight on asyncpg (docs/decisions/0014-kept-statements-on-the-driver.md).

The hottest requests (registering a case, a work-queue page) run a few statements that are
built once and kept by their callers. SQLAlchemy's execution of a statement costs more than
the driver's work for it: the compiled-cache lookup, an execution context, the parameter dict
of every bind, the cursor adapter, the result's rows. :func:`kept_rows` compiles such a
statement once for PostgreSQL, keeps the SQL, the order of its parameters, their type
processors and the result's column processors, and then sends each execution to asyncpg
itself: the same SQL text, the same processed values, the same processed column values, in
the session's transaction on its connection.

What stays SQLAlchemy's: the compiler (the SQL is what SQLAlchemy would send), the column
types' bind and result processors (JSON, enums, sealed text, UTC times), the error
translation (a driver error is raised as the ``sqlalchemy.exc`` error SQLAlchemy would raise,
through its ``handle_error`` events, so the API answers it alike), the ``before_cursor_execute``
and ``after_cursor_execute`` events (with no cursor and no execution context: the token-state
cache notes a write to the tables it watches there), the connection, its pool and its
transaction. Where the statement cannot go this way — not the asyncpg driver (SQLite,
psycopg in the command-line tools and workers), parameters SQLAlchemy expands at each
execution (``IN`` with a list of values: write constant lists as SQL expressions, see
:func:`constant_in`), two result columns of the same name — it runs through SQLAlchemy as
before, with the same rows (named tuples here, SQLAlchemy ``Row`` objects there: both have
``_fields``, positions, attributes and ``_asdict``).
"""

from __future__ import annotations

import operator
import re
import uuid
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, literal_column
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable
from sqlalchemy.util.concurrency import await_


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an execution of a kept statement needs, worked out once."""

    sql: str
    names: tuple[str, ...]
    """The bind parameters in the order of ``$1, $2, ..``."""
    values: Mapping[str, Any]
    """Each parameter's value in the statement (used where the caller gives none)."""
    pick: Callable[[Mapping[str, Any]], Sequence[Any]]
    """The parameters' values in ``names`` order from a mapping that has all of them (a
    ``KeyError`` when one is missing): :func:`_picker`."""
    processing: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(position, bind processor) of the parameters whose type has one (most have none: their
    value goes as it is)."""
    row: Callable[[Sequence[Any]], Any]
    """Makes a row (a named tuple of the result's columns)."""
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(position, result processor) of the columns whose type converts the driver's value."""
    required: frozenset[str]
    """Parameters without a value in the statement: the caller must give them."""


_UNSUITED = object()
"""The plan of a statement that runs through SQLAlchemy (see the module's documentation)."""
_PLANS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""The plan of each kept statement still in use, by statement; an entry goes with its statement."""


def kept_rows(
    connection: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[Any]:
    """All rows of ``statement`` with ``params`` (values of its named bind parameters) run on
    ``connection``: on the asyncpg driver directly, elsewhere through SQLAlchemy.

    ``statement`` must be *kept*: the same object executed again and again (built once per
    shape by its caller). A statement built for one request would be compiled at every
    request here, where SQLAlchemy's compiled cache would recognise its shape; those go
    through ``connection.execute``. Rows have ``_fields``, positions, attributes and
    ``_asdict()`` either way. A statement without result rows gives ``[]``.
    """
    params = params or {}
    adapted = connection.connection.dbapi_connection
    if not isinstance(adapted, AsyncAdapt_asyncpg_connection):
        return _through_sqlalchemy(connection, statement, params)
    plan = _PLANS.get(statement)
    if plan is None:
        plan = _PLANS[statement] = _plan(connection, statement)
    if plan is _UNSUITED or not plan.required.issubset(params):
        # SQLAlchemy's way, or its error for a missing value
        return _through_sqlalchemy(connection, statement, params)
    try:  # the caller usually gives every parameter: one C call picks them all
        args = list(plan.pick(params))
    except KeyError:  # some keep the statement's own value
        values = plan.values
        args = [params[name] if name in params else values[name] for name in plan.names]
    for at, process in plan.processing:
        args[at] = process(args[at])
    dispatch = connection.dispatch  # listeners see the statement as they would SQLAlchemy's
    if dispatch.before_cursor_execute:  # (the token-state cache notes writes; tests, --show-sql)
        dispatch.before_cursor_execute(connection, None, plan.sql, args, None, False)
    try:
        if adapted._transaction is None and not adapted.autocommit:
            await_(adapted._start_transaction())  # as the adapter's cursor does on first use
        records = await_(adapted._connection.fetch(plan.sql, *args))
    except Exception as error:
        _raise_as_sqlalchemy(connection, adapted, error, plan.sql, args)
    if dispatch.after_cursor_execute:
        dispatch.after_cursor_execute(connection, None, plan.sql, args, None, False)
    make, converters = plan.row, plan.converters
    if not converters:
        return [make(record) for record in records]
    rows = []
    for record in records:
        values_ = list(record)
        for at, convert in converters:
            values_[at] = convert(values_[at])
        rows.append(make(values_))
    return rows


def asyncpg_of(connection: Connection) -> AsyncAdapt_asyncpg_connection | None:
    """The asyncpg adapter behind ``connection`` (the bridged engine of :meth:`Database.run`),
    or None for another driver."""
    adapted = connection.connection.dbapi_connection
    return adapted if isinstance(adapted, AsyncAdapt_asyncpg_connection) else None


BEGIN_TENANT = (
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('app.tenant_id', '{tenant}', true)"
)
"""A tenant transaction's start in one round trip: ``BEGIN`` (the isolation level SQLAlchemy's
own ``BEGIN`` names) and the row-level-security tenant (``set_config(.., true)``: it ends
with the transaction)."""


def begin_tenant_transaction(connection: Connection, tenant_id: uuid.UUID) -> None:
    """Start a transaction of ``tenant_id`` on ``connection`` (asyncpg: see
    :func:`asyncpg_of`) with one message to the server, ``BEGIN`` and the RLS tenant
    together (SQLAlchemy and asyncpg would send them one after the other, two round trips).
    The connection is put in SQLAlchemy's ``AUTOCOMMIT`` mode first (reset when it goes back
    to the pool), so that neither SQLAlchemy nor the adapter begins or commits a transaction
    of their own: statements run in this one until :func:`end_transaction`. A driver error
    is raised as SQLAlchemy's."""
    if not isinstance(tenant_id, uuid.UUID):  # it is written into the SQL: a UUID only
        raise TypeError("the tenant of a transaction is a UUID")
    connection.execution_options(isolation_level="AUTOCOMMIT")
    _script(connection, BEGIN_TENANT.format(tenant=tenant_id))


def end_transaction(connection: Connection, *, commit: bool) -> None:
    """``COMMIT`` (``commit``) or ``ROLLBACK`` the transaction that
    :func:`begin_tenant_transaction` began. A failed ``ROLLBACK`` invalidates the connection
    (the pool closes it rather than lend it out in an unknown state); a failed ``COMMIT``
    is raised as SQLAlchemy's error (the server has ended the transaction either way)."""
    if commit:
        _script(connection, "COMMIT")
        return
    try:
        _script(connection, "ROLLBACK")
    except Exception:
        connection.invalidate()


def _script(connection: Connection, sql: str) -> None:
    adapted = asyncpg_of(connection)
    if adapted is None:
        raise TypeError("a transaction begun on the driver needs the asyncpg driver")
    try:
        await_(cast(Any, adapted._connection).execute(sql))  # asyncpg's simple query
    except Exception as error:
        _raise_as_sqlalchemy(connection, adapted, error, sql, [])


_CONSTANT = re.compile(r"[A-Za-z0-9_.:-]+")
"""What :func:`sql_constant` writes into SQL: names of states, statuses, kinds (no quote)."""


def sql_constant(value: str, type_: Any = None) -> ColumnElement[Any]:
    """A constant string written into the SQL as a literal (``'closed'``), not sent as a bind
    parameter. PostgreSQL plans a prepared statement once for all its parameters (its
    *generic* plan, used after five executions): a value it sees only as ``$9`` has no
    statistics, and a condition such as ``state NOT IN ($9, $10)`` is then estimated to keep
    almost no row, which turned the work queue's join around (the unit filter run once per
    case instead of once; twice the database's CPU per page, docs/benchmarks.md, eleventh
    round). A literal keeps the planner's estimate. Only code's own constants go this way
    (letters, digits, ``_ . : -``): :raises ValueError: for anything else."""
    if _CONSTANT.fullmatch(value) is None:
        raise ValueError(f"not a plain SQL constant: {value!r}")
    return literal_column(f"'{value}'", type_)


def constant_in(column: Any, values: Sequence[str], *, negate: bool = False) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` (``NOT IN`` with ``negate``) for a constant list of values,
    written into the SQL (:func:`sql_constant`): a plain list would be an *expanding*
    parameter, which SQLAlchemy rewrites into the SQL at every execution and :func:`kept_rows`
    cannot keep; bind parameters would hide the values from PostgreSQL's generic plan."""
    members = [sql_constant(value, column.type) for value in values]
    return column.not_in(members) if negate else column.in_(members)


def _through_sqlalchemy(
    connection: Connection, statement: Executable, params: Mapping[str, Any]
) -> Sequence[Any]:
    result = connection.execute(statement, dict(params))
    return result.all() if result.returns_rows else []


def _plan(connection: Connection, statement: Executable) -> Any:
    compiled: Any = cast(Any, statement).compile(dialect=connection.dialect)
    if "POSTCOMPILE" in compiled.string:  # an expanding parameter: rewritten at each execution
        return _UNSUITED
    columns = compiled._result_columns  # (key, name, objects, type) per result column
    keys = [c[0] for c in columns]
    if len(set(keys)) != len(keys) or any(not k.isidentifier() or k[0] == "_" for k in keys):
        return _UNSUITED  # a named tuple cannot hold them as SQLAlchemy's Row does
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    bind_processors = compiled._bind_processors
    dialect = connection.dialect
    converters = []
    for at, column in enumerate(columns):
        process = column[3]._cached_result_processor(dialect, None)
        if process is not None:
            converters.append((at, process))
    processors = (bind_processors.get(name) for name in names)
    return _Plan(
        sql=compiled.string,
        names=names,
        values={name: binds[name].effective_value for name in names},
        pick=_picker(names),
        processing=tuple((at, p) for at, p in enumerate(processors) if p is not None),
        row=cast(Any, namedtuple("Row", keys))._make,
        converters=tuple(converters),
        required=frozenset(name for name in names if binds[name].required),
    )


def _picker(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """A function giving the values of ``names`` from a mapping, in order, as a sequence."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    if names:
        name = names[0]
        return lambda params: (params[name],)
    return lambda _params: ()


def _raise_as_sqlalchemy(
    connection: Connection,
    adapted: AsyncAdapt_asyncpg_connection,
    error: Exception,
    sql: str,
    args: list[Any],
) -> Any:
    """Raise ``error`` (the driver's) as SQLAlchemy would: translated to the DBAPI adapter's
    error class, then wrapped by the connection (its ``handle_error`` events, invalidation of a
    lost connection)."""
    try:
        adapted._handle_exception(error)
    except Exception as dbapi_error:
        connection._handle_dbapi_exception(dbapi_error, sql, tuple(args), None, None)
    raise error  # pragma: no cover - _handle_exception always raises


__all__ = [
    "asyncpg_of",
    "begin_tenant_transaction",
    "constant_in",
    "end_transaction",
    "kept_rows",
    "sql_constant",
]
