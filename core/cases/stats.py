"""Case statistics per period and unit, and a counts-only view for public disclosure (公示).

The rules ask for it: 客户服务管理规定 第九条 and 2020-complaints 第二十六条
(analyse, report, disclose).

Figures for the cases *received* in a period ``[start, end]`` (dates in the tenant's time zone):

* ``received`` — cases received;
* ``accepted`` — of them, accepted for handling (an ``accept`` transition);
* ``decided_on_time`` — their decision clock (``complaint.decision``, ``claim.decision``) met;
* ``decided_late`` — their decision clock completed after its due;
* ``breached`` — with at least one deadline clock breached (completed late, or running past due
  at the time of the report);
* ``closed`` — closed;
* ``median_handling_days`` — median of closing time minus receipt, over the closed ones.

Grouped by unit, category, channel or type. Aggregation is done in Python over two narrow queries
(cases, then their clocks and accept events), which behaves the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from core.cases.models import Case, CaseCategory, CaseClock, CaseEvent
from core.orgs.models import OrgUnit

GroupBy = Literal["unit", "category", "channel", "type"]
DECISION_CLOCKS = ("complaint.decision", "claim.decision")
METRICS = (
    "received",
    "accepted",
    "decided_on_time",
    "decided_late",
    "breached",
    "closed",
    "median_handling_days",
)


@dataclass
class Row:
    """The figures of one group."""

    key: str
    label: str
    received: int = 0
    accepted: int = 0
    decided_on_time: int = 0
    decided_late: int = 0
    breached: int = 0
    closed: int = 0
    handling_days: list[float] = field(default_factory=list)

    @property
    def median_handling_days(self) -> float | None:
        """Median days from receipt to closure of the closed cases (None without any)."""
        if not self.handling_days:
            return None
        return round(statistics.median(self.handling_days), 2)

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return {
            "key": self.key,
            "label": self.label,
            **{m: getattr(self, m) for m in METRICS},
        }


@dataclass
class Report:
    """A statistics report: the period, the grouping, one row per group and the total."""

    start: dt.date
    end: dt.date
    group_by: GroupBy
    rows: list[Row]
    total: Row


def _bounds(start: dt.date, end: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime.combine(start, dt.time(0), tzinfo=tz)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return lo, hi


def case_statistics(
    session: Session,
    *,
    start: dt.date,
    end: dt.date,
    tz: ZoneInfo,
    scope: ColumnElement[bool],
    group_by: GroupBy = "unit",
    case_types: Sequence[str] = (),
    now: dt.datetime,
) -> Report:
    """The figures of the cases received from ``start`` to ``end`` (both included) that
    ``scope`` (a WHERE clause on :class:`Case`) keeps, grouped by ``group_by``."""
    lo, hi = _bounds(start, end, tz)
    stmt = select(
        Case.id,
        Case.unit_id,
        Case.category_id,
        Case.channel,
        Case.type,
        Case.received_at,
        Case.closed_at,
        Case.state,
    ).where(scope, Case.received_at >= lo, Case.received_at < hi)
    if case_types:
        stmt = stmt.where(Case.type.in_(list(case_types)))
    cases = session.execute(stmt).all()
    ids = [c.id for c in cases]
    clocks: dict[uuid.UUID, list[tuple[str, str, dt.datetime]]] = defaultdict(list)
    accepted: set[uuid.UUID] = set()
    for chunk in _chunks(ids, 500):
        for case_id, name, status, due in session.execute(
            select(CaseClock.case_id, CaseClock.clock, CaseClock.status, CaseClock.due_at).where(
                CaseClock.case_id.in_(chunk)
            )
        ):
            clocks[case_id].append((name, status, due))
        accepted.update(
            session.scalars(
                select(CaseEvent.case_id).where(
                    CaseEvent.case_id.in_(chunk),
                    CaseEvent.kind == "transition",
                    CaseEvent.action == "accept",
                )
            )
        )
    labels = _labels(session, group_by)
    rows: dict[str, Row] = {}
    total = Row(key="total", label="合计 / total")
    for c in cases:
        key = _key(c, group_by)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key=key, label=labels.get(key, key))
        for target in (row, total):
            target.received += 1
            if c.id in accepted:
                target.accepted += 1
            own = clocks.get(c.id, [])
            decision = [s for n, s, _ in own if n in DECISION_CLOCKS]
            if "met" in decision:
                target.decided_on_time += 1
            elif "breached" in decision:
                target.decided_late += 1
            if any(s == "breached" or (s == "running" and due <= now) for _, s, due in own):
                target.breached += 1
            if c.state == "closed" and c.closed_at is not None:
                target.closed += 1
                days = (c.closed_at - c.received_at).total_seconds() / 86400
                target.handling_days.append(days)
    ordered = sorted(rows.values(), key=lambda r: (r.label, r.key))
    return Report(start=start, end=end, group_by=group_by, rows=ordered, total=total)


def _key(c: Any, group_by: GroupBy) -> str:
    if group_by == "unit":
        return str(c.unit_id)
    if group_by == "category":
        return str(c.category_id) if c.category_id else "none"
    if group_by == "channel":
        return str(c.channel.value)
    return str(c.type.value)


CHANNEL_LABELS = {
    "online": "线上客服 / online",
    "hotline": "电话热线 / hotline",
    "fax": "传真 / fax",
    "letter": "信函 / letter",
    "walk_in": "现场接待 / walk-in",
    "email": "电子邮件 / e-mail",
    "regulator": "监管转办 / regulator transfer",
    "api": "接口 / API",
}
TYPE_LABELS = {
    "complaint": "投诉 / complaint",
    "appeal": "申诉 / appeal",
    "consultation": "咨询 / consultation",
    "claim_report": "报案 / claim report",
    "whistleblowing": "举报 / whistle-blowing",
    "service_request": "售后服务 / service request",
}


def _labels(session: Session, group_by: GroupBy) -> dict[str, str]:
    if group_by == "unit":
        return {str(u.id): f"{u.name} ({u.code})" for u in session.scalars(select(OrgUnit))}
    if group_by == "category":
        labels = {
            str(c.id): f"{c.name_zh} / {c.name_en}" for c in session.scalars(select(CaseCategory))
        }
        labels["none"] = "未分类 / uncategorized"
        return labels
    if group_by == "channel":
        return dict(CHANNEL_LABELS)
    return dict(TYPE_LABELS)


def _chunks(items: Sequence[uuid.UUID], size: int) -> Iterable[Sequence[uuid.UUID]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


HEADER = ("group", *METRICS)


def _table(report: Report) -> list[list[Any]]:
    out: list[list[Any]] = [list(HEADER)]
    for row in [*report.rows, report.total]:
        d = row.as_dict()
        out.append([row.label, *(d[m] for m in METRICS)])
    return out


def to_csv(report: Report) -> bytes:
    """The report as UTF-8 CSV (with a BOM, so spreadsheet programs read the Chinese right)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f"period {report.start.isoformat()} .. {report.end.isoformat()}"])
    for line in _table(report):
        writer.writerow(["" if v is None else v for v in line])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def to_xlsx(report: Report) -> bytes:
    """The report as an XLSX workbook (openpyxl): one sheet, a header row, a total row."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = f"{report.start.isoformat()}..{report.end.isoformat()}"[:31]
    for line in _table(report):
        ws.append(line)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    ws.column_dimensions["A"].width = 36
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def published(report_by_category: Report, report_by_channel: Report) -> dict[str, Any]:
    """The counts-only disclosure (公示): no names, no ids, no free text."""
    total = report_by_category.total
    return {
        "period": {
            "start": report_by_category.start.isoformat(),
            "end": report_by_category.end.isoformat(),
        },
        "received": total.received,
        "accepted": total.accepted,
        "closed": total.closed,
        "decided_on_time": total.decided_on_time,
        "decided_late": total.decided_late,
        "by_category": [
            {"category": r.label, "received": r.received} for r in report_by_category.rows
        ],
        "by_channel": [
            {"channel": r.label, "received": r.received} for r in report_by_channel.rows
        ],
    }
