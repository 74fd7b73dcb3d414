"""The schedule file: loading a transcribed notice, its errors, and the storage dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.deadlines import (
    ScheduleFileError,
    dump_schedule,
    load_schedule,
    official_schedule,
    schedule_from_dict,
    statutory_holidays,
)
from tests.deadlines.conftest import DATA, day

GOOD = """\
year: 2027
source: "test notice"
holidays:
  - {name: 元旦, from: 2027-01-01, to: 2027-01-03}
  - {name: 春节, from: 2027-02-05, to: 2027-02-11}
workdays:
  - {name: 春节调休, date: 2027-02-20}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notice-2027.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> ScheduleFileError:
    path = write(tmp_path, text)
    with pytest.raises(ScheduleFileError) as info:
        load_schedule(path)
    assert str(path) in str(info.value)
    return info.value


def test_2026_transcription_equals_the_library() -> None:
    loaded = load_schedule(DATA / "2026-notice.yaml")
    official = official_schedule(2026)
    assert official is not None
    assert loaded.source == "loaded"
    assert loaded.holidays == official.holidays
    assert loaded.workdays == official.workdays
    assert loaded.notice.startswith("国务院办公厅关于2026年部分节假日安排的通知")


def test_2027_fixture_contains_the_computed_statutory_days() -> None:
    fixture = load_schedule(DATA / "2027-test-fixture.yaml")
    assert "TEST FIXTURE" in fixture.notice
    assert set(statutory_holidays(2027)) <= fixture.holidays


def test_good_file(tmp_path: Path) -> None:
    schedule = load_schedule(write(tmp_path, GOOD))
    assert schedule.year == 2027
    assert len(schedule.holidays) == 10
    assert schedule.workdays == frozenset({day("2027-02-20")})
    assert schedule.names[day("2027-02-08")] == "春节"


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    error = problems_of(tmp_path, "year: 2027\nholidays: [{name: x, from: 2027-01-01\n")
    assert "not valid YAML" in str(error)
    assert "line 3" in str(error)


def test_date_outside_the_year(tmp_path: Path) -> None:
    text = GOOD.replace("to: 2027-02-11", "to: 2028-02-11")
    error = problems_of(tmp_path, text)
    assert error.problems == [("holidays[1].to", "2028-02-11 is outside the year 2027")]
    assert f"{error.filename}: holidays[1].to: 2028-02-11 is outside the year 2027" == str(error)


def test_workday_on_a_weekday(tmp_path: Path) -> None:
    error = problems_of(tmp_path, GOOD.replace("2027-02-20", "2027-02-16"))
    assert error.problems == [
        ("workdays[0].date", "2027-02-16 is a Tuesday; a 调休 workday is a Saturday or Sunday")
    ]


def test_unknown_keys(tmp_path: Path) -> None:
    error = problems_of(tmp_path, GOOD.replace("from: 2027-01-01", "form: 2027-01-01") + "x: 1\n")
    paths = [path for path, _ in error.problems]
    assert "holidays[0].form" in paths
    assert "x" in paths
    assert ("holidays[0]", "'from' is a required property") in error.problems


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (("2027-02-11", "2027-02-30"), "holidays[1].to", "'2027-02-30' is not a date"),
        (("to: 2027-02-11", "to: 2027-02-01"), "holidays[1].to", "is before from"),
        (("2027-02-20", "2027-02-06"), "workdays[0].date", "inside the holiday range holidays[1]"),
        (("from: 2027-02-05", "from: 2027-01-03"), "holidays[1]", "already a holiday"),
        (("year: 2027", "year: '2027'"), "year", "is not of type 'integer'"),
        (("2027-02-20", "20.2.2027"), "workdays[0].date", "does not match"),
    ],
)
def test_semantic_errors(tmp_path: Path, change: tuple[str, str], path: str, reason: str) -> None:
    error = problems_of(tmp_path, GOOD.replace(*change))
    assert [p for p, _ in error.problems] == [path]
    assert reason in error.problems[0][1]


def test_duplicate_workday(tmp_path: Path) -> None:
    error = problems_of(tmp_path, GOOD + "  - {name: again, date: 2027-02-20}\n")
    assert error.problems == [("workdays[1].date", "2027-02-20 is listed twice")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScheduleFileError, match="cannot read"):
        load_schedule(tmp_path / "absent.yaml")


def test_dump_round_trips() -> None:
    fixture = load_schedule(DATA / "2027-test-fixture.yaml")
    document = dump_schedule(fixture)
    assert document["holidays"][1] == {"name": "春节", "from": "2027-02-05", "to": "2027-02-13"}
    assert schedule_from_dict(document) == fixture
    # The library's years dump too (e.g. to seed the database), and reload as loaded years.
    official = official_schedule(2025)
    assert official is not None
    again = schedule_from_dict(dump_schedule(official))
    assert (again.holidays, again.workdays, again.source) == (
        official.holidays,
        official.workdays,
        "loaded",
    )
