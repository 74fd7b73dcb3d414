"""Several writes sent as one statement on PostgreSQL (docs/decisions/0012-one-statement-writes.md).

A :class:`WriteBatch` collects INSERTs (several rows each, optionally with ``ON CONFLICT ..
DO UPDATE``) and UPDATEs of one transaction, then sends them:

- on PostgreSQL as **one** statement, a chain of data-modifying CTEs. Sent to asyncpg itself
  (:func:`~core.db_driver.kept_rows`, which compiles a kept statement once), one CTE per part,
  its rows in one multi-row ``VALUES`` (``WITH w0_0 AS (INSERT .. VALUES (..), (..)), w1_0 AS
  (UPDATE ..) SELECT 1``: PostgreSQL sets up one insert per table, not per row). Through
  SQLAlchemy's execution (psycopg: the command-line tools and workers), one CTE per row
  (``w0_0``, ``w0_1``, ..): SQLAlchemy does not cache a multi-row ``VALUES``, and a statement
  compiled at every execution would cost more than it saves. Every value is a bind
  parameter, and the statement object is kept per shape (the same parts, tables, columns and
  row counts), so it is compiled once;
- elsewhere (SQLite) one statement per part, in the order they were added, with the same
  statements :func:`execute_insert` runs for a single write.

The column types process every value either way (JSON, :class:`~core.privacy.fields.SealedText`,
UUIDs, enums). Foreign keys between rows of the same batch hold on PostgreSQL: its
referential checks run at the end of the statement, when every part has been written. The
parts of one statement see the same snapshot, so a part must not depend on another part's
effect (e.g. update a row that another part inserts); the callers here never do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import replacement_traverse

from core.db_driver import asyncpg_of, kept_rows

OnConflict = Callable[[Any], Any]
"""Adds an ``ON CONFLICT`` clause to a dialect's ``INSERT`` (PostgreSQL's or SQLite's
``insert(table)``, which have ``excluded`` and ``on_conflict_do_update``). A module-level
function: it is part of the kept statements' keys."""


@functools.cache
def single_insert(table: Table, on_conflict: OnConflict | None, dialect: str, many: bool) -> Any:
    """The ``INSERT`` of one write, its values parameters (built once per table, conflict
    clause, dialect and one/several rows, so its compiled form is cached). For several rows it
    returns the ids: SQLAlchemy then sends them as one multi-row ``INSERT .. VALUES (..), (..)``
    ("insertmanyvalues") rather than the driver's executemany (pipelined by psycopg, several
    times the CPU)."""
    stmt = insert(table) if on_conflict is None else on_conflict(_dialect_insert(dialect)(table))
    return stmt.returning(table.c.id) if many else stmt


def _dialect_insert(dialect: str) -> Callable[[Table], Any]:
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"ON CONFLICT on {dialect}")


def execute_insert(
    connection: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    on_conflict: OnConflict | None = None,
) -> None:
    """Write ``rows`` (column key to value, the same keys in every row) into ``table`` now,
    with one statement: what a batch does for one part outside PostgreSQL."""
    if not rows:
        return
    many = len(rows) > 1
    stmt = single_insert(table, on_conflict, connection.dialect.name, many)
    connection.execute(stmt, list(rows) if many else rows[0])


@dataclass
class _Part:
    """One collected write: its shape (what the kept statement depends on) and its values."""

    shape: tuple[Any, ...]
    params: list[Mapping[str, Any]] = field(default_factory=list)


