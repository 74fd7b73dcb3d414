"""The values that cross the plugin boundary: facts the core passes in, results plugins return.

Everything here is an immutable dataclass (or a ``Protocol``), so a plugin can neither change what
another plugin sees nor the core's cached state. Plugins import these names from
:mod:`core.hookspecs`, the one public module of the plugin API.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from core.deadlines import DeadlineRule

CaseType = Literal[
    "complaint",
    "appeal",
    "consultation",
    "claim_report",
    "whistleblowing",
    "service_request",
    "data_subject_request",
]
"""The kinds of case (DOMAIN.md): 投诉, 申诉, 咨询, 报案, 举报, 售后服务, and the case of a
data-subject request (个人信息权利请求, its deadline set by ``privacy_cn``)."""

PERSONAL_LINES = frozenset({"life", "health", "accident", "annuity"})
"""Lines of business that are 人身保险 (the 2010 life-insurance service rules apply to them)."""


@dataclass(frozen=True, kw_only=True)
class UnitFacts:
    """The organization unit a hook is asked about.

    :param id: the unit id.
    :param code: the unit's code in its tenant (e.g. ``BJ``).
    :param kind: ``group``, ``company``, ``branch``, ``sub_branch``, ``agency`` ...
    :param path: the materialized path ``/<root id>/.../<id>/``.
    """

    id: uuid.UUID
    code: str
    kind: str
    path: str


@dataclass(frozen=True, kw_only=True)
class CustomerFacts:
    """What a policy may need to know about the customer (never contact data)."""

    age: int | None = None
    vip: bool = False
    vulnerable: bool = False
    """Elderly, disabled or otherwise in need of extra care (适老化 and similar rules)."""


@dataclass(frozen=True, kw_only=True)
class PolicyFacts:
    """The policy a case is about, when there is one."""

    line_of_business: str
    """``life``, ``health``, ``accident``, ``annuity``, ``property``, ``motor``, ``liability``."""
    term_months: int | None = None
    start_date: dt.date | None = None
    cooling_off_end: dt.date | None = None
    group: bool = False
    """A group policy (团体保险): the 2010 life-service rules do not apply (第三十二条)."""

    @property
    def personal(self) -> bool:
        """Whether the policy is 人身保险 (life, health, accident, annuity)."""
        return self.line_of_business in PERSONAL_LINES


@dataclass(frozen=True, kw_only=True)
class CaseFacts:
    """The facts of a case that policies decide on; built by the core from a case record.

    :param case_type: see :data:`CaseType`.
    :param channel: where it came in (``hotline``, ``online``, ``letter``, ``regulator`` ...).
    :param unit: the owning organization unit.
    :param received_at: when the request was received (timezone-aware).
    :param service_kind: for service requests: ``policy_change`` (保全), ``policy_query``,
        ``renewal``, ``claim_assistance`` ...
    :param complexity: flags such as ``complex``, ``particularly_complex``,
        ``regulator_transferred``, ``new_facts``.
    """

    case_type: CaseType
    channel: str
    unit: UnitFacts
    received_at: dt.datetime
    customer: CustomerFacts = field(default_factory=CustomerFacts)
    policy: PolicyFacts | None = None
    service_kind: str | None = None
    complexity: frozenset[str] = frozenset()
    state: str = "registered"

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("CaseFacts.received_at must be timezone-aware")

    @property
    def is_complaint(self) -> bool:
        """A complaint or an appeal (申诉: a complaint about how a complaint was handled)."""
        return self.case_type in ("complaint", "appeal")


@dataclass(frozen=True, kw_only=True)
class Period:
    """A planning period, both ends included (e.g. a month or a quarter)."""

    start: dt.date
    end: dt.date
    label: str = ""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends before it starts: {self.start} .. {self.end}")

    @property
    def months(self) -> int:
        """The number of calendar months the period touches."""
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1


@dataclass(frozen=True, kw_only=True)
class PluginInfo:
    """What a plugin says about itself (``insurdesk_plugin_info``).

    The plugin's *name* is the name it is registered under (the built-in module's name, or the
    entry point's name), never taken from here, so it cannot clash with another plugin's.
    """

    version: str
    title_zh: str
    title_en: str
    description_zh: str
    description_en: str
    kind: Literal["statutory", "policy", "channel", "extension"] = "policy"
    citations: tuple[str, ...] = ()
    """The rules the plugin implements, e.g. ``2020-complaints/18``."""


@dataclass(frozen=True, kw_only=True)
class VisitQuota:
    """How many callback visits (回访) of one kind are due in a period, and how they are drawn.

    :param kind: e.g. ``new_policy``, ``after_complaint``, ``after_claim``, ``after_sale``,
        ``satisfaction_survey``, ``periodic``.
    :param population: what is sampled: ``new_policies``, ``closed_complaints``,
        ``paid_claims``, ``closed_cases``, ``customers``.
    :param share: the share of the population to visit, 0 < share <= 1 (1: every one).
    :param minimum: at least this many visits in the period (when the population allows).
    :param sampling: ``all``, ``random`` or ``risk_weighted``.
    """

    kind: str
    population: str
    share: float
    minimum: int = 0
    sampling: Literal["all", "random", "risk_weighted"] = "random"
    citation: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"visit quota {self.kind}: share must be in (0, 1], not {self.share}")
        if self.minimum < 0:
            raise ValueError(f"visit quota {self.kind}: minimum must be >= 0")
        if self.sampling not in ("all", "random", "risk_weighted"):
            raise ValueError(f"visit quota {self.kind}: unknown sampling {self.sampling!r}")


@dataclass(frozen=True, kw_only=True)
class RubricItem:
    """One scoring item of a quality inspection (质检)."""

    key: str
    title_zh: str
    title_en: str
    max_score: int
    citation: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.max_score < 1:
            raise ValueError(f"rubric item {self.key}: max_score must be >= 1")


@dataclass(frozen=True, kw_only=True)
class InspectionSchedule:
    """How often periodic inspections run, in months (the core never allows more than 6)."""

    interval_months: int
    citation: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.interval_months < 1:
            raise ValueError("an inspection interval must be at least one month")


FollowUpKind = Literal[
    "callback_visit",
    "satisfaction_survey",
    "notification",
    "escalation",
    "adhoc_inspection",
    "regulator_report",
]


@dataclass(frozen=True, kw_only=True)
class FollowUp:
    """Something a plugin wants done because of a case event; the core records it.

    Plugins never write anything themselves: they return follow-ups, and the core stores them
    (visits, outbox messages) in the same transaction as the event.

    :param kind: see :data:`FollowUpKind`.
    :param due: the deadline for it, counted from the event, or None (no deadline).
    :param recipients: people or addresses to involve (escalation contacts ...).
    :param channel: the notification channel to use, when it is a message.
    """

    kind: FollowUpKind
    due: DeadlineRule | None = None
    recipients: tuple[str, ...] = ()
    channel: str | None = None
    note: str = ""
    citation: str = ""
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class ClockPause:
    """A clock that stops while a case is in some states (``insurdesk_clock_pauses``).

    The time a case spends in one of ``states`` is not counted in ``clock``: the clock is paused
    when a transition enters such a state and resumed, with its remaining time, when one leaves
    it (e.g. a claim's decision period while the insurer waits for the claimant's proof).

    :param clock: the clock's name, e.g. ``claim.decision``.
    :param states: lifecycle states (``awaiting_materials`` ...) in which it does not run.
    :param citation: the rule that allows it, e.g. ``spc-insurance-2/15``.
    """

    clock: str
    states: tuple[str, ...]
    citation: str
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.clock or not self.states:
            raise ValueError("a clock pause names a clock and at least one state")
        if not self.citation:
            raise ValueError(f"the pause of {self.clock} needs the citation that allows it")


@dataclass(frozen=True, kw_only=True)
class CalendarAdjustment:
    """Changes a plugin makes to a unit's working-day calendar.

    :param extra_closed: days the unit is closed although the national calendar works.
    :param extra_working: days the unit works although the national calendar rests.
    :param business_hours: ``(open, close)`` local times; the close ends periods that end at
        close of business (民法典 第二百零三条).
    """

    extra_closed: frozenset[dt.date] = frozenset()
    extra_working: frozenset[dt.date] = frozenset()
    business_hours: tuple[dt.time, dt.time] | None = None
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class Notification:
    """A message to send, before a channel turns it into its wire format."""

    id: str
    """Stable id (the outbox id): the idempotency key of the delivery."""
    tenant_id: uuid.UUID
    event: str
    subject: str
    body: str
    recipients: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """A message in a channel's wire format, ready for the outbox relay to deliver."""

    channel: str
    destination: str
    headers: Mapping[str, str]
    body: bytes
    content_type: str


@runtime_checkable
class NotificationChannel(Protocol):
    """A way to reach people: e-mail, SMS, WeCom/DingTalk-style webhooks ...

    A channel builds (and signs) the message; delivery is the outbox relay's job.
    """

    @property
    def name(self) -> str:
        """The channel's unique name (``email``, ``webhook``, ``sms`` ...)."""
        ...

    @property
    def title_zh(self) -> str:
        """The channel's name in Chinese."""
        ...

    @property
    def title_en(self) -> str:
        """The channel's name in English."""
        ...

    def build(self, message: Notification) -> list[OutboundMessage]:
        """The wire messages for ``message`` (one per destination)."""
        ...
