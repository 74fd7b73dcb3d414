"""Case schemas at the HTTP edge (msgspec): what a client sends and what it gets back."""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import Row

from core.api.schemas import Input, Output
from core.cases.clocks import is_window
from core.cases.disclosure import MASKED as MASKED_CASE
from core.cases.disclosure import Disclosure
from core.cases.models import (
    EVENT_TEXT_KEYS,
    Attachment,
    Case,
    CaseCategory,
    CaseClock,
    CaseEvent,
    CaseType,
    CaseView,
    Channel,
    ServiceKind,
    event_parts,
)
from core.privacy.fields import MASK_VERSION, masked
from core.privacy.masking import mask_text

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
NoticeChannel = Literal["phone", "sms", "email", "letter", "wechat", "walk_in", "online", "fax"]
"""How a notice reached the customer (2020-complaints 第二十一条: in writing, by post,
by SMS or e-mail, or by telephone)."""

MASKED = "***"


# -- inputs ---------------------------------------------------------------------------------


class CaseCreate(Input):
    """Register a case. ``received_at`` defaults to now (a letter received earlier: its date)."""

    type: CaseType
    channel: Channel
    subject: Short
    unit_id: uuid.UUID
    description: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None
    received_at: datetime | None = None
    customer_id: uuid.UUID | None = None
    policy_id: uuid.UUID | None = None
    category_id: uuid.UUID | None = None
    category: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """A category code, instead of ``category_id``."""
    assignee_id: uuid.UUID | None = None
    service_kind: ServiceKind | None = None
    complexity: list[Annotated[str, msgspec.Meta(max_length=40)]] = []
    parent_case_id: uuid.UUID | None = None
    """An appeal: the complaint it is about."""
    regulator_reference: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    regulator_due_date: date | None = None
    reporter_anonymous: bool = False
    reporter_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    reporter_contact: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    reporter_id_number: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class TransitionIn(Input):
    """Take an action of the lifecycle (see docs/cases.md for what each one requires)."""

    action: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    occurred_at: datetime | None = None
    """When it happened (default: now); never in the future nor before the last event."""
    reason: Text | None = None
    refer_to: Short | None = None
    to_unit_id: uuid.UUID | None = None
    decision: Text | None = None
    answer: Text | None = None
    notice_channel: NoticeChannel | None = None
    missing_materials: list[Short] | None = None
    report: Text | None = None
    plan: Text | None = None
    review_decision: Text | None = None
    amount: Decimal | None = None
    """A claim's money, in yuan with at most two decimals (``"1280.50"``): what ``pay_advance``
    advances (保险法 第二十五条), what ``agree`` agrees, what ``pay`` paid. Recorded in the
    transition's timeline event and its ``case.transitioned`` message."""


class ClockExtendIn(Input):
    """Extend a clock: 15 → 30 days with a reason; → 60 with a senior approver and a notice."""

    reason: Text
    to_amount: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    approved_by_id: uuid.UUID | None = None
    notice_channel: NoticeChannel | None = None
    notice: Text | None = None
    occurred_at: datetime | None = None


class ClockPauseIn(Input):
    """Pause a clock for an external appraisal or a mediation (not counted in the period)."""

    kind: Literal["appraisal", "mediation"]
    reason: Text
    occurred_at: datetime | None = None


class ClockResumeIn(Input):
    """Resume a paused clock: the due moves by the days the pause excluded."""

    reason: Text | None = None
    occurred_at: datetime | None = None


class AssignIn(Input):
    """Give the case to a handler (None: unassign)."""

    assignee_id: uuid.UUID | None
    reason: Text | None = None


class AutoAssignIn(Input):
    """Assign the unit's unassigned open cases round-robin among its handlers."""

    unit_id: uuid.UUID


class NoticeIn(Input):
    """Record a notice sent to the customer: what, by which channel, when."""

    channel: NoticeChannel
    content: Text
    purpose: Annotated[str, msgspec.Meta(max_length=40)] = "information"
    occurred_at: datetime | None = None


SortOrder = Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
"""Position of a category in lists (bounded, so it always fits the column)."""


