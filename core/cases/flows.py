"""Case flows: registration, transitions, clocks, assignment, notices, attachments.

A flow coordinates the case aggregate with the org tree, customers, the deadline engine and the
plugins. Every flow works in the caller's session and transaction (the controller commits), and
asks the plugins **before** it writes anything, so a failing plugin yields a ``plugin-failed``
problem and no partial write. Every change of a case bumps its ``version`` (the ETag) and
appends a timeline event.

Where the deadline rules come from: :func:`deadline_rules_for` asks ``ctx.rules`` (a
:data:`RulesProvider`), built per request by :mod:`core.cases.deps` from the plugin registry.
The core adds the review rules of 2020-complaints 第二十条 itself (``REVIEW_REQUEST_WINDOW`` and
``REVIEW_DECISION``), so a complaint's review window and review clock exist whatever plugins
are enabled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import String, Table, and_, bindparam, func, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from core.api.problems import Problem, not_found
from core.audit import AuditActor, record
from core.audit.services import ActorKind
from core.auth.guards import Access, load_access
from core.auth.principal import Principal
from core.calendars.models import CalendarYear
from core.calendars.services import tenant_calendar
from core.cases import lifecycle, services
from core.cases.clocks import (
    apply_state,
    is_first_contact,
    is_window,
    new_row,
    summary,
    to_state,
)
from core.cases.lifecycle import OPEN_DEADLINES, Transition
from core.cases.models import (
    Attachment,
    Case,
    CaseCategory,
    CaseClock,
    CaseEvent,
    CaseType,
    Channel,
    split_texts,
)
from core.cases.schemas import CaseCreate, TransitionIn
from core.cases.storage import AttachmentStorage, put_in_transaction, sha256_of
from core.customers.models import Customer, Policy
from core.customers.services import get_policy
from core.db import Database, attach_loaded, insert_new, new_id, new_object, utcnow
from core.db_batch import WriteBatch
from core.db_driver import kept_rows
from core.deadlines import (
    DEFAULT_EXTENSION_POLICY,
    REVIEW_REQUEST_WINDOW,
    ClockError,
    ClockState,
    DeadlineRule,
    ExtensionPolicy,
    ExtensionRefused,
    ExtensionStep,
    RuleWarning,
    TenantCalendar,
    clock_from_resolved,
    complete,
    compute_due,
    extend,
    pause,
    resolve_rules,
    restart,
    resume,
)
from core.deadlines.clocks import RESTART_CITATION, Restart
from core.hookspecs import TRIGGERS
from core.orgs.models import OrgUnit
from core.orgs.services import get_unit
from core.outbox import emit
from core.outbox.services import emit_many
from core.people.models import Person, Role, RoleAssignment
from core.people.permissions import ALL_PERMISSIONS
from core.plugins.flows import (
    PlannedFollowUp,
    clock_pauses,
    deadline_rules,
    follow_ups_on_transition,
    plan_case_opening,
    unit_calendar,
    with_reminders,
)
from core.plugins.host import PluginHost
from core.plugins.registry import build_registry
from core.plugins.resolution import TenantPlugins
from core.plugins.types import CaseFacts, ClockPause, PolicyFacts, UnitFacts
from core.privacy.crypto import DATA
from core.privacy.fields import seal_new
from core.privacy.files import seal_file
from core.privacy.models import TenantKey
from core.scheduler.reminders import upsert_reminders
from core.tenancy.models import Tenant

log = structlog.get_logger("insurdesk.cases")

STATE_PAUSE_PREFIX = "state:"
"""A pause reason starting with this is a state's pause (``insurdesk_clock_pauses``): the clock
resumes when the case leaves the state. Handler pauses (mediation, appraisal) never start so."""
FUTURE_SKEW = dt.timedelta(minutes=5)
"""How far in the future an ``occurred_at`` may lie (clock skew between client and server)."""

EXTENSION_POLICY = ExtensionPolicy(
    {
        **DEFAULT_EXTENSION_POLICY.steps,
        # 延长至30日 / 再延长30日 are natural days whatever unit a tighter policy counted in.
        "complaint.decision": tuple(
            dataclasses.replace(s, unit="natural_days")
            for s in DEFAULT_EXTENSION_POLICY.steps_for("complaint.decision")
        ),
    }
)


@dataclass(frozen=True)
class Actor:
    """Who acts: a label for the timeline and the person, when it is one."""

    label: str
    person_id: uuid.UUID | None = None

    @classmethod
    def of(cls, session: Session, principal: Principal) -> Actor:
        """The actor of an authenticated principal."""
        if principal.kind == "person" and principal.person_id is not None:
            name = principal.username  # read with the token's state by the auth middleware
            if name is None:
                person = session.get(Person, (principal.tenant_id, principal.person_id))
                name = person.username if person is not None else str(principal.person_id)
            return cls(f"person:{name}", principal.person_id)
        return cls(f"client:{principal.client_id or principal.subject}")


@dataclass
class CaseContext:
    """What a flow needs besides its arguments: the session, who acts and what they may do,
    the tenant, its calendar, the plugins enabled for it, and the time."""

    session: Session
    access: Access
    actor: Actor
    plugins: PluginHost
    now: Callable[[], dt.datetime] = utcnow
    storage: AttachmentStorage | None = None
    extension_policy: ExtensionPolicy = field(default=EXTENSION_POLICY)
    purpose: str | None = None
    """The purpose the caller declared (``X-Purpose``), for reading free text in clear."""
    source: str | None = None
    """The caller's network address (audit entries of clear reads)."""
    loaded_tenant: Tenant | None = None
    """The tenant when the caller has it already; else :attr:`tenant` reads it on first use."""
    loaded_calendar: TenantCalendar | None = None
    """Likewise for :attr:`calendar`."""

    @property
    def tenant(self) -> Tenant:
        """The session's tenant (read on first use: many requests never need it)."""
        if self.loaded_tenant is None:
            found = self.session.get(Tenant, services.tenant_id_of(self.session))
            if found is None:
                raise Problem(404, "the tenant was not found")
            self.loaded_tenant = found
        return self.loaded_tenant

    @property
    def calendar(self) -> TenantCalendar:
        """The tenant calendar (loaded years, tenant zone; read on first use);
        :meth:`calendar_at` adds the plugins' adjustments of a unit."""
        if self.loaded_calendar is None:
            self.loaded_calendar = calendar_for(self.session, self.tenant.time_zone)
        return self.loaded_calendar

    @property
    def tz(self) -> ZoneInfo:
        """The tenant's time zone."""
        return self.calendar.tz

    def enabled_at(self, unit_path: str) -> TenantPlugins:
        """The plugins enabled at the unit with ``unit_path``, with their settings."""
        return self.plugins.for_unit(self.tenant.id, unit_path)

    def calendar_at(self, unit: UnitFacts) -> TenantCalendar:
        """The calendar deadlines at ``unit`` are counted on (tenant calendar + plugins)."""
        return unit_calendar(self.enabled_at(unit.path), unit, self.calendar)


_CALENDARS: dict[tuple[str, tuple[tuple[int, str], ...]], TenantCalendar] = {}
_CALENDAR_YEARS = select(CalendarYear.__table__.c.year, CalendarYear.__table__.c.digest).order_by(
    CalendarYear.__table__.c.year
)
"""The loaded years and their digests (a platform table: no tenant), built once."""


def calendar_for(
    session: Session, time_zone: str, years: tuple[tuple[int, str], ...] | None = None
) -> TenantCalendar:
    """The calendar with every loaded year, cached by zone and by the loaded years' digests
    (a newly loaded year gives a new calendar). ``years``: the loaded ``(year, digest)`` in
    year order, when the caller read them already."""
    if years is None:
        years = tuple((y, d) for y, d in session.connection().execute(_CALENDAR_YEARS))
    key = (time_zone, years)
    calendar = _CALENDARS.get(key)
    if calendar is None:
        if len(_CALENDARS) > 64:
            _CALENDARS.clear()
        calendar = _CALENDARS[key] = tenant_calendar(session, time_zone)
    return calendar


def make_context(
    session: Session,
    access: Access,
    *,
    plugins: PluginHost,
    actor: Actor | None = None,
    **kwargs: Any,
) -> CaseContext:
    """A context for the session's tenant (the tenant and its calendar are read when a flow
    first needs them)."""
    return CaseContext(
        session=session,
        access=access,
        actor=actor or Actor.of(session, access.principal),
        plugins=plugins,
        **kwargs,
    )


# -- deadline rules -------------------------------------------------------------------------


def deadline_rules_for(ctx: CaseContext, facts: CaseFacts, trigger: str) -> list[DeadlineRule]:
    """The deadline rules every plugin enabled at the case's unit proposes for ``trigger``.

    :raises PluginFailed: (502 ``plugin-failed``) naming the plugin that raised or answered
        something that is not a rule.
    """
    return deadline_rules(ctx.enabled_at(facts.unit.path), facts, trigger)


