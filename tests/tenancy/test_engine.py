"""The engines :func:`core.db.make_engine` builds: JSON columns read as ``json.loads`` reads
them, and a pooled PostgreSQL connection that died while idle is replaced before use."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import JSON, bindparam, event, text

from core import db as core_db
from core.db import Database, json_dumps, json_loads, make_engine


@pytest.mark.parametrize(
    "raw",
    [
        '["a", "b"]',
        '{"a": 1, "a": 2}',
        "123456789012345678901234567890",
        "1e400",
        "NaN",
        '"\\ud800"',
        '[1.5, -0.0, 1E5, "\\u00e9\\ud83d\\ude00", null, true]',
        '{"nested": {"x": [1, 2.25, "三"]}}',
    ],
)
def test_json_loads_reads_what_json_loads_reads(raw: str) -> None:
    expected = json.loads(raw)
    for data in (raw, raw.encode()):
        got = json_loads(data)
        assert repr(got) == repr(expected)
        assert type(got) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        {"complexity": ["a", "三"], "n": 12345678901234567890, "f": 0.1, "neg": -0.0},
        ["\u00e9\ud83d\ude00", None, True, 1e300, {"nested": {"x": [1, 2.25]}}],
        ["é😀", "\ud800 unpaired"],
        {"text": 'line\nbreak "quoted" \\ tab\t \u0001', "": 0},
        "just a string",
        7,
    ],
)
def test_json_dumps_writes_the_value_json_dumps_writes(value: object) -> None:
    written = json_dumps(value)
    expected = json.loads(json.dumps(value))  # (a surrogate pair reads back as its character)
    assert json.loads(written) == expected
    assert json_loads(written) == expected


def test_json_columns_are_written_with_json_dumps(database: Database) -> None:
    value = {"subject": "理赔进度慢", "clocks": [{"due": "2026-12-01T16:00:00+00:00"}]}
    sql = "SELECT CAST(:v AS json) AS j" if database.is_postgres else "SELECT :v AS j"
    with database.engine.connect() as conn:
        bound = text(sql).bindparams(bindparam("v", type_=JSON)).columns(j=JSON)
        assert conn.execute(bound, {"v": value}).scalar() == value
    assert database.engine.dialect._json_serializer is json_dumps  # type: ignore[attr-defined]


def test_json_columns_round_trip(database: Database) -> None:
    value = {"complexity": ["a", "三"], "n": 12345678901234567890, "f": 0.1}
    sql = "SELECT CAST(:v AS json) AS j" if database.is_postgres else "SELECT :v AS j"
    with database.engine.connect() as conn:
        got = conn.execute(text(sql).columns(j=JSON), {"v": json.dumps(value)}).scalar()
    assert got == value


@pytest.mark.postgres_only
def test_a_dead_idle_connection_is_replaced_before_use(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(database.admin_engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with database.admin_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
            admin.commit()
        time.sleep(0.2)
        monkeypatch.setattr(core_db, "PING_IDLE_SECONDS", 0.0)  # idle long enough: pinged
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_a_connection_in_use_a_moment_ago_is_not_pinged(database: Database) -> None:
    engine = make_engine(database.admin_engine.url.render_as_string(hide_password=False))
    pings: list[object] = []
    original = engine.dialect.do_ping

    def counting_ping(dbapi_conn: object) -> bool:
        pings.append(dbapi_conn)
        return bool(original(dbapi_conn))

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    try:
        for _ in range(3):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert pings == []
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_a_pool_keeps_the_connections_of_a_busy_web_process(database: Database) -> None:
    """16 requests at a time (what bench/api.py sends one process), all returning their
    connections together, round after round: each connection is opened once and kept, not
    closed on return and opened again for the next round (a PostgreSQL backend started and
    every statement prepared again each time)."""
    engine = make_engine(database.admin_engine.url.render_as_string(hide_password=False))
    opened: list[object] = []
    event.listen(engine, "connect", lambda dbapi_conn, record: opened.append(dbapi_conn))
    concurrent, rounds = 16, 4
    all_in = threading.Barrier(concurrent)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            for _ in range(rounds):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                    all_in.wait(timeout=30)  # every connection checked out at once
                all_in.wait(timeout=30)  # ... and returned together
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(concurrent)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(opened) == concurrent
        assert concurrent <= core_db.POOL_SIZE
    finally:
        engine.dispose()


def test_new_ids_are_ordered_and_dated_by_the_clock() -> None:
    """Primary keys are UUIDv7: made in a burst they still sort in the order they were made,
    and their time is the clock's, not minutes ahead of it (uuid6's uuid7 moved it one
    millisecond ahead per id within the same millisecond)."""
    import uuid

    from core.db import new_id

    ids = [new_id() for _ in range(50_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.version == 7 and type(i) is uuid.UUID for i in ids[:10])
    assert abs((ids[-1].int >> 80) / 1000 - time.time()) < 2
