"""The engines :func:`core.db.make_engine` builds: JSON columns read as ``json.loads`` reads
them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import JSON, text

from core.db import Database, json_loads


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


def test_json_columns_round_trip(database: Database) -> None:
    value = {"complexity": ["a", "三"], "n": 12345678901234567890, "f": 0.1}
    sql = "SELECT CAST(:v AS json) AS j" if database.is_postgres else "SELECT :v AS j"
    with database.engine.connect() as conn:
        got = conn.execute(text(sql).columns(j=JSON), {"v": json.dumps(value)}).scalar()
    assert got == value
