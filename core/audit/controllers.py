"""HTTP API of the audit log, for auditors (``audit:read`` at the top of the tree).

``GET /api/v1/audit`` lists entries by cursor with filters; ``GET /api/v1/audit/export``
hands them over as CSV or JSON (and records that it did); ``GET /api/v1/audit/verify``
checks the chain. Entries are tenant-wide, so the permission must hold at a root unit.
"""

from __future__ import annotations

import binascii
import csv
import io
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, Parameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import check_limit, pack_cursor, unpack_cursor
from core.api.problems import Problem
from core.audit.chain import Verification
from core.audit.models import AuditEntry
from core.audit.schemas import AuditEntryOut, AuditPage, BrokenEntryOut, VerificationOut
from core.audit.services import (
    AuditFilter,
    actor_from,
    filtered,
    iter_entries,
    record,
    source_of,
    verify,
)
from core.auth.guards import Access
from core.orgs.models import OrgUnit

EXPORT_MAX = 100_000
CSV_COLUMNS = (
    "seq",
    "at",
    "actor_kind",
    "actor",
    "actor_id",
    "client_id",
    "action",
    "target_type",
    "target_id",
    "details",
    "source",
    "prev_hash",
    "hash",
)

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
ActionFilter = Annotated[
    str | None,
    Parameter(
        max_length=100,
        pattern=PRINTABLE,
        description="An exact action, or a prefix ending in '.' or '*' (e.g. `customer.`).",
    ),
]
ActorFilter = Annotated[
    str | None,
    Parameter(
        max_length=200,
        pattern=PRINTABLE,
        description="E.g. `person:zhang.san`, `client:x.y`.",
    ),
]
TextFilter = Annotated[str | None, Parameter(max_length=200, pattern=PRINTABLE)]


def require_tenant_wide(session: Session, access: Access, permission: str = "audit:read") -> None:
    """A 403 problem unless ``permission`` holds at a root unit (the whole tenant)."""
    access.require_anywhere(permission)
    roots = session.scalars(select(OrgUnit.path).where(OrgUnit.parent_id.is_(None))).all()
    if not any(access.can(permission, path) for path in roots):
        raise Problem(
            403,
            f"{permission!r} must hold at the top of the organization tree to read the "
            "tenant-wide log",
            slug="forbidden",
            permission=permission,
        )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _filter(
    action: str | None,
    actor: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> AuditFilter:
    return AuditFilter(action, actor, target_type, target_id, _aware(since), _aware(until))


def _encode(seq: int, order: str) -> str:
    return pack_cursor({"seq": seq, "o": order})


def _decode(cursor: str, order: str) -> int:
    try:
        data = unpack_cursor(cursor)
        if data["o"] != order:
            raise ValueError("order changed")
        return int(data["seq"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "the cursor is malformed; use next_cursor from a previous page (same order)",
            slug="invalid-cursor",
        ) from exc


def _verification_out(v: Verification) -> VerificationOut:
    broken = v.first_broken
    return VerificationOut(
        ok=v.ok,
        checked=v.checked,
        last_seq=v.last_seq,
        first_broken=None
        if broken is None
        else BrokenEntryOut(
            seq=broken.seq,
            entry_id=str(broken.entry_id) if broken.entry_id else None,
            reason=broken.reason,
            detail=broken.detail,
        ),
    )


def export_csv(entries: list[AuditEntry]) -> str:
    """The entries as CSV (``details`` as a JSON cell)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.seq,
                e.at.isoformat(),
                e.actor_kind,
                e.actor,
                e.actor_id or "",
                e.client_id or "",
                e.action,
                e.target_type or "",
                e.target_id or "",
                json.dumps(e.details or {}, ensure_ascii=False, sort_keys=True),
                e.source or "",
                e.prev_hash,
                e.hash,
            ]
        )
    return out.getvalue()


class AuditController(Controller):
    """The tenant's audit log (``audit:read`` at a root unit)."""

    path = "/api/v1/audit"
    tags = ["audit"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listAuditEntries", summary="List audit entries")
    @uses_database
    def list_entries(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        action: ActionFilter = None,
        actor: ActorFilter = None,
        target_type: TextFilter = None,
        target_id: TextFilter = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        order: Annotated[str, Parameter(pattern=r"^(asc|desc)$")] = "desc",
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> AuditPage:
        """Entries, newest first by default (``order=asc``: in chain order), by cursor."""
        require_tenant_wide(session, access)
        limit = check_limit(limit)
        stmt = filtered(
            select(AuditEntry), _filter(action, actor, target_type, target_id, since, until)
        )
        if cursor:
            after = _decode(cursor, order)
            stmt = stmt.where(AuditEntry.seq < after if order == "desc" else AuditEntry.seq > after)
        key = AuditEntry.seq.desc() if order == "desc" else AuditEntry.seq
        rows = session.scalars(stmt.order_by(key).limit(limit + 1)).all()
        items = [AuditEntryOut.of(r) for r in rows[:limit]]
        next_cursor = _encode(rows[limit - 1].seq, order) if len(rows) > limit else None
        return AuditPage(items=items, next_cursor=next_cursor)

    @get(
        "/export",
        operation_id="exportAuditEntries",
        summary="Export audit entries (CSV or JSON)",
    )
    @uses_database
    def export(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        format: Annotated[str, Parameter(pattern=r"^(csv|json)$")] = "json",
        action: ActionFilter = None,
        actor: ActorFilter = None,
        target_type: TextFilter = None,
        target_id: TextFilter = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> Response[Any]:
        """Every matching entry in chain order (at most 100,000: narrow with ``since`` and
        ``until``), with each entry's ``prev_hash`` and ``hash`` so an auditor can re-check
        the chain offline. The export itself is recorded (``audit.exported``)."""
        require_tenant_wide(session, access)
        f = _filter(action, actor, target_type, target_id, since, until)
        entries = list(iter_entries(session, f))
        if len(entries) > EXPORT_MAX:
            raise Problem(
                413,
                f"more than {EXPORT_MAX} entries match: narrow the period",
                slug="export-too-large",
            )
        record(
            session,
            action="audit.exported",
            actor=actor_from(access.principal, session),
            details={
                "format": format,
                "entries": len(entries),
                "filters": {k: v for k, v in vars(f).items() if v is not None},
            },
            source=source_of(request),
        )
        session.commit()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"audit-{stamp}.{format}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if format == "csv":
            return Response(
                export_csv(entries), media_type="text/csv; charset=utf-8", headers=headers
            )
        body = {
            "exported_at": datetime.now(UTC).isoformat(),
            "entries": [_as_json(AuditEntryOut.of(e)) for e in entries],
        }
        return Response(body, headers=headers)

    @get(
        "/verify",
        operation_id="verifyAuditChain",
        summary="Check the audit log's hash chain",
    )
    @uses_database
    def verify_chain(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> VerificationOut:
        """Walk the tenant's chain; ``first_broken`` names the first edited, missing or
        relinked entry."""
        require_tenant_wide(session, access)
        return _verification_out(verify(session))


def _as_json(entry: AuditEntryOut) -> dict[str, Any]:
    import msgspec

    data = msgspec.to_builtins(entry)
    assert isinstance(data, dict)
    return data


ROUTES = [AuditController]
