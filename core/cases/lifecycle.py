"""The case lifecycle: every allowed transition of every case type, in one table.

A :class:`Transition` says, for one case type, from which states an ``action`` may be taken,
the state it leads to, the permission the actor must hold (at the case's unit, or at its
superior unit for a review 核查), the fields the request must carry, the named guards the
flow checks, and what happens to the deadline clocks (completed, cancelled, restarted, started
by a trigger). Which clocks stop in which states (a claim's decision period while the proof is
awaited) is not in this table: the plugins say it (``insurdesk_clock_pauses``), and the flow
pauses and resumes the clocks as the case enters and leaves those states.

Nothing else in the code decides whether a transition is allowed: :func:`find` answers it and
:mod:`core.cases.flows` carries it out. ``docs/cases.md`` holds the diagrams rendered from this
table by :func:`render_markdown`; a test fails when the two differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from core.cases.models import CaseType

AtUnit = Literal["case", "superior"]

FIELD_NAMES: frozenset[str] = frozenset(
    {
        "reason",
        "refer_to",
        "to_unit_id",
        "decision",
        "answer",
        "notice_channel",
        "missing_materials",
        "report",
        "plan",
        "review_decision",
        "amount",
    }
)
"""Fields a transition request may be required to carry or accept (see ``TransitionIn``)."""

GUARDS: dict[str, str] = {
    "regulator_report_filed": "a regulator-transferred case needs its written report before "
    "closing (客户服务管理规定 第十三条)",
    "regulator_case": "only a regulator-transferred case has a regulator report",
    "within_review_window": "a review (核查) must be asked within 30 days of receiving the "
    "decision (2020-complaints/20)",
    "answered_unless_anonymous": "a whistle-blowing report is closed after its answer, unless "
    "the reporter is anonymous",
    "different_unit": "a transfer goes to another unit of the tenant",
}
"""The named conditions a transition may require, with the sentence a refusal quotes."""

OPEN_DEADLINES = "*"
"""In ``cancels``: every open deadline clock of the case. In ``completes``: every deadline clock
still open after the transition's other effects (met or breached by when), which is what closing
a case does: a closed case has no running clock (a customer's window, such as the review window
of 2020-complaints/20, stays open: it is not the tenant's deadline)."""


@dataclass(frozen=True)
class Transition:
    """One allowed move of the lifecycle.

    :param case_type: the type it applies to.
    :param sources: the states it may be taken from.
    :param action: the name the API uses (``POST /cases/{id}/transitions {"action": ...}``).
    :param target: the state it leads to; None keeps the state (a recorded act).
    :param permission: what the actor must hold.
    :param at: ``case``: at the case's unit; ``superior``: at the unit above it (核查).
    :param requires: request fields that must be present and non-empty.
    :param accepts: request fields it takes when given (any other field of
        :data:`FIELD_NAMES` but ``reason`` is refused).
    :param guards: names from :data:`GUARDS` the flow checks.
    :param completes: clocks completed (met, or breached when late); :data:`OPEN_DEADLINES`
        for every deadline still open (closing).
    :param cancels: clocks cancelled (no longer owed); :data:`OPEN_DEADLINES` for all.
    :param restarts: clocks counted afresh from the transition (new facts, 2020-complaints/18),
        on the rules the plugins give for ``restart_trigger`` at that time: an open clock is
        restarted; a completed one (a closed case re-opened) is followed by a new clock that
        records the one it replaces.
    :param restart_trigger: the trigger whose rules count the restarted clocks.
    :param trigger: the event that asks the plugins for new clocks (``complaint.decided``...).
    :param trigger_clocks: keep only these clocks of the trigger's rules (empty: all).
    :param citation: the rule behind it.
    """

    case_type: CaseType
    sources: tuple[str, ...]
    action: str
    target: str | None
    permission: str = "cases:write"
    at: AtUnit = "case"
    requires: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    guards: tuple[str, ...] = ()
    completes: tuple[str, ...] = ()
    cancels: tuple[str, ...] = ()
    restarts: tuple[str, ...] = ()
    restart_trigger: str = "received"
    trigger: str | None = None
    trigger_clocks: tuple[str, ...] = ()
    description: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        unknown = (set(self.requires) | set(self.accepts)) - FIELD_NAMES
        if unknown:
            raise ValueError(f"{self.action}: unknown fields {sorted(unknown)}")
        bad_guards = set(self.guards) - set(GUARDS)
        if bad_guards:
            raise ValueError(f"{self.action}: unknown guards {sorted(bad_guards)}")


# -- states ---------------------------------------------------------------------------------

STATES: dict[str, tuple[str, str]] = {
    "registered": ("已登记", "Registered"),
    "awaiting_materials": ("待补充材料", "Awaiting materials"),
    "under_review": ("审查中", "Under review"),
    "accepted": ("已受理", "Accepted"),
    "not_accepted": ("不予受理", "Not accepted"),
    "transferred": ("已转办", "Transferred"),
    "in_progress": ("处理中", "In progress"),
    "decided": ("已作出决定", "Decided"),
    "answered": ("已答复", "Answered"),
    "review_requested": ("核查中", "Review requested"),
    "review_decided": ("已核查", "Review decided"),
    "agreed": ("已核定赔付", "Agreed"),
    "refused": ("拒赔", "Refused"),
    "paid": ("已赔付", "Paid"),
    "resolved": ("已反馈", "Resolved"),
    "withdrawn": ("已撤回", "Withdrawn"),
    "closed": ("已结案", "Closed"),
}
"""Every state of every case type, with its Chinese and English names."""

INITIAL_STATE = "registered"
FINAL_STATES = frozenset({"closed"})


# -- the table --------------------------------------------------------------------------------

_C = CaseType.COMPLAINT
_OPEN_COMPLAINT = (
    "registered",
    "awaiting_materials",
    "under_review",
    "accepted",
    "transferred",
    "in_progress",
    "decided",
)
_MATERIALS = ("complaint.missing_materials_notice",)
_DECISION = ("complaint.decision",)


def _complaint_like(t: CaseType) -> list[Transition]:
    """Complaints and appeals (申诉: a complaint about how a complaint was handled)."""
    return [
        Transition(
            t,
            ("registered",),
            "request_materials",
            "awaiting_materials",
            requires=("missing_materials", "notice_channel"),
            completes=_MATERIALS,
            description="tell the complainant in one notice what materials to add",
            citation="seed:客户服务管理规定/12",
        ),
        Transition(
            t,
            ("awaiting_materials",),
            "materials_received",
            "under_review",
            description="the materials are complete",
            citation="seed:客户服务管理规定/14",
        ),
        Transition(
            t,
            ("registered",),
            "begin_review",
            "under_review",
            cancels=_MATERIALS,
            description="the materials are complete on receipt",
            citation="seed:客户服务管理规定/14",
        ),
        Transition(
            t,
            ("under_review", "transferred"),
            "accept",
            "accepted",
            description="the complaint is the tenant's to handle",
            citation="seed:客户服务管理规定/14",
        ),
        Transition(
            t,
            ("under_review", "transferred"),
            "not_accept",
            "not_accepted",
            requires=("reason", "refer_to", "notice_channel"),
            completes=_DECISION,
            cancels=_MATERIALS,
            description="not the tenant's to handle: say why and to whom it belongs",
            citation="seed:客户服务管理规定/14",
        ),
        Transition(
            t,
            ("under_review", "accepted"),
            "transfer",
            "transferred",
            permission="cases:assign",
            requires=("to_unit_id", "reason"),
            guards=("different_unit",),
            description="hand the complaint to another unit; its clocks keep running",
        ),
        Transition(
            t,
            ("accepted",),
            "start",
            "in_progress",
            description="handling begins",
        ),
        Transition(
            t,
            ("under_review", "accepted", "transferred", "in_progress"),
            "new_facts",
            None,
            requires=("reason",),
            restarts=_DECISION,
            description="new facts or reasons: the decision period counts afresh",
            citation="2020-complaints/18",
        ),
        Transition(
            t,
            ("in_progress",),
            "decide",
            "decided",
            requires=("decision",),
            description="the handling decision is made",
            citation="2020-complaints/18",
        ),
        Transition(
            t,
            ("decided",),
            "answer",
            "answered",
            requires=("answer", "notice_channel"),
            completes=_DECISION,
            trigger="complaint.decided",
            description="the complainant is told the decision, its grounds and the remedies "
            "(review, mediation, arbitration, litigation); the review window opens",
            citation="2020-complaints/19",
        ),
        Transition(
            t,
            ("answered", "closed"),
            "request_review",
            "review_requested",
            requires=("reason",),
            guards=("within_review_window",),
            completes=("complaint.review_request_window",),
            trigger="review.requested",
            description="the complainant asks the superior unit for a review (核查)",
            citation="2020-complaints/20",
        ),
        Transition(
            t,
            ("review_requested",),
            "decide_review",
            "review_decided",
            permission="cases:approve",
            at="superior",
            requires=("review_decision", "notice_channel"),
            completes=("complaint.review",),
            description="the superior unit decides the review and tells the complainant",
            citation="2020-complaints/20",
        ),
        Transition(
            t,
            _OPEN_COMPLAINT,
            "withdraw",
            "withdrawn",
            requires=("reason",),
            cancels=(OPEN_DEADLINES,),
            description="the complainant withdraws; handling ends on receipt",
            citation="2020-complaints/15",
        ),
        Transition(
            t,
            ("answered", "review_decided", "not_accepted", "withdrawn"),
            "close",
            "closed",
            guards=("regulator_report_filed",),
            completes=(OPEN_DEADLINES,),
            description="close an answered, reviewed, not-accepted or withdrawn complaint",
        ),
        Transition(
            t,
            ("closed",),
            "reopen",
            "in_progress",
            permission="cases:approve",
            requires=("reason",),
            restarts=_DECISION,
            cancels=("complaint.review_request_window",),
            description="re-open a closed complaint (new facts or reasons): a new decision "
            "period from the re-opening; the review window of the superseded decision closes "
            "(the new decision's answer opens a new one)",
            citation="2020-complaints/18",
        ),
        Transition(
            t,
            (*_OPEN_COMPLAINT, "not_accepted", "answered", "review_requested", "review_decided"),
            "submit_regulator_report",
            None,
            requires=("report",),
            guards=("regulator_case",),
            completes=("regulator.report",),
            description="file the written report the transferring regulator asked for",
            citation="seed:客户服务管理规定/13",
        ),
    ]


def _consultation() -> list[Transition]:
    t = CaseType.CONSULTATION
    first = ("consultation.first_response",)
    return [
        Transition(t, ("registered",), "start", "in_progress", description="handling begins"),
        Transition(
            t,
            ("registered", "in_progress"),
            "answer",
            "answered",
            requires=("answer", "notice_channel"),
            completes=first,
            description="answer the customer",
        ),
        Transition(
            t,
            ("registered", "in_progress"),
            "transfer",
            None,
            permission="cases:assign",
            requires=("to_unit_id", "reason"),
            guards=("different_unit",),
            description="hand the consultation to another unit",
        ),
        Transition(
            t,
            ("registered", "in_progress"),
            "withdraw",
            "withdrawn",
            requires=("reason",),
            cancels=(OPEN_DEADLINES,),
            description="the customer withdraws",
        ),
        Transition(
            t,
            ("answered", "withdrawn"),
            "close",
            "closed",
            guards=("regulator_report_filed",),
            completes=(OPEN_DEADLINES,),
        ),
        Transition(
            t,
            ("closed",),
            "reopen",
            "in_progress",
            permission="cases:approve",
            requires=("reason",),
            restarts=("consultation.first_response",),
            description="re-open a closed consultation (the customer asks again): a policy's "
            "first-response period counts afresh",
        ),
        Transition(
            t,
            ("registered", "in_progress", "answered"),
            "submit_regulator_report",
            None,
            requires=("report",),
            guards=("regulator_case",),
            completes=("regulator.report",),
            citation="seed:客户服务管理规定/13",
        ),
    ]


def _claim_report() -> list[Transition]:
    t = CaseType.CLAIM_REPORT
    open_states = ("registered", "awaiting_materials", "under_review")
    advance = ("claim.advance_payment",)
    return [
        Transition(
            t,
            ("registered",),
            "request_materials",
            "awaiting_materials",
            requires=("missing_materials", "notice_channel"),
            description="ask at once and in one go for the missing proof",
            citation="insurance-law/22",
        ),
        Transition(
            t,
            ("awaiting_materials",),
            "materials_received",
            "under_review",
            description="the proof is complete",
        ),
        Transition(
            t,
            ("registered",),
            "begin_review",
            "under_review",
            description="the proof is complete on receipt",
        ),
        Transition(
            t,
            ("under_review",),
            "agree",
            "agreed",
            requires=("decision",),
            accepts=("amount",),
            completes=("claim.decision", *advance),
            trigger="claim.agreed",
            description="the claim is covered and the amount agreed (``amount``, in yuan): the "
            "payment period begins; the amount is fixed, so no advance is owed from now on (met "
            "when agreed in time)",
            citation="insurance-law/23",
        ),
        Transition(
            t,
            ("under_review",),
            "refuse",
            "refused",
            requires=("decision", "reason"),
            completes=("claim.decision",),
            cancels=advance,
            trigger="claim.refused",
            description="not covered: the refusal notice period begins; nothing is owed, so "
            "nothing is to be advanced",
            citation="insurance-law/24",
        ),
        Transition(
            t,
            open_states,
            "pay_advance",
            None,
            requires=("amount", "reason"),
            completes=advance,
            description="the amount cannot be fixed yet: pay in advance what the proof at hand "
            "establishes (``amount`` in yuan; the reason says what and why); the difference "
            "follows the agreement",
            citation="insurance-law/25",
        ),
        Transition(
            t,
            ("agreed",),
            "pay",
            "paid",
            accepts=("amount",),
            completes=("claim.payment",),
            description="the indemnity or benefit is paid (``amount``: what was paid, in yuan)",
            citation="insurance-law/23",
        ),
        Transition(
            t,
            ("refused",),
            "send_refusal_notice",
            "answered",
            requires=("answer", "notice_channel"),
            completes=("claim.refusal_notice",),
            description="the refusal notice, with its reasons, is sent",
            citation="insurance-law/24",
        ),
        Transition(
            t,
            open_states,
            "transfer",
            None,
            permission="cases:assign",
            requires=("to_unit_id", "reason"),
            guards=("different_unit",),
            description="hand the claim report to another unit; its clocks keep running",
        ),
        Transition(
            t,
            open_states,
            "withdraw",
            "withdrawn",
            requires=("reason",),
            cancels=(OPEN_DEADLINES,),
            description="the claimant withdraws the claim",
        ),
        Transition(
            t,
            ("paid", "answered", "withdrawn"),
            "close",
            "closed",
            guards=("regulator_report_filed",),
            completes=(OPEN_DEADLINES,),
        ),
        Transition(
            t,
            ("closed",),
            "reopen",
            "under_review",
            permission="cases:approve",
            requires=("reason",),
            restarts=("claim.decision", *advance),
            description="re-open a closed claim report (a claim made again with new proof): it "
            "is decided again, so the decision and advance-payment periods count afresh from "
            "the re-opening",
            citation="insurance-law/23",
        ),
        Transition(
            t,
            (*open_states, "agreed", "refused", "paid", "answered"),
            "submit_regulator_report",
            None,
            requires=("report",),
            guards=("regulator_case",),
            completes=("regulator.report",),
            citation="seed:客户服务管理规定/13",
        ),
    ]


def _whistleblowing() -> list[Transition]:
    t = CaseType.WHISTLEBLOWING
    return [
        Transition(t, ("registered",), "begin_review", "under_review"),
        Transition(
            t,
            ("under_review",),
            "accept",
            "in_progress",
            description="the report is investigated",
        ),
        Transition(
            t,
            ("under_review",),
            "not_accept",
            "not_accepted",
            requires=("reason", "refer_to"),
            description="not the tenant's to investigate: say to whom it belongs",
        ),
        Transition(
            t,
            ("registered", "under_review", "in_progress"),
            "transfer",
            None,
            permission="cases:assign",
            requires=("to_unit_id", "reason"),
            guards=("different_unit",),
        ),
        Transition(
            t,
            ("in_progress",),
            "decide",
            "decided",
            requires=("decision",),
            description="the investigation's finding",
        ),
        Transition(
            t,
            ("decided",),
            "answer",
            "answered",
            requires=("answer", "notice_channel"),
            description="tell the reporter the outcome",
        ),
        Transition(
            t,
            ("registered", "under_review", "in_progress"),
            "withdraw",
            "withdrawn",
            requires=("reason",),
            cancels=(OPEN_DEADLINES,),
        ),
        Transition(
            t,
            ("decided", "answered", "not_accepted", "withdrawn"),
            "close",
            "closed",
            guards=("answered_unless_anonymous", "regulator_report_filed"),
            completes=(OPEN_DEADLINES,),
        ),
        Transition(
            t,
            ("closed",),
            "reopen",
            "in_progress",
            permission="cases:approve",
            requires=("reason",),
            description="re-open a closed report: no period restarts (no rule sets one for "
            "reports)",
        ),
        Transition(
            t,
            ("registered", "under_review", "in_progress", "decided", "answered"),
            "submit_regulator_report",
            None,
            requires=("report",),
            guards=("regulator_case",),
            completes=("regulator.report",),
            citation="seed:客户服务管理规定/13",
        ),
    ]


def _service_request() -> list[Transition]:
    t = CaseType.SERVICE_REQUEST
    return [
        Transition(
            t,
            ("registered",),
            "request_materials",
            "awaiting_materials",
            requires=("missing_materials", "notice_channel"),
            completes=("policy_service.missing_materials",),
            description="tell the applicant in one go what is missing",
            citation="2010-life-service/19",
        ),
        Transition(
            t,
            ("registered", "awaiting_materials"),
            "accept",
            "accepted",
            requires=("plan",),
            completes=("policy_service.acceptance",),
            cancels=("policy_service.missing_materials",),
            description="register the need, assign a handler with a plan",
            citation="seed:保险售后服务管理办法/三.2",
        ),
        Transition(
            t,
            ("accepted",),
            "start",
            "in_progress",
            trigger="policy_service.approved",
            description="work on the request begins (a policy change is approved)",
            citation="2010-life-service/20",
        ),
        Transition(
            t,
            ("in_progress",),
            "resolve",
            "resolved",
            requires=("answer", "notice_channel"),
            completes=("policy_service.completion", "service.first_response"),
            description="feed the result back to the customer",
            citation="seed:保险售后服务管理办法/三.3",
        ),
        Transition(
            t,
            ("resolved",),
            "not_solved",
            "in_progress",
            requires=("reason",),
            description="the follow-up finds the problem unsolved: work continues",
            citation="seed:保险售后服务管理办法/三.3",
        ),
        Transition(
            t,
            ("registered", "awaiting_materials", "accepted", "in_progress"),
            "transfer",
            None,
            permission="cases:assign",
            requires=("to_unit_id", "reason"),
            guards=("different_unit",),
        ),
        Transition(
            t,
            ("registered", "awaiting_materials", "accepted", "in_progress"),
            "withdraw",
            "withdrawn",
            requires=("reason",),
            cancels=(OPEN_DEADLINES,),
        ),
        Transition(
            t,
            ("resolved", "withdrawn"),
            "close",
            "closed",
            guards=("regulator_report_filed",),
            completes=(OPEN_DEADLINES,),
            description="the follow-up confirms the problem solved",
        ),
        Transition(
            t,
            ("closed",),
            "reopen",
            "in_progress",
            permission="cases:approve",
            requires=("reason",),
            restarts=("service.first_response",),
            description="re-open a closed request (the problem is back): a policy's "
            "first-response period counts afresh; the 保全 periods count from the application "
            "and the approval, which a re-opening does not repeat",
        ),
        Transition(
            t,
            ("registered", "awaiting_materials", "accepted", "in_progress", "resolved"),
            "submit_regulator_report",
            None,
            requires=("report",),
            guards=("regulator_case",),
            completes=("regulator.report",),
            citation="seed:客户服务管理规定/13",
        ),
    ]


TRANSITIONS: tuple[Transition, ...] = (
    *_complaint_like(CaseType.COMPLAINT),
    *_complaint_like(CaseType.APPEAL),
    *_consultation(),
    *_claim_report(),
    *_whistleblowing(),
    *_service_request(),
)
"""The whole lifecycle of every case type."""

_INDEX: dict[tuple[CaseType, str, str], Transition] = {}
for _t in TRANSITIONS:
    for _source in _t.sources:
        _key = (_t.case_type, _source, _t.action)
        if _key in _INDEX:
            raise ValueError(f"two transitions for {_key}")
        if _source not in STATES or (_t.target is not None and _t.target not in STATES):
            raise ValueError(f"{_t.action}: unknown state")
        _INDEX[_key] = _t


def find(case_type: CaseType, state: str, action: str) -> Transition | None:
    """The transition ``action`` from ``state`` for ``case_type``, or None when not allowed."""
    return _INDEX.get((case_type, state, action))


def actions_from(case_type: CaseType, state: str) -> list[str]:
    """The actions allowed from ``state`` (sorted), for a refusal or the UI."""
    return list(_ACTIONS_FROM.get((case_type, state), ()))


_ACTIONS_FROM: dict[tuple[CaseType, str], tuple[str, ...]] = {
    key: tuple(sorted(a for (t, s, a) in _INDEX if (t, s) == key))
    for key in {(t, s) for (t, s, _a) in _INDEX}
}
"""The sorted actions of each (type, state) with any (every answer lists them)."""


def transitions_of(case_type: CaseType) -> list[Transition]:
    """The transitions of one case type, in table order."""
    return [t for t in TRANSITIONS if t.case_type == case_type]


def states_of(case_type: CaseType) -> list[str]:
    """The states a case type can be in, in :data:`STATES` order."""
    used = {INITIAL_STATE}
    for t in transitions_of(case_type):
        used.update(t.sources)
        if t.target:
            used.add(t.target)
    return [s for s in STATES if s in used]


# -- documentation --------------------------------------------------------------------------

NO_ACTIONS: dict[CaseType, str] = {
    CaseType.DATA_SUBJECT_REQUEST: (
        "Opened and moved only by its data-subject request (`/api/v1/privacy/requests`, "
        "docs/privacy.md): `registered` → `in_progress` (taken) → `closed` (fulfilled, refused "
        "or withdrawn), with one clock, `dsr.response` (`privacy_cn.dsr_working_days`, 15 "
        "working days by default). The case API offers no action on it."
    ),
}
"""What the documentation says of a type without actions of its own."""

DOC_BEGIN = "<!-- BEGIN GENERATED LIFECYCLE (python -m core.cases.lifecycle) -->"
DOC_END = "<!-- END GENERATED LIFECYCLE -->"


def _mermaid(case_type: CaseType) -> list[str]:
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {INITIAL_STATE}"]
    for t in transitions_of(case_type):
        if t.target is None:
            continue
        label = t.action + (" †" if t.permission != "cases:write" else "")
        for source in t.sources:
            lines.append(f"    {source} --> {t.target}: {label}")
    lines.append("    closed --> [*]")
    lines.append("```")
    return lines


def _cell(values: Iterable[str]) -> str:
    return ", ".join(f"`{v}`" for v in values) or "—"


def _table(case_type: CaseType) -> list[str]:
    lines = [
        "| action | from | to | permission | requires | clocks | rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in transitions_of(case_type):
        clocks = []
        clocks += [f"completes {'all open' if c == OPEN_DEADLINES else c}" for c in t.completes]
        clocks += [f"cancels {'all open' if c == OPEN_DEADLINES else c}" for c in t.cancels]
        clocks += [f"restarts {c}" for c in t.restarts]
        if t.trigger:
            only = f" ({', '.join(t.trigger_clocks)})" if t.trigger_clocks else ""
            clocks.append(f"starts `{t.trigger}` clocks{only}")
        permission = t.permission + (" at the superior unit" if t.at == "superior" else "")
        guards = [f"*{g}*" for g in t.guards]
        requires = ", ".join(
            [*(f"`{r}`" for r in t.requires), *(f"`{a}` (optional)" for a in t.accepts), *guards]
        )
        requires = requires or "—"
        target = f"`{t.target}`" if t.target else "(same)"
        lines.append(
            f"| `{t.action}` | {_cell(t.sources)} | {target} | {permission} | {requires}"
            f" | {'; '.join(clocks) or '—'} | {t.citation or '—'} |"
        )
    return lines


def render_markdown() -> str:
    """The generated part of ``docs/cases.md``: a diagram and a table per case type."""
    out = [DOC_BEGIN, ""]
    for case_type in CaseType:
        out.append(f"### {case_type.value}")
        out.append("")
        if not transitions_of(case_type):
            out.append(NO_ACTIONS.get(case_type, "No action through the case API."))
            out.append("")
            continue
        out.extend(_mermaid(case_type))
        out.append("")
        out.extend(_table(case_type))
        out.append("")
    out.append("† needs a permission other than `cases:write`.")
    out.append("")
    out.append("Guards:")
    out.append("")
    out.extend(f"* *{name}*: {text}" for name, text in GUARDS.items())
    out.append("")
    out.append(DOC_END)
    return "\n".join(out)


def update_doc(text: str) -> str:
    """``text`` (docs/cases.md) with its generated part replaced by :func:`render_markdown`."""
    start, end = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    return text[:start] + render_markdown() + text[end:]


if __name__ == "__main__":  # pragma: no cover - a developer's command
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "cases.md"
    doc.write_text(update_doc(doc.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {doc}")