def compute_clocks(
    ctx: CaseContext,
    facts: CaseFacts,
    trigger: str,
    start: dt.datetime,
    *,
    only: Iterable[str] = (),
) -> tuple[list[ClockState], list[RuleWarning]]:
    """The clocks ``trigger`` starts at ``start``: one per clock, the earliest due of the
    statutory rule and every policy, never later than the statute."""
    rules = deadline_rules_for(ctx, facts, trigger)
    wanted = set(only)
    if wanted:
        rules = [r for r in rules if r.clock in wanted]
    resolved, warnings = resolve_rules(rules, start, ctx.calendar_at(facts.unit))
    for w in warnings:
        log.warning("deadline_rule_ignored", clock=w.clock, plugin=w.source, message=w.message)
    resolved = with_reminders(ctx.enabled_at(facts.unit.path), facts, resolved)
    return [clock_from_resolved(r) for r in resolved], warnings


def regulator_clock(
    received_at: dt.datetime, due_date: dt.date, reference: str, tz: ZoneInfo
) -> ClockState:
    """The regulator's own due date for a transferred case (ends at 24:00 of that day)."""
    start_day = received_at.astimezone(tz).date()
    days = (due_date - start_day).days
    rule = DeadlineRule(
        clock="regulator.report",
        amount=max(days, 1),
        unit="natural_days",
        citation="seed:客户服务管理规定/13",
        source="regulator",
        statutory=True,
        description=f"监管转办 {reference}: 按转办单位要求书面报告",
    )
    due = dt.datetime.combine(due_date + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return ClockState(
        clock=rule.clock,
        rule=rule,
        amount=rule.amount,
        unit="natural_days",
        started_at=received_at,
        due_at=due,
        last_day=due_date,
        provisional=False,
    )


def _warning_json(w: RuleWarning) -> dict[str, Any]:
    return {"clock": w.clock, "plugin": w.source, "message": w.message}


def _follow_up_json(f: PlannedFollowUp) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "due_at": f.due.isoformat() if f.due else None,
        "citation": f.rule.citation if f.rule else None,
        "recipients": list(f.recipients),
        "channel": f.channel,
        "notes": list(f.notes),
        "plugins": list(f.sources),
    }


# -- facts ----------------------------------------------------------------------------------


def unit_facts(unit: OrgUnit) -> UnitFacts:
    """What plugins see of a unit."""
    return UnitFacts(id=unit.id, code=unit.code, kind=str(unit.kind), path=unit.path)


def policy_facts(policy: Policy | None) -> PolicyFacts | None:
    """What plugins see of a policy."""
    if policy is None:
        return None
    return PolicyFacts(
        line_of_business=str(policy.line_of_business),
        term_months=policy.term_months,
        start_date=policy.start_date,
        cooling_off_end=policy.cooling_off_end,
    )


def facts_of(session: Session, case: Case, unit: OrgUnit | None = None) -> CaseFacts:
    """The facts of a stored case, for the plugins."""
    unit = unit or get_unit(session, case.unit_id)
    policy = get_policy(session, case.policy_id) if case.policy_id else None
    return CaseFacts(
        case_type=case.type.value,
        channel=case.channel.value,
        unit=unit_facts(unit),
        received_at=case.received_at,
        policy=policy_facts(policy),
        service_kind=case.service_kind,
        complexity=frozenset(case.complexity or ()),
        state=case.state,
    )


# -- timeline -------------------------------------------------------------------------------

SNAPSHOT_FIELDS = (
    "state",
    "unit_id",
    "assignee_id",
    "category_id",
    "missing_materials",
    "not_accepted_reason",
    "refer_to",
    "plan",
    "decision",
    "decided_at",
    "answer",
    "answered_at",
    "answer_channel",
    "review_reason",
    "review_requested_at",
    "review_decision",
    "review_decided_at",
    "regulator_report",
    "regulator_reported_at",
    "withdrawn_reason",
    "closed_at",
)
"""Fields whose before/after values a timeline event records (never the reporter's identity)."""


def _json(value: Any) -> Any:
    kind = type(value)
    if kind is str or value is None:
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if hasattr(value, "value"):
        return value.value
    return value


def snapshot(case: Case) -> dict[str, Any]:
    """The recorded fields of a case, JSON-ready."""
    return {name: _json(getattr(case, name)) for name in SNAPSHOT_FIELDS}


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only what changed: (old values, new values)."""
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record_event(
    ctx: CaseContext,
    case: Case,
    kind: str,
    *,
    at: dt.datetime,
    action: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    approver: Actor | None = None,
    data: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> CaseEvent:
    """Append an event to the case's timeline (and bump the case's version). Its free text
    (``reason``, and the :data:`~core.cases.models.EVENT_TEXT_KEYS` of ``before``, ``after``
    and ``data``) is sealed with the tenant's data key."""
    event = _new_event(
        ctx,
        case,
        kind,
        at=at,
        action=action,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        before=before,
        after=after,
        approver=approver,
        data=data,
        actor=actor,
    )
    ctx.session.add(event)
    return event


