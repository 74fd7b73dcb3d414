"""Data access of the case aggregate: cases, their clocks and timeline, categories, counters."""

from __future__ import annotations

import functools
import string
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.audit.services import lock_head_with
from core.cases.models import (
    OPEN_CLOCK_STATUSES,
    Attachment,
    Case,
    CaseCategory,
    CaseClock,
    CaseCounter,
    CaseEvent,
    CaseType,
)
from core.db import new_id
from core.db_driver import kept_rows

NUMBER_PREFIXES: dict[CaseType, str] = {
    CaseType.COMPLAINT: "TS",  # 投诉
    CaseType.APPEAL: "SS",  # 申诉
    CaseType.CONSULTATION: "ZX",  # 咨询
    CaseType.CLAIM_REPORT: "BA",  # 报案
    CaseType.WHISTLEBLOWING: "JB",  # 举报
    CaseType.SERVICE_REQUEST: "FW",  # 服务
    CaseType.DATA_SUBJECT_REQUEST: "GR",  # 个人信息 (个人信息权利请求)
}
"""``{prefix}`` of the case-number format: the pinyin initials of the case type."""

NUMBER_FIELDS = frozenset({"prefix", "year", "unit", "seq"})

DEFAULT_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("sales", "销售", "Sales"),
    ("underwriting", "承保", "Underwriting"),
    ("claims", "理赔", "Claims"),
    ("policy_service", "保全", "Policy service"),
    ("premium", "保费", "Premium"),
    ("other", "其他", "Other"),
)
"""The seeded complaint classification (code, Chinese, English)."""


def tenant_id_of(session: Session) -> uuid.UUID:
    """The tenant of a tenant session."""
    tid = session.info.get("tenant_id")
    if tid is None:
        raise RuntimeError("a tenant session is required")
    assert isinstance(tid, uuid.UUID)
    return tid


# -- cases ----------------------------------------------------------------------------------


def get_case(session: Session, case_id: uuid.UUID, *, for_update: bool = False) -> Case:
    """The case ``case_id`` of the session's tenant, or a 404 problem."""
    if for_update:
        case = session.scalars(
            select(Case).where(Case.id == case_id).with_for_update()
        ).one_or_none()
    else:
        case = session.get(Case, (tenant_id_of(session), case_id))
    if case is None:
        raise not_found("case", case_id)
    return case


def clocks_of(session: Session, case_id: uuid.UUID) -> list[CaseClock]:
    """Every clock of a case, by start then name."""
    return list(
        session.scalars(
            select(CaseClock)
            .where(CaseClock.case_id == case_id)
            .order_by(CaseClock.started_at, CaseClock.clock, CaseClock.id)
        )
    )


def open_clocks(session: Session, case_id: uuid.UUID) -> list[CaseClock]:
    """The case's clocks that still run, are paused, or are open windows."""
    return [c for c in clocks_of(session, case_id) if c.status in (*OPEN_CLOCK_STATUSES, "window")]


def timeline(session: Session, case_id: uuid.UUID) -> Sequence[CaseEvent]:
    """The case's events in order."""
    return session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.seq)
    ).all()


def attachments_of(session: Session, case_id: uuid.UUID) -> Sequence[Attachment]:
    """The case's attachments, oldest first."""
    return session.scalars(
        select(Attachment)
        .where(Attachment.case_id == case_id)
        .order_by(Attachment.uploaded_at, Attachment.id)
    ).all()


def refresh_next_due(session: Session, case: Case) -> None:
    """Set ``case.next_due_at`` to the earliest due of its running deadline clocks."""
    session.flush()
    case.next_due_at = session.scalar(
        select(func.min(CaseClock.due_at)).where(
            CaseClock.case_id == case.id, CaseClock.status == "running"
        )
    )


# -- counters -------------------------------------------------------------------------------


def next_value(session: Session, key: str) -> int:
    """Increment the tenant's counter ``key`` and return the new value (first value: 1).

    One ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` in the caller's transaction: the row
    lock it takes serializes concurrent callers on PostgreSQL, and SQLite serializes writers,
    so no two transactions ever get the same value.
    """
    params = {"tenant_id": tenant_id_of(session), "id": new_id(), "key": key}
    connection = session.connection()  # a Core statement: not through the ORM's execute
    (row,) = kept_rows(connection, _counter_statement(connection.dialect.name), params)
    return int(row[0])


