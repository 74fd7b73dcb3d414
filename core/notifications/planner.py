"""Planning an event's notifications: who, over which channel, with what text.

A plan is a pure function of the outbox row and the database as it is now: recipients from
:mod:`core.notifications.routing` and :mod:`core.notifications.recipients`, channels from the
plugins enabled at the unit concerned, texts from the templates. Each planned item has a
*key* (channel + address hash) that is unique per event, so planning twice (a redelivered
message, a retry) yields the same deliveries, never new ones.

Items the rules say not to send are simply absent: a reminder for a clock that is no longer
running (the case was resolved in time) plans nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import new_id
from core.notifications import recipients as rcpt
from core.notifications.channels import ChannelSource, ResolvedChannel
from core.notifications.masking import mask_address, recipient_key
from core.notifications.recipients import Contact
from core.notifications.routing import audiences, literal_contacts
from core.notifications.templates import (
    DEFAULT_LANGUAGE,
    Renderer,
    TemplateSet,
    load_templates,
    normalize_language,
)
from core.orgs.models import OrgUnit
from core.outbox.processing import EventView
from core.plugins.types import Notification, OutboundMessage
from core.privacy.consent import notification_refusal
from core.tenancy.models import Tenant

CASE_TYPES_ZH = {
    "complaint": "投诉",
    "appeal": "申诉",
    "consultation": "咨询",
    "claim_report": "报案",
    "whistleblowing": "举报",
    "service_request": "售后服务请求",
    "data_subject_request": "个人信息权利请求",
}
CASE_TYPES_EN = {
    "complaint": "complaint",
    "appeal": "appeal",
    "consultation": "enquiry",
    "claim_report": "claim report",
    "whistleblowing": "report",
    "service_request": "service request",
    "data_subject_request": "personal-data request",
}
ADDRESS_KINDS = {"email": "email", "sms": "phone", "phone": "phone"}
"""A customer's preferred channel → the kind of address it needs (others: no automatic way)."""
CLOCK_EVENTS = frozenset({"deadline.reminder", "deadline.breached"})
PHONE = re.compile(r"\+?[0-9][0-9\- ]{5,}")


@dataclass(frozen=True)
class TenantInfo:
    """What planning needs of the tenant itself (cached per process for a short while)."""

    name: str
    locale: str
    time_zone: str
    root_path: str | None


