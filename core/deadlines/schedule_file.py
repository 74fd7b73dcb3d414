"""Loading and dumping a year's holiday schedule transcribed from a State Council notice.

The file format (YAML; the same shape as JSON is what :func:`dump_schedule` returns)::

    year: 2027
    source: "国务院办公厅关于2027年部分节假日安排的通知 (国办发明电〔2026〕N号)"
    holidays:            # ranges of days off, inclusive
      - {name: 元旦, from: 2027-01-01, to: 2027-01-03}
    workdays:            # adjusted working days (调休)
      - {name: 春节调休, date: 2027-02-07}

Every problem raises :class:`ScheduleFileError` naming the file, the path in the document
(``holidays[2].to``) and the reason. This is the only module of the package that does I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from core.deadlines.holidays import YearSchedule

_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_NAME = {"type": "string", "minLength": 1}

SCHEDULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "A year's public holidays and adjusted working days (调休)",
    "type": "object",
    "required": ["year", "source", "holidays"],
    "additionalProperties": False,
    "properties": {
        "year": {"type": "integer", "minimum": 1949, "maximum": 2200},
        "source": {"type": "string", "minLength": 1, "description": "the notice transcribed"},
        "holidays": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "from", "to"],
                "additionalProperties": False,
                "properties": {"name": _NAME, "from": _DATE, "to": _DATE},
            },
        },
        "workdays": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "date"],
                "additionalProperties": False,
                "properties": {"name": _NAME, "date": _DATE},
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEDULE_SCHEMA)


class ScheduleFileError(ValueError):
    """A schedule file that cannot be loaded; ``problems`` lists ``(path, reason)`` pairs."""

    def __init__(self, filename: str, problems: list[tuple[str, str]]) -> None:
        self.filename = filename
        self.problems = problems
        lines = [f"{filename}: {path or '(document)'}: {reason}" for path, reason in problems]
        super().__init__("\n".join(lines))


class _NoDatesLoader(yaml.SafeLoader):
    """A safe loader that keeps ``2027-02-30`` a string, so the schema reports bad dates."""


_NoDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _path(parts: Iterator[str | int] | list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _jsonable(value: Any) -> Any:
    """Dates (from a YAML loaded elsewhere or a caller's dict) as ISO strings, recursively."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _schema_problems(document: Any) -> list[tuple[str, str]]:
    problems = []
    for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path)):
        parts = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(str(k) for k in error.instance if k not in allowed):
                problems.append((_path([*parts, key]), f"unknown key {key!r}"))
            continue
        problems.append((_path(parts), error.message))
    return problems


def schedule_from_dict(document: Any, *, filename: str = "<schedule>") -> YearSchedule:
    """Validate a parsed schedule document and build a ``YearSchedule(source="loaded")``.

    Checks the schema, then that dates are real and inside ``year``, that each range runs
    forward, that a workday is a Saturday or Sunday and lies in no holiday range, and that no
    day is listed twice. Raises :class:`ScheduleFileError` listing every problem found.
    """
    document = _jsonable(document)
    problems = _schema_problems(document)
    if problems:
        raise ScheduleFileError(filename, problems)
    year: int = document["year"]

    def parse(value: str, path: str) -> dt.date | None:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            problems.append((path, f"{value!r} is not a date"))
            return None
        if day.year != year:
            problems.append((path, f"{value} is outside the year {year}"))
            return None
        return day

    holidays: dict[dt.date, str] = {}
    ranges: list[tuple[dt.date, dt.date, str]] = []
    for i, item in enumerate(document["holidays"]):
        begin = parse(item["from"], f"holidays[{i}].from")
        end = parse(item["to"], f"holidays[{i}].to")
        if begin is None or end is None:
            continue
        if end < begin:
            problems.append((f"holidays[{i}].to", f"{end} is before from ({begin})"))
            continue
        day = begin
        while day <= end:
            if day in holidays:
                problems.append((f"holidays[{i}]", f"{day} is already a holiday"))
                break
            holidays[day] = item["name"]
            day += dt.timedelta(days=1)
        ranges.append((begin, end, f"holidays[{i}]"))
    workdays: dict[dt.date, str] = {}
    for i, item in enumerate(document.get("workdays", [])):
        path = f"workdays[{i}].date"
        workday = parse(item["date"], path)
        if workday is None:
            continue
        if workday.weekday() < 5:
            reason = f"{workday} is a {workday:%A}; a 调休 workday is a Saturday or Sunday"
            problems.append((path, reason))
        elif workday in workdays:
            problems.append((path, f"{workday} is listed twice"))
        elif workday in holidays:
            where = next(p for b, e, p in ranges if b <= workday <= e)
            problems.append((path, f"{workday} lies inside the holiday range {where}"))
        else:
            workdays[workday] = item["name"]
    if problems:
        raise ScheduleFileError(filename, problems)
    return YearSchedule(
        year=year,
        holidays=frozenset(holidays),
        workdays=frozenset(workdays),
        source="loaded",
        notice=document["source"],
        names={**holidays, **workdays},
    )


def parse_schedule(text: str, *, filename: str = "<schedule>") -> YearSchedule:
    """Parse YAML (or JSON) ``text`` into a loaded schedule; see :func:`schedule_from_dict`."""
    try:
        document = yaml.load(text, Loader=_NoDatesLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScheduleFileError(filename, [(where, f"not valid YAML: {problem}")]) from exc
    return schedule_from_dict(document, filename=filename)


def load_schedule(path: str | Path) -> YearSchedule:
    """Read and validate the schedule file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScheduleFileError(str(path), [("", f"cannot read the file: {exc}")]) from exc
    return parse_schedule(text, filename=str(path))


def dump_schedule(schedule: YearSchedule) -> dict[str, Any]:
    """The schedule as a JSON-ready document of the file format, for storage.

    Consecutive holidays with the same name become one range. ``schedule_from_dict`` of the
    result gives back the same days (as a ``loaded`` schedule).
    """
    holidays: list[dict[str, str]] = []
    previous: dt.date | None = None
    for day in sorted(schedule.holidays):
        name = schedule.names.get(day, "假日")
        last = holidays[-1] if holidays else None
        if (
            last is not None
            and previous is not None
            and day - previous == dt.timedelta(days=1)
            and last["name"] == name
        ):
            last["to"] = day.isoformat()
        else:
            holidays.append({"name": name, "from": day.isoformat(), "to": day.isoformat()})
        previous = day
    workdays = [
        {"name": schedule.names.get(day, "调休"), "date": day.isoformat()}
        for day in sorted(schedule.workdays)
    ]
    return {
        "year": schedule.year,
        "source": schedule.notice or schedule.source,
        "holidays": holidays,
        "workdays": workdays,
    }
