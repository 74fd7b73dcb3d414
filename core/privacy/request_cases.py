"""A data-subject request's case: what puts the request in the handlers' work queue.

Every request registered gets a case of type ``data_subject_request`` at the customer's unit
(docs/decisions/0008): number ``GR-…``, the customer, a subject naming the request (never its
note), and one deadline clock, ``dsr.response``, due when the request is (the
``privacy_cn.dsr_working_days`` policy, 15 working days by default). From there the case
machinery does the rest: the work queue sorted by deadline, the reminder at a share of the
period (``clock_reminders``), the escalation when it passes (``deadline.breached``), the unit's
daily digest, notifications to the handler and the customer.

The case follows the request and nothing else moves it: the case API offers no action on it
(the lifecycle table has none for the type), the request's own endpoints do the work
(export, correction, anonymization) and this module mirrors each step on the case — taken
(``in_progress``, the handler becomes the assignee), fulfilled or refused (``closed``, the
clock met or breached), withdrawn (``closed``, the clock cancelled) — with a timeline event
and the outbox event the case API would have written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from core.audit import AuditActor
from core.cases import services as case_services
from core.cases.clocks import apply_state, new_row, summary, to_state
from core.cases.models import Case, CaseEvent, CaseType, Channel
from core.deadlines import DeadlineRule, complete, start_clock
from core.deadlines.calendar import TenantCalendar
from core.orgs.models import OrgUnit
from core.outbox import emit
from core.privacy.models import DataSubjectRequest
from core.privacy.policy import PrivacyPolicy

CLOCK = "dsr.response"
CITATION = "个人信息保护法/50; privacy_cn.dsr_working_days"
KIND_NAMES = {
    "access": "查阅",
    "copy": "复制",
    "correction": "更正",
    "deletion": "删除",
}
CHANNELS: dict[str, Channel] = {
    "hotline": Channel.HOTLINE,
    "online": Channel.ONLINE,
    "app": Channel.ONLINE,
    "wechat": Channel.ONLINE,
    "letter": Channel.LETTER,
    "email": Channel.EMAIL,
    "walk_in": Channel.WALK_IN,
    "fax": Channel.FAX,
}
"""A request's channel → the case channel it is filed under."""


def _event(
    session: Session,
    case: Case,
    kind: str,
    actor: AuditActor,
    at: dt.datetime,
    **fields: Any,
) -> CaseEvent:
    case.last_event_seq = (case.last_event_seq or 0) + 1
    reason = fields.pop("reason", None)
    event = CaseEvent(
        case_id=case.id,
        seq=case.last_event_seq,
        at=at,
        recorded_at=at,
        kind=kind,
        actor=actor.label,
        actor_id=actor.person_id,
        **fields,
    )
    if reason is not None:
        event.reason = reason  # free text: sealed at the flush
    session.add(event)
    return event


def open_case(
    session: Session,
    request: DataSubjectRequest,
    *,
    unit: OrgUnit,
    policy: PrivacyPolicy,
    calendar: TenantCalendar,
    number_format: str,
    actor: AuditActor,
) -> Case:
    """Open the request's case with its deadline clock (in the caller's transaction)."""
    received = request.received_at
    rule = DeadlineRule(
        clock=CLOCK,
        amount=policy.dsr_working_days,
        unit="working_days",
        citation=CITATION,
        source=policy.source,
        statutory=False,
        description="答复个人信息权利请求 / answer the data-subject request",
    )
    state = start_clock(rule, received, calendar)
    number = case_services.next_case_number(
        session,
        fmt=number_format,
        case_type=CaseType.DATA_SUBJECT_REQUEST,
        received_at=received,
        tz=calendar.tz,
        unit_code=unit.code,
    ).number
    case = Case(
        number=number,
        type=CaseType.DATA_SUBJECT_REQUEST,
        channel=CHANNELS.get(request.channel, Channel.ONLINE),
        state="registered",
        subject=f"个人信息权利请求（{KIND_NAMES.get(request.kind, request.kind)}）{request.number}",
        received_at=received,
        unit_id=unit.id,
        customer_id=request.customer_id,
        created_by_id=actor.person_id,
        created_by=actor.label,
        complexity=[],
        missing_materials=[],
        last_event_seq=0,
        next_due_at=state.due_at,
    )
    session.add(case)
    session.flush()
    clock = new_row(state)
    clock.case_id = case.id
    session.add(clock)
    session.flush()
    request.case_id = case.id
    _event(
        session,
        case,
        "registered",
        actor,
        received,
        to_state="registered",
        after={"number": number, "type": CaseType.DATA_SUBJECT_REQUEST.value},
        data={
            "clocks": [summary(clock)],
            "privacy_request": request.number,
            "request_kind": request.kind,
        },
    )
    emit(
        session,
        "case.created",
        {
            "case_id": case.id,
            "number": number,
            "type": CaseType.DATA_SUBJECT_REQUEST.value,
            "unit_id": unit.id,
            "assignee_id": None,
            "customer_id": request.customer_id,
        },
    )
    return case


def follow(
    session: Session,
    request: DataSubjectRequest,
    action: str,
    *,
    actor: AuditActor,
    at: dt.datetime,
    reason: str | None = None,
) -> Case | None:
    """Mirror ``action`` (``start``, ``fulfil``, ``refuse``, ``withdraw``) of the request on
    its case; None for a request without a case (registered before cases were linked)."""
    if request.case_id is None:
        return None
    case = session.get(Case, (request.tenant_id, request.case_id))
    if case is None:
        return None
    before = {"state": case.state, "assignee_id": str(case.assignee_id or "") or None}
    from_state = case.state
    changes: list[dict[str, Any]] = []
    if action == "start":
        case.state = "in_progress"
        if actor.person_id is not None:
            case.assignee_id, case.assigned_at = actor.person_id, at
    else:
        for row in case_services.open_clocks(session, case.id):
            if action == "withdraw":
                row.status, row.completed_at = "cancelled", at
                changes.append({"change": "cancelled", **summary(row)})
            else:
                apply_state(row, complete(to_state(row), max(at, row.started_at)))
                changes.append({"change": "completed", **summary(row)})
        case.state = "closed"
        case.closed_at = at
    after = {"state": case.state, "assignee_id": str(case.assignee_id or "") or None}
    _event(
        session,
        case,
        "transition",
        actor,
        at,
        action=action,
        from_state=from_state,
        to_state=case.state,
        reason=reason,
        before={k: v for k, v in before.items() if after.get(k) != v},
        after={k: v for k, v in after.items() if before.get(k) != v},
        data={"clocks": changes, "privacy_request": request.number},
    )
    case_services.refresh_next_due(session, case)
    emit(
        session,
        "case.transitioned",
        {
            "case_id": case.id,
            "number": case.number,
            "type": case.type.value,
            "action": action,
            "from_state": from_state,
            "to_state": case.state,
            "event_seq": case.last_event_seq,
        },
    )
    return case