class _Ttl:
    """A small per-process cache whose entries expire after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._items: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Any, keep: Any = bool) -> Any:
        """The cached value of ``key``, or ``load()`` (stored when ``keep(value)``)."""
        now = time.monotonic()
        found = self._items.get(key)  # one dict lookup is atomic: no lock for reading
        if found is not None and found[0] > now:
            return found[1]
        value = load()
        if not keep(value):
            return value
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (now + self.seconds, value)
        return value


@dataclass(frozen=True)
class Planned:
    """One delivery the event calls for (or a recipient that could not be reached).

    :param address: what the channel is given as the recipient (None for endpoints such as
        webhooks, whose destination comes from the plugin's settings).
    :param skipped: why nobody can be reached this way; the log records it, nothing is sent.
    :param delivery_id: the id the delivery gets when this plan records it first (None for
        skipped items: any id).
    :param message: the wire message the channel built for ``delivery_id`` while planning
        (planning must build it anyway, to learn whether the channel reaches the recipient);
        sent as it is when the delivery was recorded under that id, so a message is built and
        signed once. A delivery recorded earlier (a redelivered event, a retry) is built again
        with its own id.
    """

    key: str
    channel: str
    audience: str
    recipient_ref: str
    masked: str
    language: str
    subject: str
    body: str
    address: str | None = None
    destination: str | None = None
    skipped: str | None = None
    delivery_id: uuid.UUID | None = None
    message: OutboundMessage | None = field(default=None, repr=False, compare=False)


@dataclass
class Plan:
    """An event's planned deliveries and what is needed to build their messages."""

    event: EventView
    items: list[Planned] = field(default_factory=list)
    channels: dict[str, ResolvedChannel] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    """Why the plan is empty, when the rules say not to send (e.g. the clock stopped)."""

    def item(self, key: str, channel: str) -> Planned | None:
        """The item with delivery key ``(channel, key)``."""
        for item in self.items:
            if item.key == key and item.channel == channel:
                return item
        return None


def _address_of(destination: str) -> str:
    lowered = destination.strip()
    for scheme in ("mailto:", "sms:", "tel:"):
        if lowered.lower().startswith(scheme):
            return lowered[len(scheme) :].lower()
    return lowered.lower()


def pick_message(messages: Iterable[OutboundMessage], item: Planned) -> OutboundMessage | None:
    """The message of ``messages`` meant for ``item`` (matched on address or destination)."""
    for message in messages:
        if item.address is not None:
            if _address_of(message.destination) == item.address.lower():
                return message
        elif message.destination == item.destination:
            return message
    return None


class Planner:
    """Plans notifications for outbox events (see the module docstring).

    :param tenant_cache_seconds: how long the tenant's name, locale, time zone and top unit
        are reused; ``template_cache_seconds``: how long a tenant's template overrides are
        (a changed template reaches the workers within that time).
    """

    def __init__(
        self,
        channels: ChannelSource,
        renderer: Renderer | None = None,
        *,
        tenant_cache_seconds: float = 60.0,
        template_cache_seconds: float = 5.0,
    ) -> None:
        self.channel_source = channels
        self.renderer = renderer or Renderer()
        self._tenants = _Ttl(tenant_cache_seconds)
        self._templates = _Ttl(template_cache_seconds)

    def tenant_info(self, session: Session, tenant_id: uuid.UUID) -> TenantInfo | None:
        """The tenant's name, locale, time zone and top unit path (cached)."""

        def load() -> TenantInfo | None:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                return None
            root = session.scalar(
                select(OrgUnit.path)
                .where(OrgUnit.parent_id.is_(None))
                .order_by(OrgUnit.id)
                .limit(1)
            )
            return TenantInfo(tenant.name, tenant.locale, tenant.time_zone, root)

        # A tenant without units yet is not kept: its first unit must be seen at once.
        return self._tenants.get(
            tenant_id, load, keep=lambda info: info is not None and info.root_path is not None
        )

    def templates(self, session: Session, tenant_id: uuid.UUID, event_type: str) -> TemplateSet:
        """The tenant's overrides for ``event_type`` (cached briefly)."""
        return self._templates.get(
            (tenant_id, event_type), lambda: load_templates(session, event_type), keep=bool
        )

    def plan(self, session: Session, event: EventView) -> Plan:
        """The plan of ``event``, read through ``session`` (a session of its tenant)."""
        plan = Plan(event=event, data={"event_id": str(event.id), "payload": dict(event.payload)})
        ctx = _Context.load(session, event, self.tenant_info(session, event.tenant_id))
        if ctx.reason:
            plan.reason = ctx.reason
            return plan
        unit_path = ctx.unit.path if ctx.unit is not None else ctx.root_path
        if unit_path is None:
            plan.reason = "the tenant has no organization unit"
            return plan
        plan.channels = {
            r.name: r for r in self.channel_source.channels(event.tenant_id, unit_path)
        }
        templates = self.templates(session, event.tenant_id, event.event_type)
        contacts, want_endpoints = self._contacts(session, ctx, event)
        seen: set[tuple[str, str]] = set()
        for contact in contacts:
            refusal = notification_refusal(session, event.event_type, event.payload, contact.ref)
            planned = (
                [_skipped(contact, contact.preferred or "email", refusal, _base(contact))]
                if refusal
                else self._for_contact(ctx, plan, templates, contact)
            )
            for item in planned:
                if (item.channel, item.key) not in seen:
                    seen.add((item.channel, item.key))
                    plan.items.append(item)
        if want_endpoints:
            for item in self._for_endpoints(ctx, plan, templates):
                if (item.channel, item.key) not in seen:
                    seen.add((item.channel, item.key))
                    plan.items.append(item)
        return plan

    def notification(self, plan: Plan, item: Planned, notification_id: str) -> Notification:
        """The :class:`Notification` a channel builds ``item``'s message from."""
        return Notification(
            id=notification_id,
            tenant_id=plan.event.tenant_id,
            event=plan.event.event_type,
            subject=item.subject,
            body=item.body,
            recipients=(item.address,) if item.address else (),
            data=plan.data,
        )

    # -- recipients -----------------------------------------------------------------------------

    def _contacts(
        self, session: Session, ctx: _Context, event: EventView
    ) -> tuple[list[Contact], bool]:
        found: list[Contact] = []
        endpoints = False
        for audience in audiences(event.event_type, event.payload):
            if audience == "endpoint":
                endpoints = True
            elif audience == "handler":
                found += rcpt.handler(session, ctx.case.assignee_id if ctx.case else None)
            elif audience == "manager" and ctx.unit is not None:
                found += rcpt.managers(session, ctx.unit)
            elif audience == "cs_division" and ctx.unit is not None:
                found += rcpt.cs_division(session, ctx.unit)
            elif audience == "customer" and ctx.case is not None:
                found += rcpt.customer(session, ctx.case.customer_id)
            elif audience == "customer":  # about a customer, not a case (e.g. marketing)
                found += rcpt.customer(session, _uuid(event.payload.get("customer_id")))
            elif audience == "contacts":
                found += _literal_contacts(literal_contacts(event.payload), ctx.language)
        unique: dict[str, Contact] = {}
        for contact in found:
            unique.setdefault(contact.ref, contact)
        return list(unique.values()), endpoints

    def _for_contact(
        self, ctx: _Context, plan: Plan, templates: TemplateSet, contact: Contact
    ) -> list[Planned]:
        kind = "email" if contact.preferred is None else ADDRESS_KINDS.get(contact.preferred)
        address = {"email": contact.email, "phone": contact.phone}.get(kind or "")
        base = {"audience": contact.audience, "recipient_ref": contact.ref}
        if kind is None or not address:
            why = (
                f"no automatic channel for the preferred contact {contact.preferred!r}"
                if kind is None
                else f"no {kind} address on record"
            )
            return [_skipped(contact, contact.preferred or kind or "none", why, base)]
        items: list[Planned] = []
        for name, resolved in plan.channels.items():
            subject, body = self.renderer.render(
                templates.choose(contact.language, name), ctx.render_context(contact)
            )
            draft = Planned(
                key=recipient_key(name, address),
                channel=name,
                masked=mask_address(address),
                language=contact.language,
                subject=subject,
                body=body,
                address=address,
                delivery_id=new_id(),
                audience=contact.audience,
                recipient_ref=contact.ref,
            )
            probe = self.notification(plan, draft, str(draft.delivery_id))
            message = pick_message(resolved.channel.build(probe), draft)
            if message is not None:
                items.append(replace(draft, message=message))
        if not items:
            return [_skipped(contact, kind, f"no enabled channel delivers to a {kind}", base)]
        return items

    def _for_endpoints(self, ctx: _Context, plan: Plan, templates: TemplateSet) -> list[Planned]:
        contact = Contact(
            ref="endpoint", audience="endpoint", name=ctx.tenant_name, language=ctx.language
        )
        items: list[Planned] = []
        for name, resolved in plan.channels.items():
            subject, body = self.renderer.render(
                templates.choose(ctx.language, name), ctx.render_context(contact)
            )
            draft = Planned(
                key="",
                channel=name,
                audience="endpoint",
                recipient_ref="endpoint",
                masked="",
                language=ctx.language,
                subject=subject,
                body=body,
            )
            draft_id = new_id()
            messages = resolved.channel.build(self.notification(plan, draft, str(draft_id)))
            for message in messages:
                # One destination (the usual case): the message built here is the one sent.
                one = len(messages) == 1
                items.append(
                    Planned(
                        key=recipient_key(name, message.destination),
                        channel=name,
                        audience="endpoint",
                        recipient_ref="endpoint",
                        masked=mask_address(message.destination),
                        language=ctx.language,
                        subject=subject,
                        body=body,
                        destination=message.destination,
                        delivery_id=draft_id if one else new_id(),
                        message=message if one else None,
                    )
                )
        return items


def _base(contact: Contact) -> dict[str, str]:
    return {"audience": contact.audience, "recipient_ref": contact.ref}


def _skipped(contact: Contact, channel: str, why: str, base: Mapping[str, str]) -> Planned:
    return Planned(
        key=recipient_key(channel, contact.ref),
        channel=channel,
        masked=contact.ref.split(":")[0],
        language=contact.language,
        subject="",
        body="",
        skipped=why,
        audience=base["audience"],
        recipient_ref=base["recipient_ref"],
    )


def _literal_contacts(addresses: list[str], language: str) -> list[Contact]:
    """Contacts for bare addresses: e-mail addresses by e-mail, phone numbers by SMS."""
    found = []
    for address in addresses:
        ref = "contact:" + recipient_key("contact", address)[:16]
        if "@" in address:
            found.append(
                Contact(
                    ref=ref,
                    audience="contact",
                    name=address.split("@")[0],
                    language=language,
                    email=address,
                )
            )
        elif PHONE.fullmatch(address.strip()):
            found.append(
                Contact(
                    ref=ref,
                    audience="contact",
                    name=mask_address(address),
                    language=language,
                    phone=address.strip(),
                    preferred="sms",
                )
            )
    return found


@dataclass
class _Context:
    """What the templates and the recipient rules need to know about an event."""

    event: EventView
    tenant: TenantInfo | None
    case: Any = None
    unit: OrgUnit | None = None
    reason: str | None = None
    reason_text: str | None = None
    """The reason of the timeline event the payload names (``event_seq``): free text is
    sealed in the timeline, never carried in the outbox."""

    @property
    def language(self) -> str:
        return normalize_language(self.tenant.locale if self.tenant else DEFAULT_LANGUAGE)

    @property
    def tenant_name(self) -> str:
        return self.tenant.name if self.tenant else ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tenant.time_zone if self.tenant else "Asia/Shanghai")

    @classmethod
    def load(cls, session: Session, event: EventView, tenant: TenantInfo | None) -> _Context:
        from core.cases.models import Case

        ctx = cls(event=event, tenant=tenant)
        tid = event.tenant_id
        case_id = _uuid(event.payload.get("case_id"))
        if case_id is not None:
            ctx.case = session.get(Case, (tid, case_id))
            if ctx.case is None:
                ctx.reason = f"case {case_id} does not exist"
                return ctx
        unit_id = _uuid(event.payload.get("unit_id")) or (ctx.case.unit_id if ctx.case else None)
        if unit_id is not None:
            ctx.unit = session.get(OrgUnit, (tid, unit_id))
        if event.event_type in CLOCK_EVENTS:
            ctx.reason = _clock_reason(session, event)
        seq = event.payload.get("event_seq")
        if ctx.case is not None and isinstance(seq, int):
            ctx.reason_text = _event_reason(session, ctx.case, seq)
        return ctx

    @property
    def root_path(self) -> str | None:
        return self.tenant.root_path if self.tenant else None

    def local(self, value: object) -> str:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return str(value)
        if isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return aware.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")
        return ""

    def render_context(self, contact: Contact) -> dict[str, Any]:
        payload: dict[str, Any] = dict(self.event.payload)
        case = self.case
        if self.reason_text is not None:
            payload["reason"] = self.reason_text
        clock = dict(payload.get("clock") or {})
        clock["due_local"] = self.local(clock.get("due_at"))
        cases = [
            {**c, "due_local": self.local(c.get("due_at"))}
            for c in payload.get("cases") or []
            if isinstance(c, dict)
        ]
        return {
            "event": self.event.event_type,
            "payload": payload,
            "tenant": {"name": self.tenant_name},
            "recipient": {"name": contact.name, "audience": contact.audience},
            "clock": clock,
            "cases": cases,
            "case": {
                "number": case.number,
                "subject": case.subject,
                "type": str(case.type),
                "type_zh": CASE_TYPES_ZH.get(str(case.type), str(case.type)),
                "type_en": CASE_TYPES_EN.get(str(case.type), str(case.type)),
                "state": getattr(case, "state", None),
                "received_at": self.local(case.received_at),
                "unit": self.unit.name if self.unit else "",
            }
            if case is not None
            else {},
        }


def _uuid(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def _event_reason(session: Session, case: Any, seq: int) -> str | None:
    from core.cases.models import CaseEvent

    found = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.seq == seq)
    ).first()
    return found.reason if found is not None else None


def _clock_reason(session: Session, event: EventView) -> str | None:
    """Why a deadline event should no longer be sent (clock stopped), or None to send it."""
    from core.cases.models import CaseClock

    clock = event.payload.get("clock")
    clock_id = _uuid(clock.get("id")) if isinstance(clock, dict) else None
    if clock_id is None:
        return None
    row = session.get(CaseClock, (event.tenant_id, clock_id))
    if row is None:
        return "the clock no longer exists"
    if event.event_type == "deadline.reminder" and row.status != "running":
        return f"the clock is {row.status}: no reminder is due"
    if event.event_type == "deadline.breached" and row.status not in ("running", "breached"):
        return f"the clock is {row.status}: no escalation is due"
    return None


def plan_keys(plan: Plan) -> Sequence[tuple[str, str]]:
    """``(channel, key)`` of every item (tests and logs)."""
    return [(i.channel, i.key) for i in plan.items]
