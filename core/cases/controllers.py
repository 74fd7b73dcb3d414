"""HTTP API of cases (list and read for now)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.pagination import Page, paginate
from core.api.problems import not_found
from core.auth.guards import Access
from core.cases.models import Case, CaseType, Channel
from core.cases.schemas import CaseOut
from core.orgs.services import get_unit


class CaseController(Controller):
    """Cases of the units the caller may read (``cases:read``)."""

    path = "/api/v1/cases"
    tags = ["cases"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listCases", summary="List cases", sync_to_thread=True)
    def list_cases(
        self,
        session: Session,
        access: Access,
        status: str | None = None,
        type: CaseType | None = None,
        channel: Channel | None = None,
        unit_id: uuid.UUID | None = None,
        assignee_id: uuid.UUID | None = None,
        customer_id: uuid.UUID | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[CaseOut]:
        """Cases owned by visible units, filtered."""
        access.require_anywhere("cases:read")
        stmt = select(Case).where(access.unit_clause("cases:read", Case.unit_id))
        if status:
            stmt = stmt.where(Case.status == status)
        if type is not None:
            stmt = stmt.where(Case.type == type)
        if channel is not None:
            stmt = stmt.where(Case.channel == channel)
        if unit_id is not None:
            stmt = stmt.where(Case.unit_id == unit_id)
        if assignee_id is not None:
            stmt = stmt.where(Case.assignee_id == assignee_id)
        if customer_id is not None:
            stmt = stmt.where(Case.customer_id == customer_id)
        return paginate(session, stmt, Case.id, cursor=cursor, limit=limit, to_item=CaseOut.of)

    @get("/{case_id:uuid}", operation_id="getCase", summary="One case", sync_to_thread=True)
    def get_case(self, session: Session, access: Access, case_id: uuid.UUID) -> CaseOut:
        """A case by id (404 outside the caller's units)."""
        case = session.get(Case, (session.info["tenant_id"], case_id))
        if case is None:
            raise not_found("case", case_id)
        access.require("cases:read", get_unit(session, case.unit_id), hide=True)
        return CaseOut.of(case)


ROUTES = [CaseController]