def _new_event(
    ctx: CaseContext,
    case: Case,
    kind: str,
    *,
    at: dt.datetime,
    action: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    approver: Actor | None = None,
    data: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> CaseEvent:
    """:func:`record_event` without adding the event to the session."""
    who = actor or ctx.actor
    case.last_event_seq = (case.last_event_seq or 0) + 1
    plain_before, plain_after, plain_data, texts = split_texts(
        before or {}, after or {}, data or {}
    )
    event = new_object(
        CaseEvent,
        case_id=case.id,
        seq=case.last_event_seq,
        at=at,
        recorded_at=ctx.now(),
        kind=kind,
        action=action,
        actor=who.label,
        actor_id=who.person_id,
        from_state=from_state,
        to_state=to_state,
        before=plain_before,
        after=plain_after,
        approver=approver.label if approver else None,
        approver_id=approver.person_id if approver else None,
        data=plain_data,
    )
    if reason is not None or texts is not None:  # the free text, sealed at the flush
        event.reason, event.texts = reason, texts
    return event


def audit_case(
    ctx: CaseContext,
    case: Case,
    audit_action: str,
    *,
    batch: WriteBatch | None = None,
    head: tuple[int, str] | None = None,
    **details: Any,
) -> None:
    """Append ``audit_action`` on ``case`` to the tenant audit log (no personal data); with
    ``batch``, the entry is written with it; ``head``: the audit head locked already (see
    :func:`core.audit.services.record`)."""
    principal = ctx.access.principal
    kind: ActorKind = "person" if ctx.actor.person_id is not None else "client"
    record(
        ctx.session,
        action=audit_action,
        actor=AuditActor(kind, ctx.actor.label, ctx.actor.person_id, principal.client_id),
        target=("case", case.id),
        details={"number": case.number, "type": case.type.value, **details},
        batch=batch,
        head=head,
    )


def emit_outbox(ctx: CaseContext, case: Case, event: str, payload: dict[str, Any]) -> None:
    """Write ``event`` about ``case`` to the outbox, in the flow's transaction (it happens only
    if the change commits). The payload carries ids, never personal data."""
    emit(ctx.session, event, case_payload(case, payload))


def case_payload(case: Case, payload: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox payload about ``case``: its id, number and type, then ``payload``."""
    return {"case_id": case.id, "number": case.number, "type": case.type.value, **payload}


# -- time -----------------------------------------------------------------------------------


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise Problem(
            422, f"{name} must carry a time zone offset, e.g. +08:00", slug="naive-datetime"
        )
    return value.astimezone(dt.UTC)


ACT_KINDS = (
    "registered",
    "transition",
    "notice",
    "clock.paused",
    "clock.resumed",
    "clock.extended",
)
"""Events that record an act at the time it happened (``occurred_at``); their times never go
backwards. Uploads, assignments and recomputations are stamped when they are recorded."""


def occurred_at(ctx: CaseContext, case: Case, value: dt.datetime | None) -> dt.datetime:
    """When an act happened: ``value`` (checked) or now.

    Never in the future, never before the case was received, never before the last act.
    """
    now = ctx.now()
    if value is None:
        at = now
    else:
        at = _aware(value, "occurred_at")
        if at > now + FUTURE_SKEW:
            raise Problem(422, "occurred_at lies in the future", slug="invalid-time")
    last = ctx.session.scalar(
        select(CaseEvent.at)
        .where(CaseEvent.case_id == case.id, CaseEvent.kind.in_(ACT_KINDS))
        .order_by(CaseEvent.seq.desc())
        .limit(1)
    )
    floor = max(case.received_at, last) if last else case.received_at
    if at < floor:
        if value is None:
            return floor
        raise Problem(
            422,
            f"occurred_at {at.isoformat()} is before the case's last event ({floor.isoformat()})",
            slug="invalid-time",
        )
    return at


# -- concurrency ----------------------------------------------------------------------------


def etag(case: Case) -> str:
    """The case's strong ETag."""
    return f'"{case.version}"'


def check_if_match(case: Case, if_match: str | None) -> None:
    """Refuse a change without ``If-Match`` (428) or with a stale one (412)."""
    if if_match is None or not if_match.strip():
        raise Problem(
            428,
            "send If-Match with the case's ETag (from GET) to change it",
            slug="precondition-required",
        )
    tags = [t.strip() for t in if_match.split(",")]
    current = etag(case)
    if not any(t in (current, current.strip('"')) for t in tags):
        raise Problem(
            412,
            f"the case changed since you read it (now version {case.version}); reload and retry",
            slug="stale-version",
            headers={"ETag": current},
            current_version=case.version,
        )


def flush(ctx: CaseContext) -> None:
    """Flush (a concurrent update of the same case becomes a 412 problem, see :func:`guarded`)."""
    ctx.session.flush()


F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Turn a concurrent update of the same case, found at any flush of ``func``, into 412."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StaleDataError as exc:
            raise Problem(
                412, "the case was changed concurrently; reload and retry", slug="stale-version"
            ) from exc

    return wrapper  # type: ignore[return-value]


# -- registration ---------------------------------------------------------------------------

APPEALABLE_STATES = frozenset(
    {"decided", "answered", "review_requested", "review_decided", "not_accepted", "closed"}
)


def _check_type_fields(ctx: CaseContext, data: CaseCreate) -> Case | None:
    """Type- and channel-specific checks; returns the appealed complaint for an appeal."""
    parent = None
    if data.type == CaseType.APPEAL:
        if data.parent_case_id is None:
            raise Problem(
                422,
                "an appeal needs parent_case_id: the complaint whose handling it contests",
                slug="appeal-needs-complaint",
            )
        parent = services.get_case(ctx.session, data.parent_case_id)
        if parent.type != CaseType.COMPLAINT or parent.state not in APPEALABLE_STATES:
            raise Problem(
                422,
                f"case {parent.number} is not a decided complaint (type {parent.type.value}, "
                f"state {parent.state})",
                slug="appeal-needs-complaint",
            )
    elif data.parent_case_id is not None:
        raise Problem(422, "only an appeal has a parent case", slug="invalid-parent")
    if data.channel == Channel.REGULATOR:
        if not data.regulator_reference or data.regulator_due_date is None:
            raise Problem(
                422,
                "a regulator-transferred case needs regulator_reference and regulator_due_date",
                slug="regulator-fields-required",
            )
    elif data.regulator_reference or data.regulator_due_date:
        raise Problem(
            422,
            "regulator_reference and regulator_due_date belong to channel 'regulator' only",
            slug="invalid-regulator-fields",
        )
    has_reporter = data.reporter_name or data.reporter_contact or data.reporter_id_number
    if data.type != CaseType.WHISTLEBLOWING and (has_reporter or data.reporter_anonymous):
        raise Problem(
            422, "reporter fields belong to whistle-blowing reports", slug="invalid-reporter"
        )
    if data.type == CaseType.WHISTLEBLOWING and data.reporter_anonymous and has_reporter:
        raise Problem(
            422, "an anonymous report carries no reporter identity", slug="invalid-reporter"
        )
    if data.service_kind is not None and data.type != CaseType.SERVICE_REQUEST:
        raise Problem(422, "service_kind belongs to service requests", slug="invalid-service-kind")
    return parent


def _check_assignee(ctx: CaseContext, person_id: uuid.UUID, unit: OrgUnit) -> Person:
    person = ctx.session.get(Person, (ctx.tenant.id, person_id))
    if person is None or not person.active:
        raise Problem(422, f"person {person_id} is not an active person", slug="invalid-assignee")
    grants = load_access(
        ctx.session,
        Principal(
            tenant_id=ctx.tenant.id,
            subject=str(person.id),
            kind="person",
            scopes=ALL_PERMISSIONS,
            person_id=person.id,
        ),
    )
    if not grants.can("cases:write", unit.path):
        raise Problem(
            422,
            f"{person.username} cannot work cases at unit {unit.code} (no cases:write there)",
            slug="invalid-assignee",
        )
    return person


@functools.cache
def _registration_read(dialect: str, customer: bool, policy: bool, category: str | None) -> Any:
    """What a registration reads before it writes, in one statement: the tenant, the unit, and
    as given the customer, the policy (and its policyholder when no customer is given) and the
    category by id or by code; the tenant's active data key version (``FOR SHARE``) and the
    loaded calendar years (``year:digest,...``). Every tenant table is filtered by ``:tenant``
    explicitly (the ORM's tenant criteria do not apply at this level; decision 0009). Built
    once per dialect and shape."""
    tenants = cast(Table, Tenant.__table__)
    units = cast(Table, OrgUnit.__table__).alias("u")
    tenant = bindparam("tenant", type_=tenants.c.id.type)
    columns: list[Any] = [c.label(f"t_{c.key}") for c in tenants.c]
    columns += [c.label(f"u_{c.key}") for c in units.c]
    joined = tenants.outerjoin(
        units, and_(units.c.tenant_id == tenant, units.c.id == bindparam("unit"))
    )
    if customer:
        customers = cast(Table, Customer.__table__).alias("c")
        columns.append(customers.c.id.label("c_id"))
        joined = joined.outerjoin(
            customers,
            and_(customers.c.tenant_id == tenant, customers.c.id == bindparam("customer")),
        )
    if policy:
        policies = cast(Table, Policy.__table__).alias("p")
        columns += [c.label(f"p_{c.key}") for c in policies.c]
        joined = joined.outerjoin(
            policies, and_(policies.c.tenant_id == tenant, policies.c.id == bindparam("policy"))
        )
        if not customer:
            holders = cast(Table, Customer.__table__).alias("h")
            columns.append(holders.c.id.label("h_id"))
            joined = joined.outerjoin(
                holders,
                and_(holders.c.tenant_id == tenant, holders.c.id == policies.c.policyholder_id),
            )
    if category is not None:
        categories = cast(Table, CaseCategory.__table__).alias("k")
        columns += [c.label(f"k_{c.key}") for c in categories.c]
        match = categories.c.id if category == "id" else categories.c.code
        joined = joined.outerjoin(
            categories, and_(categories.c.tenant_id == tenant, match == bindparam("category"))
        )
    keys = cast(Table, TenantKey.__table__)
    active_key = (
        select(keys.c.version)
        .where(keys.c.tenant_id == tenant, keys.c.purpose == DATA, keys.c.status == "active")
        .with_for_update(read=True)  # as Keyring.active_version: a rotation waits for us
        .scalar_subquery()
    )
    columns.append(active_key.label("key_version"))
    years = cast(Table, CalendarYear.__table__)
    aggregate = func.string_agg if dialect == "postgresql" else func.group_concat
    loaded = select(
        aggregate(sa_cast(years.c.year, String) + ":" + years.c.digest, ",")
    ).scalar_subquery()
    columns.append(loaded.label("calendar_years"))
    return select(*columns).select_from(joined).where(tenants.c.id == tenant)


def _part(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {short: row[key] for key, short in _part_keys(tuple(row), prefix)}


@functools.cache
def _part_keys(keys: tuple[str, ...], prefix: str) -> tuple[tuple[str, str], ...]:
    """The columns of a read row that start with ``prefix``, and their names without it."""
    return tuple((key, key[len(prefix) :]) for key in keys if key.startswith(prefix))


@dataclass(frozen=True)
class _Read:
    unit: OrgUnit
    customer_id: uuid.UUID | None
    policy: Policy | None
    category_id: uuid.UUID | None
    key_version: int | None
    """The tenant's active data key version (locked ``FOR SHARE``), None when it has none yet."""
    now: dt.datetime
    received_at: dt.datetime
    """``data.received_at`` (checked: not in the future), else :attr:`now`."""


def _read_for_registration(ctx: CaseContext, data: CaseCreate, *, keep: bool) -> _Read:
    """The unit, customer, policy and category of a registration, checked in the order the
    single reads did (unit, permission, customer, policy, category), with one statement. With
    ``keep``, the tenant, unit and policy read are the session's objects (as a query gives
    them); without, plain loaded objects outside it."""
    session = ctx.session
    tenant_id = services.tenant_id_of(session)
    if data.category_id is not None and data.category is not None:
        category_mode: str | None = "both"
    else:
        category_mode = (
            "id" if data.category_id is not None else "code" if data.category is not None else None
        )
    stmt = _registration_read(
        session.get_bind().dialect.name,
        data.customer_id is not None,
        data.policy_id is not None,
        category_mode if category_mode != "both" else None,
    )
    params: dict[str, Any] = {"tenant": tenant_id, "unit": data.unit_id}
    if data.customer_id is not None:
        params["customer"] = data.customer_id
    if data.policy_id is not None:
        params["policy"] = data.policy_id
    if category_mode == "id":
        params["category"] = data.category_id
    elif category_mode == "code":
        params["category"] = data.category
    rows = kept_rows(session.connection(), stmt, params)
    row = rows[0]._asdict() if rows else None

    def as_object(cls: type[Any], values: dict[str, Any]) -> Any:
        return attach_loaded(session, cls, values) if keep else new_object(cls, **values)

    if row is None:
        raise Problem(404, "the tenant was not found")
    if ctx.loaded_tenant is None:
        ctx.loaded_tenant = as_object(Tenant, _part(row, "t_"))
    if ctx.loaded_calendar is None:
        loaded = (y.split(":", 1) for y in (row["calendar_years"] or "").split(",") if y)
        years = tuple(sorted((int(year), digest) for year, digest in loaded))
        ctx.loaded_calendar = calendar_for(session, ctx.loaded_tenant.time_zone, years)
    if row["u_id"] is None:
        raise not_found("organization unit", data.unit_id)
    unit: OrgUnit = as_object(OrgUnit, _part(row, "u_"))
    ctx.access.require("cases:write", unit)
    if not unit.active:
        raise Problem(422, f"unit {unit.code} is deactivated", slug="inactive-unit")
    now = ctx.now()
    received_at = _aware(data.received_at, "received_at") if data.received_at else now
    if received_at > now + FUTURE_SKEW:
        raise Problem(422, "received_at lies in the future", slug="invalid-time")
    customer_id = None
    if data.customer_id is not None:
        if row["c_id"] is None:
            raise not_found("customer", data.customer_id)
        customer_id = row["c_id"]
    policy = None
    if data.policy_id is not None:
        if row["p_id"] is None:
            raise not_found("policy", data.policy_id)
        policy = as_object(Policy, _part(row, "p_"))
        if customer_id is None:
            if row["h_id"] is None:
                raise not_found("customer", policy.policyholder_id)
            customer_id = row["h_id"]
        elif customer_id not in (policy.policyholder_id, policy.insured_id):
            raise Problem(
                422,
                f"policy {policy.number} is not the customer's (neither policyholder nor insured)",
                slug="policy-not-customers",
            )
    category_id = None
    if category_mode == "both":
        raise Problem(422, "give category_id or category, not both", slug="invalid-category")
    if category_mode is not None:
        if row["k_id"] is None:
            if category_mode == "id":
                raise not_found("case category", data.category_id)
            raise Problem(422, f"unknown category {data.category!r}", slug="invalid-category")
        code, case_types = row["k_code"], row["k_case_types"]
        if not row["k_active"]:
            raise Problem(422, f"category {code} is retired", slug="invalid-category")
        if case_types and data.type.value not in case_types:
            raise Problem(
                422,
                f"category {code} does not apply to {data.type.value} cases",
                slug="invalid-category",
            )
        category_id = row["k_id"]
    return _Read(unit, customer_id, policy, category_id, row["key_version"], now, received_at)


@dataclass(frozen=True)
class Registration:
    """A case just registered, with its unit and the clocks written with it."""

    case: Case
    unit: OrgUnit
    clocks: list[CaseClock]


def register_case(ctx: CaseContext, data: CaseCreate) -> Case:
    """Register a case: validate, compute its clocks, then write the case, its clocks and its
    first timeline event in the caller's transaction.

    :raises Problem: 403/404 for a unit the actor cannot register at, 404 for a customer,
        policy or category of another tenant, 422 for inconsistent fields, ``plugin-failed``
        when a plugin fails (nothing is written).
    """
    return register(ctx, data).case


@guarded
def register(ctx: CaseContext, data: CaseCreate, *, keep: bool = True) -> Registration:
    """:func:`register_case`, returning the unit and the clocks as well (the API answers with
    them without reading back what it just wrote). ``keep=False`` is for a caller that
    commits right after and changes nothing more in the transaction (the API): the case, its
    clocks, event and audit entry and the unit, tenant and policy read are then not kept in
    the session (plain loaded objects; keeping them cost about a tenth of a registration)."""
    session = ctx.session
    read = _read_for_registration(ctx, data, keep=keep)
    unit, policy, category_id = read.unit, read.policy, read.category_id
    now, received_at = read.now, read.received_at
    parent = _check_type_fields(ctx, data)
    if data.assignee_id is not None:
        ctx.access.require("cases:assign", unit)
        _check_assignee(ctx, data.assignee_id, unit)
    if (
        data.regulator_due_date is not None
        and data.regulator_due_date < received_at.astimezone(ctx.tz).date()
    ):
        raise Problem(422, "regulator_due_date is before the receipt", slug="invalid-time")

    facts = CaseFacts(
        case_type=data.type.value,
        channel=data.channel.value,
        unit=unit_facts(unit),
        received_at=received_at,
        policy=policy_facts(policy),
        service_kind=data.service_kind.value if data.service_kind else None,
        complexity=frozenset(data.complexity),
    )
    # Everything the plugins decide is computed before the first write.
    plan = plan_case_opening(ctx.enabled_at(unit.path), facts, ctx.calendar)
    states = [clock_from_resolved(c) for c in plan.deadlines.clocks]
    warnings = plan.deadlines.warnings
    if data.channel == Channel.REGULATOR:
        assert data.regulator_due_date is not None and data.regulator_reference is not None
        states.append(
            regulator_clock(received_at, data.regulator_due_date, data.regulator_reference, ctx.tz)
        )

    # The number's counter and the audit head, locked together (one statement on PostgreSQL).
    number, audit_head = services.next_case_number(
        session,
        fmt=ctx.tenant.case_number_format,
        case_type=data.type,
        received_at=received_at,
        tz=ctx.tz,
        unit_code=unit.code,
        lock_audit_head=True,
    )
    case = new_object(
        Case,
        id=new_id(),
        number=number,
        type=data.type,
        channel=data.channel,
        state=lifecycle.INITIAL_STATE,
        subject=data.subject,
        description=data.description,
        received_at=received_at,
        unit_id=unit.id,
        category_id=category_id,
        customer_id=read.customer_id,
        policy_id=policy.id if policy else None,
        assignee_id=data.assignee_id,
        assigned_at=now if data.assignee_id else None,
        created_by_id=ctx.actor.person_id,
        created_by=ctx.actor.label,
        service_kind=data.service_kind.value if data.service_kind else None,
        complexity=sorted(set(data.complexity)),
        parent_case_id=parent.id if parent else None,
        regulator_reference=data.regulator_reference,
        regulator_due_date=data.regulator_due_date,
        reporter_anonymous=data.reporter_anonymous,
        reporter_name=data.reporter_name,
        reporter_contact=data.reporter_contact,
        reporter_id_number=data.reporter_id_number,
        missing_materials=[],
        last_event_seq=0,
        next_due_at=min(
            (s.due_at for s in states if s.status == "running" and not is_window(s.clock)),
            default=None,
        ),
        version=1,
        created_at=now,
        updated_at=now,
    )
    rows = []
    for state in states:
        row = new_row(state)
        row.case_id = case.id
        rows.append(row)
    after = {
        "number": number,
        "type": data.type.value,
        "channel": data.channel.value,
        "subject": data.subject,
        "received_at": received_at.isoformat(),
        "customer_id": _json(case.customer_id),
        "policy_id": _json(case.policy_id),
        "parent_case_id": _json(case.parent_case_id),
        "regulator_reference": data.regulator_reference,
        "regulator_due_date": _json(data.regulator_due_date),
        **snapshot(case),
    }
    event = _new_event(
        ctx,
        case,
        "registered",
        at=received_at,
        to_state=case.state,
        after={k: v for k, v in after.items() if v not in (None, [], "")},
        data={
            "clocks": [summary(r) for r in rows],
            "rule_warnings": [_warning_json(w) for w in warnings],
            "follow_ups": [_follow_up_json(f) for f in plan.follow_ups],
            "plugins": list(plan.plugins),
            **({"reporter": "withheld"} if data.type == CaseType.WHISTLEBLOWING else {}),
        },
    )
    # Written with Core INSERTs, not the unit of work's flush (decision 0009), collected in one
    # batch sent as one statement on PostgreSQL (decision 0012): the texts sealed first, every
    # row stamped with the session's tenant, the clocks' reminders upserted explicitly (their
    # after_insert does not run here).
    tenant_id = services.tenant_id_of(session)
    known = {} if read.key_version is None else {tenant_id: int(read.key_version)}
    seal_new(session, (case, event), known)
    batch = WriteBatch(session, keep_objects=keep)
    insert_new(session, [case], batch)
    insert_new(session, rows, batch)
    upsert_reminders(session.connection(), rows, batch)
    insert_new(session, [event], batch)
    if parent is not None:
        parent_before = parent.version
        record_event(
            ctx,
            parent,
            "appealed",
            at=received_at,
            data={"appeal_id": str(case.id), "appeal_number": number},
        )
        log.info("appeal_registered", complaint=parent.number, version=parent_before)
    created = {"unit_id": unit.id, "assignee_id": case.assignee_id, "customer_id": case.customer_id}
    emit_many(
        session,
        [
            ("case.created", case_payload(case, created)),
            *(("case.follow_up", case_payload(case, _follow_up_json(f))) for f in plan.follow_ups),
        ],
        batch,
    )
    # The audit head was locked with the counter; its move and the entry go with the batch.
    audit_case(
        ctx,
        case,
        "case.registered",
        batch=batch,
        head=audit_head,
        unit=unit.code,
        channel=data.channel.value,
    )
    batch.execute()
    flush(ctx)
    log.info("case_registered", number=number, type=data.type.value, clocks=len(rows))
    return Registration(case, unit, rows)


# -- transitions ----------------------------------------------------------------------------

_REASON_FIELD = {
    "not_accept": "not_accepted_reason",
    "withdraw": "withdrawn_reason",
    "request_review": "review_reason",
}


def _superior(session: Session, unit: OrgUnit) -> OrgUnit:
    if unit.parent_id is None:
        return unit
    return get_unit(session, unit.parent_id)


def _require_fields(t: Transition, data: TransitionIn) -> None:
    missing = []
    for name in t.requires:
        value = getattr(data, name)
        if value is None or (isinstance(value, str | list) and not value):
            missing.append(name)
    if missing:
        raise Problem(
            422,
            f"{t.action} needs: {', '.join(missing)}",
            slug="missing-fields",
            missing=missing,
        )


def _refuse_extra_fields(t: Transition, data: TransitionIn) -> None:
    extra = [
        name
        for name in sorted(lifecycle.FIELD_NAMES)
        if name not in t.requires
        and name not in t.accepts
        and name != "reason"
        and getattr(data, name) is not None
    ]
    if extra:
        raise Problem(
            422,
            f"{t.action} does not take: {', '.join(extra)}",
            slug="unexpected-fields",
            unexpected=extra,
        )


def _money(amount: Decimal | None) -> str | None:
    """``amount`` as the exact decimal string the timeline keeps (``"1280.50"``); refused with
    a 422 beyond two decimals (fen)."""
    if amount is None:
        return None
    if not amount.is_finite() or not 0 < amount < MAX_AMOUNT:
        raise Problem(
            422, f"amount must be more than 0 and less than {MAX_AMOUNT}", slug="invalid-amount"
        )
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -2:
        raise Problem(
            422, "amount takes at most two decimals (yuan and fen)", slug="invalid-amount"
        )
    return f"{amount:.2f}"


MAX_AMOUNT = Decimal(10**13)
"""Amounts are refused from here on (ten trillion yuan: a typing error, not a claim)."""


def _check_guards(
    ctx: CaseContext, case: Case, t: Transition, data: TransitionIn, at: dt.datetime
) -> None:
    for guard in t.guards:
        ok = True
        if guard == "regulator_report_filed":
            ok = case.channel != Channel.REGULATOR or case.regulator_reported_at is not None
        elif guard == "regulator_case":
            ok = case.channel == Channel.REGULATOR
        elif guard == "answered_unless_anonymous":
            ok = case.state != "decided" or case.reporter_anonymous
        elif guard == "different_unit":
            ok = data.to_unit_id is not None and data.to_unit_id != case.unit_id
        elif guard == "within_review_window":
            window = next(
                (
                    c
                    for c in services.open_clocks(ctx.session, case.id)
                    if c.clock == REVIEW_REQUEST_WINDOW.clock
                ),
                None,
            )
            if window is None:
                raise Problem(
                    409,
                    "this case has no open review window (it opens when the decision is answered)",
                    slug="no-review-window",
                )
            if at >= window.due_at:
                raise Problem(
                    422,
                    f"the review request of {at.astimezone(ctx.tz).isoformat()} is late: the "
                    f"window closed at {window.due_at.astimezone(ctx.tz).isoformat()} "
                    "(2020-complaints/20)",
                    slug="review-window-closed",
                )
        if not ok:
            raise Problem(
                409,
                f"{t.action} refused: {lifecycle.GUARDS[guard]}",
                slug="transition-refused",
                guard=guard,
            )


def _apply_fields(
    ctx: CaseContext, case: Case, t: Transition, data: TransitionIn, at: dt.datetime
) -> None:
    if data.reason and t.action in _REASON_FIELD:
        setattr(case, _REASON_FIELD[t.action], data.reason)
    if t.action == "request_review":
        case.review_requested_at = at
    if data.refer_to is not None:
        case.refer_to = data.refer_to
    if data.missing_materials is not None:
        case.missing_materials = list(data.missing_materials)
    if data.plan is not None:
        case.plan = data.plan
    if data.decision is not None:
        case.decision, case.decided_at = data.decision, at
    if data.answer is not None:
        case.answer, case.answered_at = data.answer, at
        case.answer_channel = data.notice_channel
    if data.review_decision is not None:
        case.review_decision, case.review_decided_at = data.review_decision, at
    if data.report is not None:
        case.regulator_report, case.regulator_reported_at = data.report, at
    if data.to_unit_id is not None and "to_unit_id" in t.requires:
        target = get_unit(ctx.session, data.to_unit_id)
        if not target.active:
            raise Problem(422, f"unit {target.code} is deactivated", slug="inactive-unit")
        case.unit_id = target.id
        if case.assignee_id is not None:
            case.assignee_id = None
    if t.target == "closed":
        case.closed_at = at
    elif t.action == "reopen":
        case.closed_at = None
    if t.target is not None:
        case.state = t.target


def _notice_content(t: Transition, data: TransitionIn) -> str:
    if data.missing_materials:
        return "请补充以下材料 / please add: " + "; ".join(data.missing_materials)
    parts = [data.answer, data.review_decision, data.reason if t.action == "not_accept" else None]
    if data.refer_to:
        parts.append(f"请向 {data.refer_to} 反映 / please turn to {data.refer_to}")
    return "\n".join(p for p in parts if p)


class _ClockChanges:
    """Collects what a flow did to clocks, for the timeline."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, what: str, row: CaseClock, **extra: Any) -> None:
        self.items.append({"change": what, **summary(row), **extra})


def _set(
    row: CaseClock, state: ClockState, changes: _ClockChanges, what: str, **extra: Any
) -> None:
    old_due = row.due_at
    apply_state(row, state)
    if what in ("resumed", "extended", "restarted", "recomputed"):
        extra.setdefault("previous_due_at", old_due.isoformat())
    changes.add(what, row, **extra)


def _statutory_clocks(ctx: CaseContext, facts: CaseFacts) -> set[str]:
    """Clocks for which a statutory rule exists in this case, whatever the trigger."""
    tp = ctx.enabled_at(facts.unit.path)
    found = {"regulator.report"}
    for trigger in TRIGGERS:
        found.update(r.clock for r in deadline_rules(tp, facts, trigger) if r.statutory)
    return found


def _state_pauses(
    ctx: CaseContext, facts: CaseFacts, target: str
) -> tuple[dict[str, ClockPause], list[dict[str, Any]]]:
    """The clocks that do not run in ``target`` (``insurdesk_clock_pauses``), and the pauses
    ignored because a plugin that is not always on tried to stop a statutory period."""
    honoured: dict[str, ClockPause] = {}
    ignored: list[dict[str, Any]] = []
    statutory: set[str] | None = None
    for item in clock_pauses(ctx.enabled_at(facts.unit.path), facts):
        p = item.pause
        if target not in p.states:
            continue
        if not item.always_on:
            if statutory is None:
                statutory = _statutory_clocks(ctx, facts)
            if p.clock in statutory:
                message = (
                    f"plugin {p.source!r} would pause {p.clock} in {target} ({p.citation}); "
                    "only the statutory baseline may stop a statutory period: ignored"
                )
                log.warning("clock_pause_ignored", plugin=p.source, clock=p.clock, state=target)
                ignored.append({"clock": p.clock, "plugin": p.source, "message": message})
                continue
        honoured.setdefault(p.clock, p)
    return honoured, ignored


def _state_pause_reason(state: str, pause_rule: ClockPause) -> str:
    return f"{STATE_PAUSE_PREFIX}{state} ({pause_rule.citation})"


def _clock_effects(
    ctx: CaseContext,
    case: Case,
    facts: CaseFacts,
    t: Transition,
    at: dt.datetime,
    reason: str | None,
    *,
    contact: bool = False,
) -> tuple[list[ClockState], list[RuleWarning], _ClockChanges, list[dict[str, Any]]]:
    """Apply a transition to the case's clocks; new clocks are computed first (plugins).

    In order, per open clock: a clock paused by the state the case leaves resumes (when the new
    state does not pause it too); then it is completed, cancelled or restarted as the table
    says; a running clock that the new state pauses is paused. A restart counts the period
    afresh on the rules resolved again at ``at``; a pause in progress (mediation, awaiting
    materials) carries on. A restart of a clock that is no longer open (a closed case re-opened)
    starts a new clock that records the one it follows (citing the transition's rule). A
    transition that completes :data:`OPEN_DEADLINES` (closing) completes every deadline still
    open after that, marked ``left_open`` in the timeline; windows stay open. With ``contact``
    (the transition sends the customer a notice) first-contact clocks are completed too.
    """
    calendar = ctx.calendar_at(facts.unit)
    target = t.target or case.state
    why = reason or "new facts or reasons"
    started: list[tuple[ClockState, str]] = []
    warnings: list[RuleWarning] = []
    if t.trigger:
        states, warnings = compute_clocks(ctx, facts, t.trigger, at, only=t.trigger_clocks)
        started = [(s, "started") for s in states]
    fresh: dict[str, ClockState] = {}
    if t.restarts:
        states, more = compute_clocks(ctx, facts, t.restart_trigger, at, only=t.restarts)
        fresh = {s.clock: s for s in states}
        warnings = [*warnings, *more]
    paused_in, ignored = _state_pauses(ctx, facts, target)
    changes = _ClockChanges()
    restarted: set[str] = set()
    for row in services.open_clocks(ctx.session, case.id):
        state = to_state(row)
        try:
            if (
                row.status == "paused"
                and state.pause_reason.startswith(STATE_PAUSE_PREFIX)
                and row.clock not in paused_in
            ):
                _set(row, resume(state, at, calendar), changes, "resumed")
                state = to_state(row)
            if row.clock in t.completes or (contact and is_first_contact(row.clock)):
                _set(row, complete(state, at), changes, "completed")
            elif row.clock in t.cancels or (
                OPEN_DEADLINES in t.cancels and not is_window(row.clock)
            ):
                row.status, row.completed_at = "cancelled", at
                changes.add("cancelled", row)
            elif row.clock in t.restarts:
                restarted.add(row.clock)
                held = state.pause_reason if state.paused_at is not None else None
                if held is not None:
                    state = resume(state, at, calendar)
                rule = fresh[row.clock].rule if row.clock in fresh else None
                renewed = restart(state, at, calendar, reason=why, rule=rule)
                if held is not None:  # the mediation (or the wait) goes on
                    renewed = pause(renewed, at, held)
                _set(row, renewed, changes, "restarted")
            elif OPEN_DEADLINES in t.completes and not is_window(row.clock):
                # closing: a deadline no earlier step completed ends here (met or breached)
                _set(row, complete(state, at), changes, "completed", left_open=True)
            elif row.status == "running" and row.clock in paused_in:
                p = paused_in[row.clock]
                _set(
                    row,
                    pause(state, at, _state_pause_reason(target, p)),
                    changes,
                    "paused",
                    in_state=target,
                    citation=p.citation,
                    plugin=p.source,
                )
        except ClockError as exc:
            raise Problem(409, str(exc), slug="clock-refused", clock=row.clock) from exc
    for clock in t.restarts:
        if clock in restarted or clock not in fresh:
            continue
        earlier = [r for r in services.clocks_of(ctx.session, case.id) if r.clock == clock]
        follow = fresh[clock]
        if earlier:
            prev = to_state(earlier[-1])
            follow = dataclasses.replace(
                follow,
                restarts=(
                    *prev.restarts,
                    Restart(
                        at=at,
                        reason=why,
                        citation=t.citation or RESTART_CITATION,
                        previous_started_at=prev.started_at,
                        previous_due_at=prev.due_at,
                        previous_amount=prev.amount,
                        previous_pauses=prev.pauses,
                        previous_extensions=prev.extensions,
                    ),
                ),
            )
        started.append((follow, "restarted"))
    for state, what in started:
        if state.clock in paused_in:
            p = paused_in[state.clock]
            state = pause(state, at, _state_pause_reason(target, p))
        row = new_row(state)
        row.case_id = case.id
        ctx.session.add(row)
        changes.add(what, row)
    return [s for s, _ in started], warnings, changes, ignored


@guarded
def transition(
    ctx: CaseContext,
    case: Case,
    data: TransitionIn,
    *,
    if_match: str | None,
) -> Case:
    """Take ``data.action`` on ``case`` as the lifecycle table allows.

    Checks, in order: the ETag (428/412), that the action exists for the type (422) and is
    allowed from the state (409, naming the allowed actions), the actor's permission at the
    case's unit or its superior unit (403), the required fields (422), the guards (409/422).
    Then updates the case, its clocks (computing new ones from the plugins first) and appends
    the timeline event (and a notice event when the customer was told something).
    """
    check_if_match(case, if_match)
    t = lifecycle.find(case.type, case.state, data.action)
    if t is None:
        known = {x.action for x in lifecycle.transitions_of(case.type)}
        if data.action not in known:
            raise Problem(
                422,
                f"{data.action!r} is not an action of {case.type.value} cases",
                slug="unknown-action",
                actions=sorted(known),
            )
        allowed = lifecycle.actions_from(case.type, case.state)
        raise Problem(
            409,
            f"a {case.type.value} in state {case.state!r} cannot {data.action!r}; allowed: "
            f"{', '.join(allowed) or 'nothing'}",
            slug="transition-not-allowed",
            state=case.state,
            allowed=allowed,
        )
    session = ctx.session
    unit = get_unit(session, case.unit_id)
    ctx.access.require(t.permission, unit if t.at == "case" else _superior(session, unit))
    _require_fields(t, data)
    _refuse_extra_fields(t, data)
    amount = _money(data.amount)
    at = occurred_at(ctx, case, data.occurred_at)
    _check_guards(ctx, case, t, data, at)

    facts = facts_of(session, case, unit)
    target = t.target or case.state
    follow_ups: list[PlannedFollowUp] = []
    if target != case.state:
        follow_ups = follow_ups_on_transition(
            ctx.enabled_at(unit.path), facts, case.state, target, at, ctx.calendar_at(facts.unit)
        )

    before = snapshot(case)
    from_state = case.state
    _, warnings, changes, ignored_pauses = _clock_effects(
        ctx, case, facts, t, at, data.reason, contact=bool(data.notice_channel)
    )
    _apply_fields(ctx, case, t, data, at)
    old, new = diff(before, snapshot(case))
    approver = ctx.actor if t.permission == "cases:approve" else None
    moved = record_event(
        ctx,
        case,
        "transition",
        at=at,
        action=t.action,
        from_state=from_state,
        to_state=case.state,
        reason=data.reason,
        before=old,
        after=new,
        approver=approver,
        data={
            "clocks": changes.items,
            "rule_warnings": [_warning_json(w) for w in warnings],
            "follow_ups": [_follow_up_json(f) for f in follow_ups],
            **({"pause_warnings": ignored_pauses} if ignored_pauses else {}),
            **({"citation": t.citation} if t.citation else {}),
            **({"amount": amount} if amount is not None else {}),
        },
    )
    if data.notice_channel:
        record_event(
            ctx,
            case,
            "notice",
            at=at,
            action=t.action,
            data={
                "channel": data.notice_channel,
                "purpose": t.action,
                "content": _notice_content(t, data),
            },
        )
    services.refresh_next_due(session, case)
    outbox = [
        (
            "case.transitioned",
            {
                "action": t.action,
                "from_state": from_state,
                "to_state": case.state,
                # The reason is free text (sealed in the timeline); the planner reads it there.
                "event_seq": moved.seq,
                **({"amount": amount} if amount is not None else {}),
            },
        )
    ]
    if t.action == "request_materials":
        outbox.append(("case.materials_missing", {"materials": case.missing_materials}))
    outbox.extend(("case.follow_up", _follow_up_json(f)) for f in follow_ups)
    # The case, its clocks and events are flushed first (a concurrent change is a 412 here);
    # the outbox rows, the audit head's move and the entry then go as one batch (decision
    # 0012), after the head is locked.
    flush(ctx)
    batch = WriteBatch(session)
    emit_many(session, [(kind, case_payload(case, payload)) for kind, payload in outbox], batch)
    audit_case(
        ctx,
        case,
        "case.transitioned",
        batch=batch,
        action=t.action,
        from_state=from_state,
        to_state=case.state,
    )
    batch.execute()
    return case


# -- clock operations -----------------------------------------------------------------------


def _open_clock(ctx: CaseContext, case: Case, clock: str) -> CaseClock:
    for row in services.open_clocks(ctx.session, case.id):
        if row.clock == clock:
            return row
    raise Problem(404, f"case {case.number} has no open clock {clock!r}", slug="no-such-clock")


def _approver(ctx: CaseContext, case: Case, unit: OrgUnit, person_id: uuid.UUID) -> Actor:
    """A senior manager of the superior unit or head office, holding ``cases:approve``."""
    superior = _superior(ctx.session, unit)
    person = ctx.session.get(Person, (ctx.tenant.id, person_id))
    if person is None or not person.active:
        raise Problem(422, f"approver {person_id} is not an active person", slug="invalid-approver")
    grants = load_access(
        ctx.session,
        Principal(
            tenant_id=ctx.tenant.id,
            subject=str(person.id),
            kind="person",
            scopes=ALL_PERMISSIONS,
            person_id=person.id,
        ),
    )
    if not grants.can("cases:approve", superior.path):
        raise Problem(
            403,
            f"{person.username} cannot approve: cases:approve must hold at {superior.code}, the "
            "superior unit or head office (2020-complaints/18)",
            slug="approver-not-senior",
        )
    return Actor(f"person:{person.username}", person.id)


def _next_step(policy: ExtensionPolicy, state: ClockState) -> ExtensionStep | None:
    done = [e.to_amount for e in state.extensions]
    for step in policy.steps_for(state.clock):
        if step.to_amount not in done:
            return step
    return None


@guarded
def extend_clock(
    ctx: CaseContext,
    case: Case,
    clock: str,
    *,
    reason: str,
    to_amount: int | None,
    approved_by_id: uuid.UUID | None,
    notice_channel: str | None,
    notice: str | None,
    occurred: dt.datetime | None,
    if_match: str | None,
) -> CaseClock:
    """Extend a running clock as the extension policy allows (15 → 30 → 60 for a complaint's
    decision: the second step needs a senior approver holding ``cases:approve`` at the
    superior unit, and a notice to the complainant)."""
    check_if_match(case, if_match)
    unit = get_unit(ctx.session, case.unit_id)
    ctx.access.require("cases:write", unit)
    row = _open_clock(ctx, case, clock)
    state = to_state(row)
    step = _next_step(ctx.extension_policy, state)
    if to_amount is None:
        if step is None:
            raise Problem(422, f"{clock} cannot be extended further", slug="extension-refused")
        to_amount = step.to_amount
    chosen = next(
        (s for s in ctx.extension_policy.steps_for(clock) if s.to_amount == to_amount), None
    )
    approver = None
    if chosen is not None and chosen.requires_approver:
        if approved_by_id is None:
            raise Problem(
                422,
                f"extending {clock} to {to_amount} needs approved_by_id: a senior manager of the "
                f"superior unit or head office ({chosen.citation})",
                slug="extension-refused",
            )
        if not notice_channel:
            raise Problem(
                422,
                f"extending {clock} to {to_amount} needs notice_channel: the complainant must "
                f"be told ({chosen.citation})",
                slug="extension-refused",
            )
        approver = _approver(ctx, case, unit, approved_by_id)
    at = occurred_at(ctx, case, occurred)
    try:
        new_state = extend(
            state,
            to_amount,
            reason=reason,
            approved_by=approver.label if approver else None,
            at=at,
            calendar=ctx.calendar_at(unit_facts(unit)),
            policy=ctx.extension_policy,
        )
    except ExtensionRefused as exc:
        raise Problem(422, str(exc), slug="extension-refused", clock=clock) from exc
    except ClockError as exc:
        raise Problem(409, str(exc), slug="clock-refused", clock=clock) from exc
    changes = _ClockChanges()
    _set(row, new_state, changes, "extended", to_amount=to_amount)
    record_event(
        ctx,
        case,
        "clock.extended",
        at=at,
        reason=reason,
        approver=approver,
        data={"clocks": changes.items, "citation": chosen.citation if chosen else ""},
    )
    if notice_channel:
        record_event(
            ctx,
            case,
            "notice",
            at=at,
            action="extend",
            data={
                "channel": notice_channel,
                "purpose": "extension",
                "content": notice
                or f"处理期限延长至{to_amount}日 / the period is extended to {to_amount} days: "
                f"{reason}",
            },
        )
    services.refresh_next_due(ctx.session, case)
    emit_outbox(ctx, case, "case.clock_extended", {"clock": clock, "to": to_amount})
    flush(ctx)
    return row


PAUSE_CITATIONS = {"appraisal": "2020-complaints/18", "mediation": "2020-complaints/23"}


@guarded
def pause_clock(
    ctx: CaseContext,
    case: Case,
    clock: str,
    *,
    kind: str,
    reason: str,
    occurred: dt.datetime | None,
    if_match: str | None,
) -> CaseClock:
    """Pause a running clock for an external appraisal or a mediation."""
    check_if_match(case, if_match)
    ctx.access.require("cases:write", get_unit(ctx.session, case.unit_id))
    row = _open_clock(ctx, case, clock)
    at = occurred_at(ctx, case, occurred)
    try:
        new_state = pause(to_state(row), at, f"{kind}: {reason}")
    except ClockError as exc:
        raise Problem(409, str(exc), slug="clock-refused", clock=clock) from exc
    changes = _ClockChanges()
    _set(row, new_state, changes, "paused", kind=kind)
    record_event(
        ctx,
        case,
        "clock.paused",
        at=at,
        reason=reason,
        data={"clocks": changes.items, "kind": kind, "citation": PAUSE_CITATIONS[kind]},
    )
    services.refresh_next_due(ctx.session, case)
    flush(ctx)
    return row


@guarded
def resume_clock(
    ctx: CaseContext,
    case: Case,
    clock: str,
    *,
    reason: str | None,
    occurred: dt.datetime | None,
    if_match: str | None,
) -> CaseClock:
    """Resume a paused clock; its due moves by the days the pause excluded."""
    check_if_match(case, if_match)
    unit = get_unit(ctx.session, case.unit_id)
    ctx.access.require("cases:write", unit)
    row = _open_clock(ctx, case, clock)
    at = occurred_at(ctx, case, occurred)
    try:
        new_state = resume(to_state(row), at, ctx.calendar_at(unit_facts(unit)))
    except ClockError as exc:
        raise Problem(409, str(exc), slug="clock-refused", clock=clock) from exc
    changes = _ClockChanges()
    _set(row, new_state, changes, "resumed")
    record_event(ctx, case, "clock.resumed", at=at, reason=reason, data={"clocks": changes.items})
    services.refresh_next_due(ctx.session, case)
    flush(ctx)
    return row


# -- assignment -----------------------------------------------------------------------------


@guarded
def assign(
    ctx: CaseContext,
    case: Case,
    assignee_id: uuid.UUID | None,
    *,
    reason: str | None,
    if_match: str | None,
) -> Case:
    """Give the case to a handler holding ``cases:write`` at its unit (None: unassign)."""
    check_if_match(case, if_match)
    unit = get_unit(ctx.session, case.unit_id)
    ctx.access.require("cases:assign", unit)
    if case.state in lifecycle.FINAL_STATES:
        raise Problem(409, f"case {case.number} is closed", slug="case-closed")
    if assignee_id is not None:
        _check_assignee(ctx, assignee_id, unit)
    _do_assign(ctx, case, assignee_id, reason=reason, mode="manual")
    flush(ctx)
    return case


def _do_assign(
    ctx: CaseContext, case: Case, assignee_id: uuid.UUID | None, *, reason: str | None, mode: str
) -> None:
    before = {"assignee_id": _json(case.assignee_id)}
    case.assignee_id = assignee_id
    now = ctx.now()
    case.assigned_at = now if assignee_id else None
    record_event(
        ctx,
        case,
        "assigned",
        at=max(now, case.received_at),
        reason=reason,
        before=before,
        after={"assignee_id": _json(assignee_id)},
        data={"mode": mode},
    )
    emit_outbox(ctx, case, "case.assigned", {"assignee_id": _json(assignee_id)})


def unit_handlers(session: Session, unit: OrgUnit) -> list[Person]:
    """Active people holding ``cases:write`` through a role assigned at ``unit`` itself."""
    rows = session.execute(
        select(Person, Role.permissions)
        .join(RoleAssignment, RoleAssignment.person_id == Person.id)
        .join(Role, Role.id == RoleAssignment.role_id)
        .where(RoleAssignment.unit_id == unit.id, Person.active.is_(True))
        .order_by(Person.username, Person.id)
    ).all()
    seen: dict[uuid.UUID, Person] = {}
    for person, permissions in rows:
        if "cases:write" in (permissions or []):
            seen.setdefault(person.id, person)
    return list(seen.values())


@guarded
def auto_assign(ctx: CaseContext, unit_id: uuid.UUID) -> tuple[list[Case], list[Person]]:
    """Assign the unit's unassigned open cases, oldest first, round-robin among its handlers.

    The pointer is a counter row (``rr:<unit>``) moved in the same transaction, so concurrent
    runs continue the rotation instead of restarting it.
    """
    session = ctx.session
    unit = get_unit(session, unit_id)
    ctx.access.require("cases:assign", unit)
    handlers = unit_handlers(session, unit)
    if not handlers:
        raise Problem(
            409, f"unit {unit.code} has no handlers (cases:write at the unit)", slug="no-handlers"
        )
    cases = session.scalars(
        select(Case)
        .where(
            Case.unit_id == unit.id,
            Case.assignee_id.is_(None),
            Case.state.not_in(sorted(lifecycle.FINAL_STATES | {"withdrawn"})),
        )
        .order_by(Case.received_at, Case.id)
        .with_for_update(skip_locked=True)
    ).all()
    assigned = []
    for case in cases:
        turn = services.next_value(session, f"rr:{unit.id}")
        person = handlers[(turn - 1) % len(handlers)]
        _do_assign(ctx, case, person.id, reason=None, mode="round_robin")
        assigned.append(case)
    flush(ctx)
    return assigned, handlers


# -- notices and attachments ----------------------------------------------------------------


@guarded
def record_notice(
    ctx: CaseContext,
    case: Case,
    *,
    channel: str,
    content: str,
    purpose: str,
    occurred: dt.datetime | None,
    if_match: str | None,
) -> CaseEvent:
    """Record a notice sent to the customer (what, by which channel, when). The first one
    meets the case's first-contact clocks (:func:`core.cases.clocks.is_first_contact`); the
    notice's timeline event lists them."""
    check_if_match(case, if_match)
    ctx.access.require("cases:write", get_unit(ctx.session, case.unit_id))
    at = occurred_at(ctx, case, occurred)
    changes = _ClockChanges()
    for row in services.open_clocks(ctx.session, case.id):
        if is_first_contact(row.clock) and row.status in ("running", "paused"):
            try:
                _set(row, complete(to_state(row), at), changes, "completed")
            except ClockError as exc:
                raise Problem(409, str(exc), slug="clock-refused", clock=row.clock) from exc
    data: dict[str, Any] = {"channel": channel, "purpose": purpose, "content": content}
    if changes.items:
        data["clocks"] = changes.items
        services.refresh_next_due(ctx.session, case)
    event = record_event(ctx, case, "notice", at=at, data=data)
    emit_outbox(ctx, case, "case.notice", {"channel": channel})
    flush(ctx)
    return event


MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
"""The largest attachment accepted (20 MiB)."""

ALLOWED_MEDIA_TYPES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
    "text/plain": (),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (b"PK\x03\x04",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (b"PK\x03\x04",),
    "audio/mpeg": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
    "audio/wav": (b"RIFF",),
}
"""Media types accepted, with the leading bytes a file of that type starts with (checked)."""


@guarded
def add_attachment(
    ctx: CaseContext,
    case: Case,
    *,
    filename: str,
    media_type: str,
    data: bytes,
    purpose: str,
    expected_sha256: str | None,
) -> Attachment:
    """Check (size, media type, checksum), encrypt, store and record an attachment."""
    if ctx.storage is None:
        raise RuntimeError("no attachment storage configured")
    ctx.access.require("cases:write", get_unit(ctx.session, case.unit_id))
    media_type = media_type.split(";")[0].strip().lower()
    if media_type not in ALLOWED_MEDIA_TYPES:
        raise Problem(
            415,
            f"{media_type or 'this type'} is not accepted; send one of "
            f"{', '.join(sorted(ALLOWED_MEDIA_TYPES))}",
            slug="unsupported-media-type",
            allowed=sorted(ALLOWED_MEDIA_TYPES),
        )
    if not data:
        raise Problem(422, "the file is empty", slug="empty-file")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise Problem(
            413,
            f"the file has {len(data)} bytes; the limit is {MAX_ATTACHMENT_BYTES}",
            slug="payload-too-large",
        )
    magic = ALLOWED_MEDIA_TYPES[media_type]
    if magic and not any(data.startswith(m) for m in magic):
        raise Problem(415, f"the file's content is not {media_type}", slug="media-type-mismatch")
    if media_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Problem(415, "text/plain must be UTF-8", slug="media-type-mismatch") from exc
    digest = sha256_of(data)
    if expected_sha256 and expected_sha256.strip().lower() != digest:
        raise Problem(
            422,
            f"the file's SHA-256 is {digest}, not {expected_sha256}",
            slug="checksum-mismatch",
        )
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()[:255] or "attachment"
    attachment = Attachment(
        id=new_id(),
        case_id=case.id,
        filename=name,
        media_type=media_type,
        size=len(data),
        sha256=digest,
        purpose=purpose,
        uploaded_by_id=ctx.actor.person_id,
        uploaded_by=ctx.actor.label,
        uploaded_at=ctx.now(),
    )
    attachment.storage_key = f"{ctx.tenant.id}/{case.id}/{attachment.id}"
    # Encrypted under the tenant's active data key, bound to this attachment; size and SHA-256
    # above stay the plaintext's (core.privacy.files).
    stored, attachment.key_version = seal_file(ctx.session, ctx.tenant.id, attachment.id, data)
    # Deleted again if this transaction does not commit (core.cases.storage).
    put_in_transaction(ctx.session, ctx.storage, attachment.storage_key, stored)
    ctx.session.add(attachment)
    record_event(
        ctx,
        case,
        "attachment",
        at=max(ctx.now(), case.received_at),
        data={
            "attachment_id": str(attachment.id),
            "filename": name,
            "media_type": media_type,
            "size": len(data),
            "sha256": digest,
            "purpose": purpose,
        },
    )
    flush(ctx)
    return attachment


# -- calendar reloads -----------------------------------------------------------------------


@dataclass
class RecomputeReport:
    """What :func:`recompute_provisional_clocks` did."""

    tenants: int = 0
    checked: int = 0
    moved: int = 0
    still_provisional: int = 0
    moves: list[dict[str, Any]] = field(default_factory=list)


def recompute_provisional_clocks(
    db: Database, plugins: PluginHost | None = None
) -> RecomputeReport:
    """Recompute every open provisional clock of every tenant on the current calendar.

    Called after ``insurdesk calendar load``: a clock whose due reached into a year without an
    official schedule is counted again (on its unit's calendar, plugins' adjustments included);
    where its due moved, the case's timeline gets a ``clock.recomputed`` event (actor
    ``system:calendar``). The tenants are found through the platform path (a partial index on
    open provisional clocks); each tenant's clocks are changed in its own transaction.

    :param plugins: the plugin host (default: one built for this call).
    """
    report = RecomputeReport()
    with db.platform_session() as s:
        tenant_ids = list(
            s.scalars(
                select(CaseClock.tenant_id)
                .where(CaseClock.provisional.is_(True), CaseClock.status.in_(("running", "paused")))
                .distinct()
            )
        )
    if not tenant_ids:
        return report
    host = plugins or PluginHost(build_registry(), db, listen=False)
    try:
        for tenant_id in tenant_ids:
            report.tenants += 1
            with db.tenant_transaction(tenant_id) as session:
                _recompute_tenant(session, tenant_id, host, report)
    finally:
        if plugins is None:
            host.close()
    log.info(
        "provisional_clocks_recomputed",
        tenants=report.tenants,
        checked=report.checked,
        moved=report.moved,
    )
    return report


def _recompute_tenant(
    session: Session, tenant_id: uuid.UUID, host: PluginHost, report: RecomputeReport
) -> None:
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    ctx = CaseContext(
        session=session,
        access=Access(
            Principal(tenant_id=tenant_id, subject="calendar", kind="client", scopes=frozenset()),
            [],
        ),
        actor=Actor("system:calendar"),
        plugins=host,
        loaded_tenant=tenant,
        loaded_calendar=calendar_for(session, tenant.time_zone),
    )
    rows = session.scalars(
        select(CaseClock)
        .where(CaseClock.provisional.is_(True), CaseClock.status.in_(("running", "paused")))
        .order_by(CaseClock.case_id, CaseClock.clock)
    ).all()
    moved: dict[uuid.UUID, list[dict[str, Any]]] = {}
    calendars: dict[uuid.UUID, TenantCalendar] = {}
    for row in rows:
        report.checked += 1
        case = services.get_case(session, row.case_id)
        calendar = calendars.get(case.unit_id)
        if calendar is None:
            unit = get_unit(session, case.unit_id)
            calendar = calendars[case.unit_id] = ctx.calendar_at(unit_facts(unit))
        state = to_state(row)
        result = compute_due(
            state.started_at,
            state.amount,
            state.unit,
            calendar,
            ends_at=state.rule.ends_at,
            excluded=[(p.begin, p.end) for p in state.pauses],
        )
        row.provisional = result.provisional
        if result.provisional:
            report.still_provisional += 1
        if result.due != row.due_at:
            item = {
                "change": "recomputed",
                "previous_due_at": row.due_at.isoformat(),
                "previous_last_day": row.last_day.isoformat(),
            }
            row.due_at, row.last_day = result.due, result.last_day
            moved.setdefault(case.id, []).append({**summary(row), **item})
    for case_id, items in moved.items():
        case = services.get_case(session, case_id)
        record_event(
            ctx,
            case,
            "clock.recomputed",
            at=max(ctx.now(), case.received_at),
            reason="the holiday schedule of a provisional year was loaded",
            data={"clocks": items},
        )
        services.refresh_next_due(session, case)
        emit_outbox(ctx, case, "case.clocks_recomputed", {"clocks": [i["clock"] for i in items]})
        report.moved += len(items)
        report.moves.extend({"case": case.number, **i} for i in items)
