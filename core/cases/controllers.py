"""HTTP API of cases: intake, work queues, one case with its clocks, the timeline, transitions,
clock operations, assignment, notices, attachments, categories and saved views.

Every change needs ``If-Match`` with the case's ETag (its version): none → 428, stale → 412.
Reads of a case outside the caller's units, and another tenant's ids, are 404.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, cast

import structlog
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import (
    Body,
    FromPath,
    FromQuery,
    HeaderParameter,
    JSONBody,
    Parameter,
    QueryParameter,
)
from litestar.response import Stream
from sqlalchemy import Exists, Select, Table, and_, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from core.api.handlers import uses_database
from core.api.pagination import Page, check_limit, pack_cursor, unpack_cursor
from core.api.problems import Problem, not_found
from core.audit.services import source_of
from core.auth.guards import Access
from core.auth.principal import Principal
from core.cases import flows, lifecycle, services, stats
from core.cases.deps import CASE_DEPENDENCIES
from core.cases.disclosure import Disclosure, disclose_case, disclose_cases
from core.cases.flows import CaseContext
from core.cases.models import (
    Attachment,
    Case,
    CaseCategory,
    CaseClock,
    CaseType,
    CaseView,
    Channel,
)
from core.cases.schemas import (
    AssignIn,
    AssignmentOut,
    AttachmentOut,
    AutoAssignIn,
    AutoAssignOut,
    CaseCreate,
    CaseDetailOut,
    CaseOut,
    CategoryCreate,
    CategoryOut,
    CategoryUpdate,
    ClockExtendIn,
    ClockOut,
    ClockPauseIn,
    ClockResumeIn,
    EventOut,
    NoticeIn,
    TimelineOut,
    TransitionIn,
    ViewCreate,
    ViewOut,
)
from core.cases.storage import CHUNK, StorageError
from core.db import Database, tenant_rows, tenant_rows_on, utcnow
from core.db_driver import constant_in, sql_constant
from core.orgs.models import OrgUnit
from core.orgs.services import get_unit
from core.privacy.fields import sealed_objects, sealed_records
from core.privacy.files import FileIntegrityError, KeyDestroyedError, read_attachment
from core.privacy.purposes import PurposeHeader

log = structlog.get_logger("insurdesk.cases")

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False)]
SORTS = ("due", "received", "-received")


# -- rendering ------------------------------------------------------------------------------


def _visible_case(session: Session, access: Access, case_id: uuid.UUID) -> tuple[Case, OrgUnit]:
    case = services.get_case(session, case_id)
    unit = get_unit(session, case.unit_id)
    access.require("cases:read", unit, hide=True)
    return case, unit


def _detail(
    ctx: CaseContext,
    case: Case,
    unit: OrgUnit | None = None,
    *,
    strict: bool = False,
    clocks: Sequence[CaseClock] | None = None,
    attachments: Sequence[Attachment] | None = None,
) -> CaseDetailOut:
    """The case as the caller may see it (free text masked unless the request declared a
    purpose the caller may use at the case's unit: then in clear, audited and committed).

    :param strict: a read (a declared purpose the caller cannot use is a 403); after a write
        that committed, the answer is masked instead.
    :param clocks: the case's clocks when the caller holds all of them (just written), else
        they are read; ``attachments`` likewise.
    """
    session = ctx.session
    unit = unit or get_unit(session, case.unit_id)
    now = ctx.now()
    if strict:
        disclosure = disclose_case(
            session, ctx.access, case, purpose=ctx.purpose, source=ctx.source
        )
    else:
        try:
            disclosure = disclose_case(
                session, ctx.access, case, purpose=ctx.purpose, source=ctx.source
            )
        except Problem:
            disclosure = Disclosure()
    if clocks is None:
        rows = services.clocks_of(session, case.id)
    else:  # in the order clocks_of reads them
        rows = sorted(clocks, key=lambda c: (c.started_at, c.clock, c.id))
    if attachments is None:
        attachments = services.attachments_of(session, case.id)
    shown = [ClockOut.of(c, now) for c in rows]
    open_ = [c for c in shown if c.status in ("running", "paused", "breached", "window")]
    out = CaseOut.of(
        case,
        disclosure=disclosure,
        provisional=any(c.provisional for c in open_),
        breached=any(c.status == "breached" for c in shown),
    )
    detail = CaseDetailOut(
        case=out,
        clocks=shown,
        actions=lifecycle.actions_from(case.type, case.state),
        attachments=[AttachmentOut.of(a) for a in attachments],
    )
    if ctx.purpose is not None:
        session.commit()  # the clear read's audit entry
    return detail


def _with_etag(body: Any, case: Case, status: int = 200, **headers: str) -> Response[Any]:
    return Response(body, status_code=status, headers={"ETag": flows.etag(case), **headers})


# -- cursors for the work queue -------------------------------------------------------------


def _encode(sort: str, due: datetime | None, received: datetime, ident: uuid.UUID) -> str:
    return pack_cursor(
        {
            "s": sort,
            "d": due.isoformat() if due else None,
            "r": received.isoformat(),
            "i": str(ident),
        }
    )


def _decode(cursor: str, sort: str) -> dict[str, Any]:
    try:
        data = unpack_cursor(cursor)
        if data["s"] != sort:
            raise ValueError("sort changed")
        return {
            "d": datetime.fromisoformat(data["d"]) if data["d"] else None,
            "r": datetime.fromisoformat(data["r"]),
            "i": uuid.UUID(data["i"]),
        }
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "the cursor is malformed or belongs to another sort; use next_cursor of the "
            "previous page with the same sort",
            slug="invalid-cursor",
        ) from exc


def _keyset(stmt: Select[Any], sort: str, cursor: str | None) -> Select[Any]:
    order: tuple[Any, ...]
    if sort == "due":
        order = (Case.next_due_at.asc().nulls_last(), Case.id)
    elif sort == "received":
        order = (Case.received_at.asc(), Case.id)
    else:
        order = (Case.received_at.desc(), Case.id.desc())
    if cursor:
        c = _decode(cursor, sort)
        if sort == "due":
            if c["d"] is None:
                stmt = stmt.where(Case.next_due_at.is_(None), Case.id > c["i"])
            else:
                stmt = stmt.where(
                    or_(
                        Case.next_due_at > c["d"],
                        and_(Case.next_due_at == c["d"], Case.id > c["i"]),
                        Case.next_due_at.is_(None),
                    )
                )
        elif sort == "received":
            stmt = stmt.where(
                or_(
                    Case.received_at > c["r"],
                    and_(Case.received_at == c["r"], Case.id > c["i"]),
                )
            )
        else:
            stmt = stmt.where(
                or_(
                    Case.received_at < c["r"],
                    and_(Case.received_at == c["r"], Case.id < c["i"]),
                )
            )
    return stmt.order_by(*order)


@dataclass
class UploadForm:
    """``multipart/form-data`` of an attachment upload."""

    file: UploadFile
    purpose: str = "material"
    sha256: str | None = None


class CaseController(Controller):
    """Cases: intake, queues, the case, its timeline, its transitions and clocks."""

    path = "/api/v1/cases"
    tags = ["cases"]
    dependencies = CASE_DEPENDENCIES

    @post(
        "/",
        operation_id="registerCase",
        summary="Register a case",
        status_code=201,
    )
    @uses_database
    def register(
        self,
        request: Request[Principal, Any, Any],
        ctx: NamedDependency[CaseContext],
        data: JSONBody[CaseCreate],
    ) -> Response[CaseDetailOut]:
        """Register a complaint, appeal, consultation, claim report, whistle-blowing report or
        service request: number, category, clocks from the enabled plugins (statutory bound),
        first timeline event, outbox, one transaction. Needs ``cases:write`` at the unit.
        ``Idempotency-Key`` makes retries safe (:mod:`core.api.idempotency`). A
        ``data_subject_request`` case is opened by registering the request itself
        (``POST /api/v1/privacy/requests``), not here."""
        if data.type == CaseType.DATA_SUBJECT_REQUEST:
            raise Problem(
                422,
                "a data-subject request is registered at /api/v1/privacy/requests; its case "
                "is opened there",
                slug="use-privacy-requests",
            )
        db: Database = request.app.state["db"]
        # Its writes are kept statements: a held transaction, without a session's begin and
        # commit (Database.tenant_write); committed as the block ends.
        with db.tenant_write(ctx.session):
            done = flows.register(ctx, data, keep=False)  # nothing more changed after it
        case = done.case  # answered from what was written: a new case has no attachments
        body = _detail(ctx, case, done.unit, clocks=done.clocks, attachments=())
        return _with_etag(body, case, 201, Location=f"/api/v1/cases/{case.id}")

    @get("/", operation_id="listCases", summary="Work queue")
    @uses_database
    def list_cases(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        states: Annotated[list[str] | None, QueryParameter(name="state", max_items=20)] = None,
        type: FromQuery[CaseType | None] = None,
        channel: FromQuery[Channel | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
        descendants: FromQuery[bool] = True,
        assignee_id: FromQuery[uuid.UUID | None] = None,
        unassigned: FromQuery[bool | None] = None,
        category_id: FromQuery[uuid.UUID | None] = None,
        customer_id: FromQuery[uuid.UUID | None] = None,
        due_before: FromQuery[datetime | None] = None,
        due_after: FromQuery[datetime | None] = None,
        breached: FromQuery[bool | None] = None,
        provisional: FromQuery[bool | None] = None,
        open_only: Annotated[bool, QueryParameter(name="open")] = False,
        sort: Annotated[str, Parameter(pattern=r"^(due|received|-received)$")] = "due",
        view_id: FromQuery[uuid.UUID | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        purpose: PurposeHeader = None,
    ) -> Page[CaseOut]:
        """Cases of the units the caller may read, filtered; by default the nearest deadline
        first (cases without a running clock last). ``unit_id`` includes its sub-units unless
        ``descendants=false``. ``view_id`` applies a saved view's filters first. Free text is
        masked unless ``X-Purpose`` is declared with ``customers:read_clear`` at the case's
        unit (each clear row audited); a whistle-blower's identity needs
        ``cases:whistleblower`` and a purpose."""
        access.require_anywhere("cases:read")
        limit = check_limit(limit)
        filters: dict[str, Any] = {}
        if view_id is not None:
            filters = dict(_own_view(session, access, view_id).filters)
        given = {
            "state": states,
            "type": type,
            "channel": channel,
            "unit_id": unit_id,
            "assignee_id": assignee_id,
            "unassigned": unassigned,
            "category_id": category_id,
            "customer_id": customer_id,
            "due_before": due_before,
            "due_after": due_after,
            "breached": breached,
            "provisional": provisional,
        }
        filters.update({k: v for k, v in given.items() if v is not None})
        if open_only:
            filters["open"] = True
        now = utcnow()
        # Plain rows, not ORM objects, with the clock flags computed by the same statement.
        key = _queue_key(access, filters, descendants, sort, cursor, limit)
        stmt = _QUEUE_STATEMENTS.get(key) if key is not None else None
        if stmt is None:
            stmt = select(*_QUEUE_COLUMNS).where(access.unit_clause("cases:read", Case.unit_id))
            stmt = _apply_filters(session, stmt, filters, descendants=descendants, now=now)
            stmt = _keyset(stmt, sort, cursor).limit(limit + 1)
            if key is not None:
                if len(_QUEUE_STATEMENTS) >= QUEUE_STATEMENTS_KEPT:
                    _QUEUE_STATEMENTS.clear()
                _QUEUE_STATEMENTS[key] = stmt
        kept = key is not None
        if purpose is None:  # a read only: its own transaction, not the session's (tenant_read)
            db: Database = request.app.state["db"]
            tenant_id = access.principal.tenant_id
            with db.tenant_read(tenant_id) as connection:
                rows = tenant_rows_on(
                    connection, tenant_id, stmt, _CASES.c.tenant_id, kept=kept, flags_now=now
                )
        else:
            rows = tenant_rows(session, stmt, _CASES.c.tenant_id, kept=kept, flags_now=now)
        page = rows[:limit]
        records = sealed_records(session, Case, access.principal.tenant_id, page)
        # Without a purpose everything is masked and only the ids are read; with one,
        # disclose_cases reads (and audits) the fields it shows, so it gets objects with them.
        cases: Sequence[Any] = page if purpose is None else sealed_objects(Case, page, records)
        shown = disclose_cases(session, access, cases, purpose=purpose, source=source_of(request))
        items = CaseOut.of_rows(page, records, [shown[row.id] for row in page])
        if purpose is not None:
            session.commit()  # the clear reads' audit entries
        elif session.in_transaction():  # a saved view or a unit filter was read through it
            session.rollback()  # the read is over: end it here, not on the event loop
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = _encode(sort, last.next_due_at, last.received_at, last.id)
        return Page(items=items, next_cursor=next_cursor)

    @post(
        "/auto-assign",
        operation_id="autoAssignCases",
        summary="Round-robin the unit's unassigned cases",
        status_code=200,
    )
    @uses_database
    def auto_assign(
        self, ctx: NamedDependency[CaseContext], data: JSONBody[AutoAssignIn]
    ) -> AutoAssignOut:
        """Assign the unit's unassigned open cases, oldest first, in turn among the people
        holding ``cases:write`` at the unit itself. Needs ``cases:assign`` there."""
        cases, handlers = flows.auto_assign(ctx, data.unit_id)
        ctx.session.commit()
        return AutoAssignOut(
            assigned=[
                AssignmentOut(case_id=c.id, number=c.number, assignee_id=c.assignee_id)  # type: ignore[arg-type]
                for c in cases
            ],
            handlers=[p.id for p in handlers],
        )

    @get("/{case_id:uuid}", operation_id="getCase", summary="One case")
    @uses_database
    def get_case(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        purpose: PurposeHeader = None,
    ) -> Response[CaseDetailOut]:
        """A case with its clocks (provisional ones flagged), the actions its state allows and
        its attachments. Free text is masked unless ``X-Purpose`` is declared with
        ``customers:read_clear`` at the case's unit (audited); the whistle-blower's identity
        needs ``cases:whistleblower`` and a purpose."""
        case, unit = _visible_case(ctx.session, ctx.access, case_id)
        return _with_etag(_detail(ctx, case, unit, strict=True), case)

    @get(
        "/{case_id:uuid}/timeline",
        operation_id="getCaseTimeline",
        summary="The case's timeline",
    )
    @uses_database
    def timeline(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        purpose: PurposeHeader = None,
    ) -> TimelineOut:
        """Every event of the case, oldest first: who, when, what, why, before/after. Free
        text (reasons, notices, decisions) is masked unless ``X-Purpose`` is declared with
        ``customers:read_clear`` at the case's unit (audited)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        shown = disclose_case(
            ctx.session, ctx.access, case, purpose=purpose, source=ctx.source, what="timeline"
        )
        out = TimelineOut(
            case_id=case.id,
            number=case.number,
            events=[
                EventOut.of(e, clear=shown.clear) for e in services.timeline(ctx.session, case.id)
            ],
        )
        if purpose is not None:
            ctx.session.commit()
        return out

    @post(
        "/{case_id:uuid}/transitions",
        operation_id="transitionCase",
        summary="Take a lifecycle action",
        status_code=200,
    )
    @uses_database
    def transition(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        data: JSONBody[TransitionIn],
        if_match: IfMatch = None,
    ) -> Response[CaseDetailOut]:
        """Take an action of the lifecycle (docs/cases.md); needs ``If-Match``."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        flows.transition(ctx, case, data, if_match=if_match)
        ctx.session.commit()
        return _with_etag(_detail(ctx, case), case)

    @post(
        "/{case_id:uuid}/clocks/{clock:str}/extend",
        operation_id="extendClock",
        summary="Extend a clock",
        status_code=200,
    )
    @uses_database
    def extend(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        clock: FromPath[str],
        data: JSONBody[ClockExtendIn],
        if_match: IfMatch = None,
    ) -> Response[CaseDetailOut]:
        """Extend a running clock as the rules allow (complaint decision: 15 → 30 days with a
        reason; → 60 with ``approved_by_id``, a senior manager holding ``cases:approve`` at
        the superior unit, and ``notice_channel``)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        flows.extend_clock(
            ctx,
            case,
            clock,
            reason=data.reason,
            to_amount=data.to_amount,
            approved_by_id=data.approved_by_id,
            notice_channel=data.notice_channel,
            notice=data.notice,
            occurred=data.occurred_at,
            if_match=if_match,
        )
        ctx.session.commit()
        return _with_etag(_detail(ctx, case), case)

    @post(
        "/{case_id:uuid}/clocks/{clock:str}/pause",
        operation_id="pauseClock",
        summary="Pause a clock (appraisal, mediation)",
        status_code=200,
    )
    @uses_database
    def pause(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        clock: FromPath[str],
        data: JSONBody[ClockPauseIn],
        if_match: IfMatch = None,
    ) -> Response[CaseDetailOut]:
        """Stop a clock while an external appraisal or a mediation runs (not counted)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        flows.pause_clock(
            ctx,
            case,
            clock,
            kind=data.kind,
            reason=data.reason,
            occurred=data.occurred_at,
            if_match=if_match,
        )
        ctx.session.commit()
        return _with_etag(_detail(ctx, case), case)

    @post(
        "/{case_id:uuid}/clocks/{clock:str}/resume",
        operation_id="resumeClock",
        summary="Resume a paused clock",
        status_code=200,
    )
    @uses_database
    def resume(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        clock: FromPath[str],
        data: JSONBody[ClockResumeIn],
        if_match: IfMatch = None,
    ) -> Response[CaseDetailOut]:
        """Resume a paused clock with the remaining time."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        flows.resume_clock(
            ctx, case, clock, reason=data.reason, occurred=data.occurred_at, if_match=if_match
        )
        ctx.session.commit()
        return _with_etag(_detail(ctx, case), case)

    @post(
        "/{case_id:uuid}/assign",
        operation_id="assignCase",
        summary="Assign a handler",
        status_code=200,
    )
    @uses_database
    def assign(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        data: JSONBody[AssignIn],
        if_match: IfMatch = None,
    ) -> Response[CaseDetailOut]:
        """Give the case to a person holding ``cases:write`` at its unit (``cases:assign``)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        flows.assign(ctx, case, data.assignee_id, reason=data.reason, if_match=if_match)
        ctx.session.commit()
        return _with_etag(_detail(ctx, case), case)

    @post(
        "/{case_id:uuid}/notices",
        operation_id="recordNotice",
        summary="Record a notice to the customer",
        status_code=201,
    )
    @uses_database
    def notice(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        data: JSONBody[NoticeIn],
        if_match: IfMatch = None,
    ) -> Response[EventOut]:
        """Record what the customer was told, by which channel and when (2020-complaints/21)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        event = flows.record_notice(
            ctx,
            case,
            channel=data.channel,
            content=data.content,
            purpose=data.purpose,
            occurred=data.occurred_at,
            if_match=if_match,
        )
        ctx.session.commit()
        return _with_etag(EventOut.of(event), case, 201)

    @post(
        "/{case_id:uuid}/attachments",
        operation_id="uploadAttachment",
        summary="Attach a file",
        status_code=201,
        request_max_body_size=flows.MAX_ATTACHMENT_BYTES + 64 * 1024,
    )
    @uses_database
    def upload(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[AttachmentOut]:
        """Upload a file (``multipart/form-data``: ``file``, optional ``purpose`` and
        ``sha256``): at most 20 MiB, a listed media type whose content matches it; its SHA-256
        is computed (and checked against ``sha256`` when given)."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        upload = data.file
        content = upload.file.read(flows.MAX_ATTACHMENT_BYTES + 1)
        if len(data.purpose) > 32 or not data.purpose.replace("_", "").isalnum():
            raise Problem(422, "purpose must be a short word", slug="invalid-purpose")
        attachment = flows.add_attachment(
            ctx,
            case,
            filename=upload.filename or "attachment",
            media_type=upload.content_type or "application/octet-stream",
            data=content,
            purpose=data.purpose,
            expected_sha256=data.sha256,
        )
        ctx.session.commit()
        return _with_etag(
            AttachmentOut.of(attachment),
            case,
            201,
            Location=f"/api/v1/cases/{case.id}/attachments/{attachment.id}",
        )

    @get(
        "/{case_id:uuid}/attachments/{attachment_id:uuid}",
        operation_id="downloadAttachment",
        summary="Download an attachment",
    )
    @uses_database
    def download(
        self,
        ctx: NamedDependency[CaseContext],
        case_id: FromPath[uuid.UUID],
        attachment_id: FromPath[uuid.UUID],
    ) -> Stream:
        """The file's bytes, with its media type, SHA-256 (``Repr-Digest``) and file name.

        The stored file is decrypted with the tenant's data key and its SHA-256 checked
        before a byte is sent: a file that does not decrypt for this attachment or does not
        match its checksum is a 409, one whose key was destroyed a 410."""
        case, _ = _visible_case(ctx.session, ctx.access, case_id)
        attachment = next(
            (a for a in services.attachments_of(ctx.session, case.id) if a.id == attachment_id),
            None,
        )
        if attachment is None or ctx.storage is None:
            raise not_found("attachment", attachment_id)
        content = _attachment_bytes(ctx, attachment)
        digest = base64.b64encode(bytes.fromhex(attachment.sha256)).decode()
        return Stream(
            _chunks(content),
            media_type=attachment.media_type,
            headers={
                "Content-Length": str(attachment.size),
                "Repr-Digest": f"sha-256=:{digest}:",
                "ETag": f'"{attachment.sha256}"',
                "Content-Disposition": _disposition(attachment.filename),
                "X-Content-Type-Options": "nosniff",
            },
        )


def _attachment_bytes(ctx: CaseContext, attachment: Attachment) -> bytes:
    """The uploaded bytes of ``attachment`` (decrypted and checked), or a problem."""
    assert ctx.storage is not None
    try:
        try:
            return read_attachment(ctx.session, ctx.storage, attachment)
        except StorageError:
            # Re-encrypted under a new key meanwhile: the row points at the new file now.
            key = attachment.storage_key
            ctx.session.refresh(attachment)
            if attachment.storage_key == key:
                raise
            return read_attachment(ctx.session, ctx.storage, attachment)
    except StorageError as exc:
        raise Problem(
            410, "the attachment's file is gone from the store", slug="attachment-gone"
        ) from exc
    except KeyDestroyedError as exc:
        raise Problem(
            410,
            "the attachment can no longer be read: the tenant's data key it was encrypted "
            "with has been destroyed",
            slug="attachment-key-destroyed",
        ) from exc
    except FileIntegrityError as exc:
        log.error("attachment_integrity", attachment=str(attachment.id), error=str(exc))
        raise Problem(
            409,
            f"the stored file does not match this attachment: {exc}",
            slug="attachment-integrity",
        ) from exc


def _chunks(content: bytes) -> Iterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


def _disposition(filename: str) -> str:
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _apply_filters(
    session: Session,
    stmt: Select[Any],
    f: dict[str, Any],
    *,
    descendants: bool,
    now: datetime,
) -> Select[Any]:
    def as_uuid(key: str) -> uuid.UUID:
        value = f[key]
        try:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError as exc:
            raise Problem(400, f"filter {key} is not a UUID", slug="invalid-filter") from exc

    def as_time(key: str) -> datetime:
        value = f[key]
        try:
            return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise Problem(400, f"filter {key} is not a date-time", slug="invalid-filter") from exc

    if f.get("state"):
        states = f["state"] if isinstance(f["state"], list) else [f["state"]]
        stmt = stmt.where(Case.state.in_([str(s) for s in states]))
    if f.get("open"):
        stmt = stmt.where(constant_in(Case.state, ("closed", "withdrawn"), negate=True))
    if f.get("type"):
        stmt = stmt.where(Case.type == CaseType(str(f["type"])))
    if f.get("channel"):
        stmt = stmt.where(Case.channel == Channel(str(f["channel"])))
    if f.get("unit_id"):
        unit = get_unit(session, as_uuid("unit_id"))
        if descendants:
            sub = select(OrgUnit.id).where(
                OrgUnit.tenant_id == unit.tenant_id,
                OrgUnit.path.startswith(unit.path, autoescape=True),
            )
            stmt = stmt.where(Case.unit_id.in_(sub))
        else:
            stmt = stmt.where(Case.unit_id == unit.id)
    if f.get("assignee_id"):
        stmt = stmt.where(Case.assignee_id == as_uuid("assignee_id"))
    if f.get("unassigned") is True:
        stmt = stmt.where(Case.assignee_id.is_(None))
    elif f.get("unassigned") is False:
        stmt = stmt.where(Case.assignee_id.is_not(None))
    if f.get("category_id"):
        stmt = stmt.where(Case.category_id == as_uuid("category_id"))
    if f.get("customer_id"):
        stmt = stmt.where(Case.customer_id == as_uuid("customer_id"))
    if f.get("due_before"):
        stmt = stmt.where(Case.next_due_at < as_time("due_before"))
    if f.get("due_after"):
        stmt = stmt.where(Case.next_due_at >= as_time("due_after"))
    if f.get("breached") is not None:
        late = _breached(now)
        stmt = stmt.where(late if f["breached"] else ~late)
    if f.get("provisional") is not None:
        stmt = stmt.where(_PROVISIONAL if f["provisional"] else ~_PROVISIONAL)
    return stmt


_CASES = cast(Table, Case.__table__)
_CLOCKS = cast(Table, CaseClock.__table__)
_OWN_CLOCK = (_CLOCKS.c.case_id == _CASES.c.id, _CLOCKS.c.tenant_id == _CASES.c.tenant_id)
_PROVISIONAL = exists().where(
    *_OWN_CLOCK,
    _CLOCKS.c.provisional.is_(True),
    constant_in(_CLOCKS.c.status, ("running", "paused", "window")),
)
"""A case has an open clock whose due time is provisional (the queue's flag and filter; the
constant list without an expanding parameter, so a kept queue statement keeps its plan)."""


def _breached(due_by: Any) -> Exists:
    """A case has a breached clock, or a running one due by ``due_by`` (a time, or the
    ``flags_now`` parameter): it counts before the sweep marks it (the queue's flag and its
    ``breached`` filter)."""
    return exists().where(
        *_OWN_CLOCK,
        or_(
            _CLOCKS.c.status == sql_constant("breached"),
            and_(_CLOCKS.c.status == sql_constant("running"), _CLOCKS.c.due_at <= due_by),
        ),
    )


def _queue_columns() -> tuple[Any, ...]:
    """What a queue row renders (:meth:`CaseOut.of`, :func:`disclose_cases`): the columns, the
    sealed record, and per case whether an open clock is provisional and whether a clock is
    breached (a running clock past its due time counts before the sweep marks it; the time
    is the ``flags_now`` parameter). Plain table columns, built once: no ORM object per row,
    and a statement the compiled cache recognises without adapting its columns."""
    columns = [
        _CASES.c[name]
        for name in (
            *(f for f in CaseOut.__struct_fields__ if f in _CASES.c),
            "sealed_enc",
            "reporter_anonymous",
        )
    ]
    return (
        *columns,
        _PROVISIONAL.label("flag_provisional"),
        _breached(bindparam("flags_now")).label("flag_breached"),
    )


_QUEUE_COLUMNS = _queue_columns()

QUEUE_STATEMENTS_KEPT = 1024
_QUEUE_STATEMENTS: dict[tuple[Any, ...], Select[Any]] = {}
"""Work-queue statements built before, by everything they were built from (the caller's
tenant and unit prefixes, the filters, the sort and the page size): the same page asked for
again (a person's own queue, refreshed) is not built again, and SQLAlchemy keeps the cache key
it computed for the same statement object. Emptied when full."""
_UNKEPT_FILTERS = frozenset({"unit_id", "breached"})
"""Filters whose statement is built at every request: ``unit_id`` reads the unit (and answers
404 for an unknown one), ``breached`` compares with the time of the request."""


def _queue_key(
    access: Access,
    filters: dict[str, Any],
    descendants: bool,
    sort: str,
    cursor: str | None,
    limit: int,
) -> tuple[Any, ...] | None:
    """The key of a queue statement in :data:`_QUEUE_STATEMENTS`, or None when it is not kept
    (a cursor, a filter of :data:`_UNKEPT_FILTERS`, a value that is not a plain one)."""
    if cursor is not None or not _UNKEPT_FILTERS.isdisjoint(filters):
        return None
    given: list[tuple[str, type, Any]] = []
    for name, value in sorted(filters.items()):
        if isinstance(value, list):
            value = tuple(value)
            if not all(isinstance(v, str) for v in value):
                return None
        elif not isinstance(value, str | bool | int | uuid.UUID | datetime | CaseType | Channel):
            return None
        given.append((name, type(value), value))
    return (
        access.principal.tenant_id,
        tuple(access.prefixes("cases:read")),
        tuple(given),
        descendants,
        sort,
        limit,
    )


def _own_view(session: Session, access: Access, view_id: uuid.UUID) -> CaseView:
    principal = access.principal
    view = session.get(CaseView, (principal.tenant_id, view_id))
    if view is None or principal.person_id is None or view.person_id != principal.person_id:
        raise not_found("view", view_id)
    return view


VIEW_KEYS = frozenset(
    {
        "state",
        "type",
        "channel",
        "unit_id",
        "assignee_id",
        "unassigned",
        "category_id",
        "customer_id",
        "due_before",
        "due_after",
        "breached",
        "provisional",
        "open",
    }
)


class CaseViewController(Controller):
    """Saved work-queue views, per person."""

    path = "/api/v1/case-views"
    tags = ["cases"]
    dependencies = CASE_DEPENDENCIES

    @get("/", operation_id="listCaseViews", summary="My saved views")
    @uses_database
    def list_views(self, ctx: NamedDependency[CaseContext]) -> list[ViewOut]:
        """The caller's saved views, by name."""
        if ctx.actor.person_id is None:
            return []
        views = ctx.session.scalars(
            select(CaseView)
            .where(CaseView.person_id == ctx.actor.person_id)
            .order_by(CaseView.name)
        )
        return [ViewOut.of(v) for v in views]

    @post("/", operation_id="createCaseView", summary="Save a view")
    @uses_database
    def create_view(self, ctx: NamedDependency[CaseContext], data: JSONBody[ViewCreate]) -> ViewOut:
        """Save a named set of list filters (the list endpoint's parameters)."""
        ctx.access.require_anywhere("cases:read")
        if ctx.actor.person_id is None:
            raise Problem(422, "only people have saved views", slug="not-a-person")
        unknown = sorted(set(data.filters) - VIEW_KEYS)
        if unknown:
            raise Problem(
                422,
                f"unknown filters: {', '.join(unknown)}",
                slug="invalid-filter",
                allowed=sorted(VIEW_KEYS),
            )
        exists_ = ctx.session.scalars(
            select(CaseView).where(
                CaseView.person_id == ctx.actor.person_id, CaseView.name == data.name
            )
        ).first()
        if exists_ is not None:
            raise Problem(409, f"a view named {data.name!r} exists", slug="duplicate")
        view = CaseView(person_id=ctx.actor.person_id, name=data.name, filters=data.filters)
        ctx.session.add(view)
        ctx.session.commit()
        return ViewOut.of(view)

    @delete(
        "/{view_id:uuid}",
        operation_id="deleteCaseView",
        summary="Delete a view",
    )
    @uses_database
    def delete_view(self, ctx: NamedDependency[CaseContext], view_id: FromPath[uuid.UUID]) -> None:
        """Delete one of the caller's views."""
        view = _own_view(ctx.session, ctx.access, view_id)
        ctx.session.delete(view)
        ctx.session.commit()


class CategoryController(Controller):
    """The tenant's case classification."""

    path = "/api/v1/case-categories"
    tags = ["cases"]
    dependencies = CASE_DEPENDENCIES

    @get("/", operation_id="listCaseCategories", summary="Case categories")
    @uses_database
    def list_categories(
        self, ctx: NamedDependency[CaseContext], include_inactive: FromQuery[bool] = False
    ) -> list[CategoryOut]:
        """The categories, in display order (``cases:read``)."""
        ctx.access.require_anywhere("cases:read")
        return [
            CategoryOut.of(c)
            for c in services.list_categories(ctx.session, include_inactive=include_inactive)
        ]

    @post(
        "/",
        operation_id="createCaseCategory",
        summary="Add a case category",
        status_code=201,
    )
    @uses_database
    def create_category(
        self, ctx: NamedDependency[CaseContext], data: JSONBody[CategoryCreate]
    ) -> CategoryOut:
        """Add a category: a tenant-wide setting, so ``org:write`` at a root unit."""
        _require_top_admin(ctx)
        if services.get_category_by_code(ctx.session, data.code) is not None:
            raise Problem(409, f"category {data.code!r} exists", slug="duplicate")
        if data.parent_id is not None:
            services.get_category(ctx.session, data.parent_id)
        category = CaseCategory(
            code=data.code,
            name_zh=data.name_zh,
            name_en=data.name_en,
            parent_id=data.parent_id,
            case_types=[t.value for t in data.case_types],
            sort_order=data.sort_order,
        )
        ctx.session.add(category)
        ctx.session.commit()
        return CategoryOut.of(category)

    @patch(
        "/{category_id:uuid}",
        operation_id="updateCaseCategory",
        summary="Change a case category",
    )
    @uses_database
    def update_category(
        self,
        ctx: NamedDependency[CaseContext],
        category_id: FromPath[uuid.UUID],
        data: JSONBody[CategoryUpdate],
    ) -> CategoryOut:
        """Rename, reorder, restrict to case types, retire or restore a category (``org:write``
        at a root unit). Cases keep their category; a retired one takes no new cases."""
        _require_top_admin(ctx)
        category = services.get_category(ctx.session, category_id)
        if data.name_zh is not None:
            category.name_zh = data.name_zh
        if data.name_en is not None:
            category.name_en = data.name_en
        if data.case_types is not None:
            category.case_types = [t.value for t in data.case_types]
        if data.sort_order is not None:
            category.sort_order = data.sort_order
        if data.active is not None:
            category.active = data.active
        ctx.session.commit()
        return CategoryOut.of(category)


def _require_top_admin(ctx: CaseContext) -> None:
    if not any(p.count("/") == 2 for p in ctx.access.prefixes("org:write")):
        raise Problem(
            403,
            "changing the classification needs org:write at the top of the organization",
            slug="forbidden",
            permission="org:write",
        )


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_PERIOD_DAYS = 3 * 366


def _period(start: date, end: date) -> None:
    if not (date(1900, 1, 1) <= start and end <= date(2999, 12, 31)):
        raise Problem(422, "dates must lie between 1900 and 2999", slug="invalid-period")
    if end < start:
        raise Problem(422, "end is before start", slug="invalid-period")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise Problem(422, "a period spans at most three years", slug="invalid-period")


def _stats_scope(ctx: CaseContext, unit_id: uuid.UUID | None) -> Any:
    ctx.access.require_anywhere("stats:read")
    scope = ctx.access.unit_clause("stats:read", Case.unit_id)
    if unit_id is not None:
        unit = get_unit(ctx.session, unit_id)
        ctx.access.require("stats:read", unit)
        sub = select(OrgUnit.id).where(OrgUnit.path.startswith(unit.path, autoescape=True))
        scope = and_(scope, Case.unit_id.in_(sub))
    return scope


class StatisticsController(Controller):
    """Case statistics per period and unit (``stats:read``), as JSON, CSV or XLSX."""

    path = "/api/v1/case-statistics"
    tags = ["cases"]
    dependencies = CASE_DEPENDENCIES

    @get("/", operation_id="caseStatistics", summary="Case statistics")
    @uses_database
    def report(
        self,
        ctx: NamedDependency[CaseContext],
        start: FromQuery[date],
        end: FromQuery[date],
        group_by: Annotated[str, Parameter(pattern=r"^(unit|category|channel|type)$")] = "unit",
        unit_id: FromQuery[uuid.UUID | None] = None,
        case_type: Annotated[list[CaseType] | None, QueryParameter(name="type")] = None,
        format: Annotated[str, Parameter(pattern=r"^(json|csv|xlsx)$")] = "json",
    ) -> Response[Any]:
        """Received, accepted, decided on time and late, breached, closed and the median
        handling days of the cases received from ``start`` to ``end`` (tenant dates), per
        unit, category, channel or type; ``unit_id`` limits it to a subtree."""
        _period(start, end)
        report = stats.case_statistics(
            ctx.session,
            start=start,
            end=end,
            tz=ctx.tz,
            scope=_stats_scope(ctx, unit_id),
            group_by=group_by,  # type: ignore[arg-type]
            case_types=[t.value for t in case_type or []],
            now=ctx.now(),
        )
        name = f"case-statistics-{start.isoformat()}-{end.isoformat()}-{group_by}"
        if format == "csv":
            return Response(
                stats.to_csv(report),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
            )
        if format == "xlsx":
            return Response(
                stats.to_xlsx(report),
                media_type=XLSX,
                headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
            )
        return Response(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "group_by": group_by,
                "rows": [r.as_dict() for r in report.rows],
                "total": report.total.as_dict(),
            }
        )

    @get(
        "/published",
        operation_id="publishedCaseStatistics",
        summary="Complaint statistics for public disclosure (counts only)",
    )
    @uses_database
    def published(
        self, ctx: NamedDependency[CaseContext], start: FromQuery[date], end: FromQuery[date]
    ) -> dict[str, Any]:
        """What a tenant discloses (公示, 2020-complaints/26): complaint and appeal counts by
        category and channel, and how many were decided on time. No names, ids or text."""
        _period(start, end)
        scope = _stats_scope(ctx, None)
        kwargs: dict[str, Any] = {
            "start": start,
            "end": end,
            "tz": ctx.tz,
            "scope": scope,
            "case_types": ["complaint", "appeal"],
            "now": ctx.now(),
        }
        return stats.published(
            stats.case_statistics(ctx.session, group_by="category", **kwargs),
            stats.case_statistics(ctx.session, group_by="channel", **kwargs),
        )


ROUTES = [CaseController, CaseViewController, CategoryController, StatisticsController]