class CategoryCreate(Input):
    """A new category of the tenant's classification."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_.\-]+$")]
    name_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    parent_id: uuid.UUID | None = None
    case_types: list[CaseType] = []
    sort_order: SortOrder = 0


class CategoryUpdate(Input):
    """Rename, reorder, restrict or retire a category (a retired one takes no new cases)."""

    name_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    case_types: list[CaseType] | None = None
    sort_order: SortOrder | None = None
    active: bool | None = None


class ViewCreate(Input):
    """A saved work-queue view: a name and the list filters (the list endpoint's parameters)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    filters: dict[str, Any]


# -- outputs --------------------------------------------------------------------------------


class ClockOut(Output):
    """A deadline clock: its rule, its source, its due, its state."""

    clock: str
    citation: str
    source: str
    statutory: bool
    amount: int
    unit: str
    started_at: datetime
    due_at: datetime
    last_day: date
    status: str
    """``running``, ``paused``, ``met``, ``breached``, ``cancelled``, ``window`` or
    ``expired`` (a customer's window that closed unused); ``running`` past the due reads
    ``breached``."""
    kind: Literal["deadline", "window"]
    provisional: bool
    """The due reaches into a year whose holiday schedule is not published yet."""
    paused_at: datetime | None
    paused_seconds: int
    extensions: list[dict[str, Any]]
    completed_at: datetime | None

    @classmethod
    def of(cls, c: CaseClock, now: datetime) -> ClockOut:
        """Render a clock as of ``now`` (times in UTC, as they are stored, whether the clock
        was just computed in the tenant's zone or read back)."""
        status = c.status
        if status == "running" and now >= c.due_at:
            status = "breached"
        elif status == "window" and now >= c.due_at:
            status = "expired"
        return cls(
            clock=c.clock,
            citation=c.citation,
            source=c.source,
            statutory=c.statutory,
            amount=c.amount,
            unit=c.unit,
            started_at=c.started_at.astimezone(UTC),
            due_at=c.due_at.astimezone(UTC),
            last_day=c.last_day,
            status=status,
            kind="window" if is_window(c.clock) else "deadline",
            provisional=c.provisional,
            paused_at=_utc(c.paused_at),
            paused_seconds=c.paused_seconds,
            extensions=list(c.history.get("extensions", [])),
            completed_at=_utc(c.completed_at),
        )


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


class ReporterOut(Output):
    """A whistle-blower's identity (masked without ``cases:whistleblower``)."""

    anonymous: bool
    name: str | None
    contact: str | None
    id_number: str | None
    masked: bool


class CaseOut(Output):
    """A case (list form: no clocks)."""

    id: uuid.UUID
    number: str
    type: CaseType
    channel: Channel
    state: str
    subject: str
    description: str | None
    received_at: datetime
    unit_id: uuid.UUID
    category_id: uuid.UUID | None
    customer_id: uuid.UUID | None
    policy_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    service_kind: str | None
    complexity: list[str]
    parent_case_id: uuid.UUID | None
    regulator_reference: str | None
    regulator_due_date: date | None
    regulator_reported_at: datetime | None
    reporter: ReporterOut | None
    missing_materials: list[str]
    not_accepted_reason: str | None
    refer_to: str | None
    plan: str | None
    decision: str | None
    decided_at: datetime | None
    answer: str | None
    answered_at: datetime | None
    review_decision: str | None
    review_decided_at: datetime | None
    closed_at: datetime | None
    next_due_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    provisional: bool = False
    breached: bool = False
    masked: bool = True
    """True: identifiers in the free text are masked (declare a purpose in ``X-Purpose``,
    holding ``customers:read_clear`` at the case's unit, to read it in clear)."""

    @classmethod
    def of(
        cls, c: Case | Row[Any], *, disclosure: Disclosure = MASKED_CASE, **extra: Any
    ) -> CaseOut:
        """Render a case: free text masked unless ``disclosure.clear``, the reporter's
        identity only when ``disclosure.reporter``."""
        text = _texts(c, clear=disclosure.clear)
        reporter = None
        if c.type == CaseType.WHISTLEBLOWING:
            identity = (c.reporter_name, c.reporter_contact, c.reporter_id_number)
            reporter = _reporter(c.reporter_anonymous, disclosure, *identity)
        return cls(
            id=c.id,
            number=c.number,
            type=c.type,
            channel=c.channel,
            state=c.state,
            subject=text["subject"] or "",
            description=text["description"],
            received_at=c.received_at,
            unit_id=c.unit_id,
            category_id=c.category_id,
            customer_id=c.customer_id,
            policy_id=c.policy_id,
            assignee_id=c.assignee_id,
            service_kind=c.service_kind,
            complexity=list(c.complexity or []),
            parent_case_id=c.parent_case_id,
            regulator_reference=c.regulator_reference,
            regulator_due_date=c.regulator_due_date,
            regulator_reported_at=c.regulator_reported_at,
            reporter=reporter,
            missing_materials=list(c.missing_materials or []),
            not_accepted_reason=text["not_accepted_reason"],
            refer_to=c.refer_to,
            plan=text["plan"],
            decision=text["decision"],
            decided_at=c.decided_at,
            answer=text["answer"],
            answered_at=c.answered_at,
            review_decision=text["review_decision"],
            review_decided_at=c.review_decided_at,
            closed_at=c.closed_at,
            next_due_at=c.next_due_at,
            version=c.version,
            created_at=c.created_at,
            updated_at=c.updated_at,
            masked=not disclosure.clear,
            **extra,
        )

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[Row[Any]],
        records: Sequence[Mapping[str, str]],
        disclosures: Sequence[Disclosure],
    ) -> list[CaseOut]:
        """A page rendered from plain rows (the queue's columns, with its ``flag_provisional``
        and ``flag_breached``) and their decrypted records
        (:func:`~core.privacy.fields.sealed_records`): what :meth:`of` gives for each, without
        an object per row. Each case is built from its arguments in field order: the row's
        values followed by what is worked out here, picked by one ``itemgetter``."""
        if not rows:
            return []
        pick, at = _row_picker(tuple(rows[0]._fields))
        at_type, at_anonymous = at["type"], at["reporter_anonymous"]
        at_complexity, at_missing = at["complexity"], at["missing_materials"]
        at_provisional, at_breached = at["flag_provisional"], at["flag_breached"]
        out = []
        for row, record, disclosure in zip(rows, records, disclosures, strict=True):
            get = record.get
            clear = disclosure.clear
            if clear:
                texts = tuple(map(get, _SHOWN_TEXTS))
            elif get("#") == MASK_VERSION:  # kept when sealed (fields.masked_form, inline)
                texts = tuple(get(key, get(name)) for name, key in _KEPT)
            else:  # sealed before the current masking rules
                texts = tuple(_masked_now(get).values())
            reporter = None
            if row[at_type] == CaseType.WHISTLEBLOWING:
                identity = (get(f) for f in REPORTER_KEYS)
                reporter = _reporter(row[at_anonymous], disclosure, *identity)
            worked_out = (
                texts[0] or "",  # the subject
                *texts[1:],
                reporter,
                list(row[at_complexity] or []),
                list(row[at_missing] or []),
                not clear,
                bool(row[at_provisional]),
                bool(row[at_breached]),
            )
            out.append(cls(*pick((*row, *worked_out))))
        return out