@functools.cache
def _counter_statement(dialect: str) -> Any:
    """The counter upsert of :func:`next_value` (built once per dialect)."""
    table = cast(Table, CaseCounter.__table__)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(table)
        .values(tenant_id=bindparam("tenant_id"), id=bindparam("id"), key=bindparam("key"), value=1)
        .on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.key],
            set_={"value": table.c.value + 1},
        )
        .returning(table.c.value)
    )


def number_format_fields(fmt: str) -> set[str]:
    """The placeholders of a case-number format; a ValueError when one is unknown."""
    fields = {name for _, name, _, _ in string.Formatter().parse(fmt) if name}
    unknown = fields - NUMBER_FIELDS
    if unknown or "seq" not in fields:
        raise ValueError(
            f"case number format {fmt!r}: needs {{seq}} and only {sorted(NUMBER_FIELDS)}"
        )
    return fields


class NextNumber(NamedTuple):
    """A case number just taken, and the tenant's audit head when it was locked with it."""

    number: str
    audit_head: tuple[int, str] | None
    """``(seq, hash)``, for :func:`core.audit.services.record` (``head=``); None unless asked."""


def next_case_number(
    session: Session,
    *,
    fmt: str,
    case_type: CaseType,
    received_at: datetime,
    tz: ZoneInfo,
    unit_code: str,
    lock_audit_head: bool = False,
) -> NextNumber:
    """The next case number in the tenant's format, e.g. ``TS-2026-000123``.

    The sequence is kept per value of the format's other placeholders: with the default
    ``{prefix}-{year}-{seq:06d}`` each case type counts from 1 each year. With
    ``lock_audit_head`` the tenant's audit head is locked and read by the same statement
    (:func:`core.audit.services.lock_head_with`): a registration needs both before it writes,
    and on PostgreSQL they then cost one round trip instead of two.
    """
    key, values = _number_scope(fmt, case_type, received_at, tz, unit_code)
    if not lock_audit_head:
        return NextNumber(fmt.format(seq=next_value(session, key), **values), None)
    connection = session.connection()
    row, head = lock_head_with(
        session,
        _counter_statement(connection.dialect.name),
        {"tenant_id": tenant_id_of(session), "id": new_id(), "key": key},
    )
    return NextNumber(fmt.format(seq=int(row.value), **values), head)


def _number_scope(
    fmt: str, case_type: CaseType, received_at: datetime, tz: ZoneInfo, unit_code: str
) -> tuple[str, dict[str, Any]]:
    """The counter key of a case number and the values of its format's other fields."""
    try:
        fields = number_format_fields(fmt)
    except ValueError as exc:
        raise Problem(500, str(exc), slug="bad-number-format") from exc
    values: dict[str, Any] = {
        "prefix": NUMBER_PREFIXES[case_type],
        "year": received_at.astimezone(tz).year,
        "unit": unit_code,
    }
    scope = "|".join(f"{k}={values[k]}" for k in sorted(fields - {"seq"}))
    return f"number:{fmt}|{scope}", values


# -- categories -----------------------------------------------------------------------------


def seed_case_categories(session: Session, tenant_id: uuid.UUID) -> list[CaseCategory]:
    """Create the default categories missing from ``tenant_id``; return those created.

    Works in a tenant session and in the platform session (provisioning).
    """
    existing = set(
        session.scalars(select(CaseCategory.code).where(CaseCategory.tenant_id == tenant_id)).all()
    )
    created = []
    for order, (code, zh, en) in enumerate(DEFAULT_CATEGORIES):
        if code in existing:
            continue
        category = CaseCategory(
            tenant_id=tenant_id,
            code=code,
            name_zh=zh,
            name_en=en,
            sort_order=order * 10,
            builtin=True,
        )
        session.add(category)
        created.append(category)
    session.flush()
    return created


def get_category(session: Session, category_id: uuid.UUID) -> CaseCategory:
    """The category ``category_id`` of the session's tenant, or a 404 problem."""
    category = session.get(CaseCategory, (tenant_id_of(session), category_id))
    if category is None:
        raise not_found("case category", category_id)
    return category


def get_category_by_code(session: Session, code: str) -> CaseCategory | None:
    """The category with ``code``, or None."""
    return session.scalars(select(CaseCategory).where(CaseCategory.code == code)).one_or_none()


def list_categories(session: Session, *, include_inactive: bool = False) -> Sequence[CaseCategory]:
    """The tenant's categories in display order."""
    stmt = select(CaseCategory).order_by(CaseCategory.sort_order, CaseCategory.code)
    if not include_inactive:
        stmt = stmt.where(CaseCategory.active.is_(True))
    return session.scalars(stmt).all()