class WriteBatch:
    """Writes collected in the caller's transaction and sent by :meth:`execute`: one statement
    on PostgreSQL, one per part elsewhere (see the module's documentation).

    Nothing is written before :meth:`execute`; a failure of any part (a constraint, a type
    refusing a value) raises the driver's error as the part alone would, and on PostgreSQL
    none of the parts is written. ``then`` callbacks run after a successful execute (e.g. to
    keep written objects in the session)."""

    def __init__(self, session: Session, *, keep_objects: bool = True) -> None:
        self.session = session
        self.keep_objects = keep_objects
        """Whether objects written through the batch (:func:`core.db.insert_new`) are kept in
        the session afterwards, as a flush leaves them. False for a caller that ends the
        transaction right after and never touches them through the session again (the API's
        registration): keeping costs more than the write."""
        self._parts: list[_Part] = []
        self._then: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._parts)

    def insert(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        on_conflict: OnConflict | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Add the ``INSERT`` of ``rows`` (column key to value, the same keys in each) into
        ``table``, with ``on_conflict``'s clause if given; ``then`` runs after the write."""
        if rows:
            keys = tuple(rows[0])
            if any(tuple(row) != keys for row in rows):
                raise ValueError("every row of a batched insert has the same columns")
            part = _Part(("insert", table, keys, len(rows), on_conflict), list(rows))
            self._parts.append(part)
        if then is not None:
            self._then.append(then)

    def update(self, statement: Update, params: Mapping[str, Any]) -> None:
        """Add ``statement`` (an ``UPDATE`` with named bind parameters, built once by the
        caller) with ``params``, the values of those parameters."""
        self._parts.append(_Part(("update", statement, tuple(params)), [params]))

    def execute(self) -> None:
        """Send the collected writes (nothing if there are none), then run the ``then``
        callbacks. The batch is empty afterwards."""
        parts, then = self._parts, self._then
        self._parts, self._then = [], []
        if parts:
            connection = self.session.connection()
            if one_statement(connection, len(parts)):
                shape = tuple(p.shape for p in parts)
                stmt, names = _combined(shape, multi_row=asyncpg_of(connection) is not None)
                params: dict[str, Any] = {}
                for part, part_names in zip(parts, names, strict=True):
                    for row, row_names in zip(part.params, part_names, strict=True):
                        params.update(zip(row_names, row.values(), strict=True))
                kept_rows(connection, stmt, params)
            else:
                for part in parts:
                    _execute_part(connection, part)
        for callback in then:
            callback()


def one_statement(connection: Connection, parts: int) -> bool:
    """Whether ``parts`` writes go to ``connection`` as one statement: on PostgreSQL, for more
    than one (a single part is sent as it is)."""
    return connection.dialect.name == "postgresql" and parts > 1


def _execute_part(connection: Connection, part: _Part) -> None:
    if part.shape[0] == "insert":
        _, table, _keys, _count, on_conflict = part.shape
        execute_insert(connection, table, part.params, on_conflict)
    else:
        connection.execute(part.shape[1], dict(part.params[0]))


def _name(part: int, row: int, key: str) -> str:
    return f"w{part}_{row}_{key}"


_Names = tuple[tuple[tuple[str, ...], ...], ...]
"""Per part, per row, the names of its parameters (in the order of the row's columns)."""

_COMBINED: dict[tuple[Any, ...], tuple[Any, _Names]] = {}
"""The one statement of each batch shape seen (and form: ``multi_row``), with its parameter
names (see :func:`_combined`)."""
_MAX_SHAPES = 256


def _combined(shape: tuple[Any, ...], *, multi_row: bool) -> tuple[Any, _Names]:
    """``WITH w0_0 AS (..), w1_0 AS (..) .. SELECT 1`` for the parts of ``shape``: with
    ``multi_row`` each part's rows in one ``VALUES`` (for :func:`kept_rows` on asyncpg), else a
    single-row statement per row (``w0_0``, ``w0_1``: SQLAlchemy caches those, not a multi-row
    ``VALUES``); their values bind parameters named by part, row and column, and those names.
    Kept per shape (so the statement is compiled once)."""
    key = (shape, multi_row)
    found = _COMBINED.get(key)
    if found is not None:
        return found
    ctes = [
        stmt.cte(f"w{i}_{j}")
        for i, part in enumerate(shape)
        for j, stmt in enumerate(_part_statements(i, part, multi_row))
    ]
    names = tuple(_part_names(i, part) for i, part in enumerate(shape))
    if len(_COMBINED) >= _MAX_SHAPES:  # shapes are few; never grow without bound
        _COMBINED.clear()
    found = _COMBINED[key] = (select(literal_column("1").label("written")).add_cte(*ctes), names)
    return found


def _part_names(i: int, shape: Any) -> tuple[tuple[str, ...], ...]:
    if shape[0] == "insert":
        _, _table, keys, count, _on_conflict = shape
        return tuple(tuple(_name(i, j, key) for key in keys) for j in range(count))
    return (tuple(_name(i, 0, key) for key in shape[2]),)


def _part_statements(i: int, shape: Any, multi_row: bool) -> list[Any]:
    """The statements of part ``i`` inside the combined one (one, or with several rows and
    without ``multi_row`` one per row), their parameters renamed."""
    if shape[0] == "insert":
        _, table, keys, count, on_conflict = shape
        rows = [
            {key: bindparam(_name(i, j, key), type_=table.c[key].type) for key in keys}
            for j in range(count)
        ]
        groups: list[Any] = [rows] if multi_row and count > 1 else rows
        if on_conflict is None:
            return [insert(table).values(values) for values in groups]
        return [on_conflict(postgresql.insert(table).values(values)) for values in groups]
    statement: Update = shape[1]
    opts: dict[str, Any] = {}

    def rename(element: Any, **_kw: Any) -> Any:
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(_name(i, 0, element.key), type_=element.type)
        return None

    return [replacement_traverse(statement, opts, rename)]


__all__ = ["OnConflict", "WriteBatch", "execute_insert", "single_insert"]
