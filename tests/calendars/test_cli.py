"""``insurdesk deadlines due`` and ``insurdesk calendar load``: the operator's view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import build_cli
from core.migrate import upgrade

DATA = Path(__file__).parent.parent / "deadlines" / "data"


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    return {"INSURDESK_DATABASE_URL": url, "INSURDESK_VAR_DIR": str(tmp_path)}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_cli(), list(args), env=env)
    return result.exit_code, result.output


def test_due_on_the_eve_of_national_day(env: dict[str, str]) -> None:
    code, out = run(env, "deadlines", "due", "--start", "2025-09-30T10:00", "--days", "15")
    assert code == 0, out
    report = json.loads(out)
    assert report["last_day"] == "2025-10-15"
    assert report["due"] == "2025-10-16T00:00:00+08:00"
    assert report["provisional"] is False


def test_working_days_across_spring_festival(env: dict[str, str]) -> None:
    code, out = run(env, "deadlines", "due", "--start", "2026-02-13", "--working-days", "5")
    assert code == 0, out
    # 2026-02-14 (Sat) is a 调休 working day; 15–23 Feb are the Spring Festival days off;
    # 24, 25, 26, 27 Feb follow. Fifth working day: 2026-02-27.
    assert json.loads(out)["last_day"] == "2026-02-27"


def test_provisional_until_the_year_is_loaded(env: dict[str, str]) -> None:
    code, out = run(env, "deadlines", "due", "--start", "2026-12-10", "--days", "60")
    before = json.loads(out)
    assert code == 0 and before["provisional"] is True
    assert before["calendar_years"]["2027"] == "provisional"

    code, out = run(env, "calendar", "load", str(DATA / "2027-test-fixture.yaml"))
    assert code == 0 and "loaded" in out
    code, out = run(env, "calendar", "load", str(DATA / "2027-test-fixture.yaml"))
    assert code == 0 and "no changes" in out

    code, out = run(env, "deadlines", "due", "--start", "2026-12-10", "--days", "60")
    after = json.loads(out)
    assert after["provisional"] is False and after["calendar_years"]["2027"] == "loaded"
    assert after["last_day"] != before["last_day"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "yesterday", "--days", "3"], "not an ISO date"),
        (["--start", "2026-01-05"], "exactly one of --days and --working-days"),
        (["--start", "2026-01-05", "--days", "3", "--working-days", "2"], "exactly one"),
        (["--start", "2026-01-05", "--days", "-1"], "--days"),
        (["--start", "2026-01-05", "--days", "3", "--tenant", "nobody"], "no tenant"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    code, out = run(env, "deadlines", "due", *args)
    assert code == 2
    assert message in out


def test_a_bad_schedule_file_is_refused_naming_file_and_path(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "2028.yaml"
    bad.write_text(
        "year: 2028\nsource: test\nholidays:\n  - {name: 元旦, from: 2029-01-01, to: 2029-01-01}\n"
    )
    code, out = run(env, "calendar", "load", str(bad))
    assert code == 2
    assert "2028.yaml" in out and "holidays[0]" in out