_SHOWN_TEXTS = (
    "subject",
    "description",
    "not_accepted_reason",
    "plan",
    "decision",
    "answer",
    "review_decision",
)
"""The free-text fields :class:`CaseOut` shows (of :data:`CASE_TEXT_FIELDS`)."""

_WORKED_OUT = ("reporter", "complexity", "missing_materials", "masked", "provisional", "breached")
"""What :meth:`CaseOut.of_rows` works out beside the shown texts, in the order it passes them."""
_BUILT = frozenset({*_SHOWN_TEXTS, *_WORKED_OUT})
"""Fields of :class:`CaseOut` that :meth:`CaseOut.of_rows` computes rather than copies."""
REPORTER_KEYS = ("reporter_name", "reporter_contact", "reporter_id_number")


def _reporter(
    anonymous: bool,
    disclosure: Disclosure,
    name: str | None,
    contact: str | None,
    id_number: str | None,
) -> ReporterOut:
    """A whistle-blower's identity as the caller may see it."""
    if disclosure.reporter:
        return ReporterOut(
            anonymous=anonymous, name=name, contact=contact, id_number=id_number, masked=False
        )
    hidden = None if anonymous else MASKED
    return ReporterOut(
        anonymous=anonymous, name=hidden, contact=hidden, id_number=hidden, masked=True
    )


_KEPT = tuple((name, "#" + name) for name in _SHOWN_TEXTS)
"""Each shown text with the key of its masked form in a sealed record
(:func:`core.privacy.fields.masked_form`)."""


@functools.cache
def _row_picker(
    columns: tuple[str, ...],
) -> tuple[Callable[[tuple[Any, ...]], Any], dict[str, int]]:
    """For rows with ``columns``: an ``itemgetter`` that takes :class:`CaseOut`'s arguments in
    field order from a row followed by :meth:`CaseOut.of_rows`' worked-out values (the shown
    texts in :data:`_SHOWN_TEXTS` order, then reporter, complexity, missing materials, masked,
    provisional, breached), and each column's position."""
    at = {name: i for i, name in enumerate(columns)}
    worked_out = [*_SHOWN_TEXTS, *_WORKED_OUT]
    after = len(columns)
    positions = []
    for field in CaseOut.__struct_fields__:
        if field in _BUILT:
            positions.append(after + worked_out.index(field))
        else:
            positions.append(at[field])
    return operator.itemgetter(*positions), at


def _texts(c: Case | Row[Any], *, clear: bool) -> dict[str, str | None]:
    """The free-text fields a :class:`CaseOut` shows, in clear or with identifiers masked (one
    decryption; the fields it does not show are not masked for nothing). A case object gives
    the masked forms its record keeps (:func:`~core.privacy.fields.masked`); another object
    (a row with its record's fields) is masked here."""
    if clear:
        return {name: getattr(c, name) for name in _SHOWN_TEXTS}
    if isinstance(c, Case):
        return {name: masked(c, name) for name in _SHOWN_TEXTS}
    return _masked_now(lambda name: getattr(c, name))


def _masked_now(text_of: Callable[[str], str | None]) -> dict[str, str | None]:
    """The shown texts (``text_of`` gives each) with their identifiers masked now: for texts
    whose record keeps no masked forms of today's rules."""
    out: dict[str, str | None] = {}
    for name in _SHOWN_TEXTS:
        value = text_of(name)
        out[name] = mask_text(value) if value else value
    return out


class CaseDetailOut(Output):
    """A case with its clocks, the actions its state allows, and its attachments."""

    case: CaseOut
    clocks: list[ClockOut]
    actions: list[str]
    attachments: list[AttachmentOut]


class EventOut(Output):
    """One timeline entry."""

    seq: int
    at: datetime
    recorded_at: datetime
    kind: str
    action: str | None
    actor: str
    actor_id: uuid.UUID | None
    from_state: str | None
    to_state: str | None
    reason: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    approver: str | None
    approver_id: uuid.UUID | None
    data: dict[str, Any]

    @classmethod
    def of(cls, e: CaseEvent, *, clear: bool = False) -> EventOut:
        """Render an event: its free text in clear, or with identifiers masked."""
        before, after, data = event_parts(e)
        reason = e.reason
        if not clear:
            reason = mask_text(reason) if reason else reason
            before, after, data = (_masked_texts(part) for part in (before, after, data))
        return cls(
            seq=e.seq,
            at=e.at,
            recorded_at=e.recorded_at,
            kind=e.kind,
            action=e.action,
            actor=e.actor,
            actor_id=e.actor_id,
            from_state=e.from_state,
            to_state=e.to_state,
            reason=reason,
            before=before,
            after=after,
            approver=e.approver,
            approver_id=e.approver_id,
            data=data,
        )


def _masked_texts(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: mask_text(v) if k in EVENT_TEXT_KEYS and isinstance(v, str) else v
        for k, v in values.items()
    }


class TimelineOut(Output):
    """A case's whole timeline, oldest first."""

    case_id: uuid.UUID
    number: str
    events: list[EventOut]


class AttachmentOut(Output):
    """An attachment's record (download it from ``.../attachments/{id}``)."""

    id: uuid.UUID
    filename: str
    media_type: str
    size: int
    sha256: str
    purpose: str
    uploaded_by: str
    uploaded_at: datetime

    @classmethod
    def of(cls, a: Attachment) -> AttachmentOut:
        """Render an attachment."""
        return cls(
            id=a.id,
            filename=a.filename,
            media_type=a.media_type,
            size=a.size,
            sha256=a.sha256,
            purpose=a.purpose,
            uploaded_by=a.uploaded_by,
            uploaded_at=a.uploaded_at,
        )


class CategoryOut(Output):
    """A category of the tenant's classification."""

    id: uuid.UUID
    code: str
    name_zh: str
    name_en: str
    parent_id: uuid.UUID | None
    case_types: list[str]
    active: bool
    sort_order: int
    builtin: bool

    @classmethod
    def of(cls, c: CaseCategory) -> CategoryOut:
        """Render a category."""
        return cls(
            id=c.id,
            code=c.code,
            name_zh=c.name_zh,
            name_en=c.name_en,
            parent_id=c.parent_id,
            case_types=list(c.case_types or []),
            active=c.active,
            sort_order=c.sort_order,
            builtin=c.builtin,
        )


class AssignmentOut(Output):
    """One assignment made by the round-robin."""

    case_id: uuid.UUID
    number: str
    assignee_id: uuid.UUID


class AutoAssignOut(Output):
    """What the round-robin did."""

    assigned: list[AssignmentOut]
    handlers: list[uuid.UUID]


class ViewOut(Output):
    """A saved view."""

    id: uuid.UUID
    name: str
    filters: dict[str, Any]

    @classmethod
    def of(cls, v: CaseView) -> ViewOut:
        """Render a view."""
        return cls(id=v.id, name=v.name, filters=dict(v.filters or {}))
