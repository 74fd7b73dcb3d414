"""Which audiences an event reaches. One table, so what the platform sends is easy to review.

Payload conventions (the emitter's side, docs/background.md): ``case_id`` for case events,
``unit_id`` when there is no case, ``from_state``/``to_state`` for transitions, ``clock``
(``id``, ``name``, ``due_at``, ``citation``) for deadline events, ``materials`` for missing
materials. A payload may name extra ``contacts`` (e-mail addresses a plugin's follow-up asked
for, e.g. a branch's escalation contacts).
"""

from __future__ import annotations

from collections.abc import Mapping

ROUTES: Mapping[str, tuple[str, ...]] = {
    "case.created": ("handler", "customer", "endpoint"),
    "case.assigned": ("handler", "endpoint"),
    "case.transitioned": ("handler", "endpoint"),
    "case.materials_missing": ("customer", "endpoint"),
    "case.answered": ("customer", "endpoint"),
    "case.clock_extended": ("handler", "customer", "endpoint"),
    "deadline.reminder": ("handler",),
    "deadline.breached": ("handler", "manager", "cs_division", "endpoint"),
    "digest.daily": ("manager",),
    "plugin.settings_changed": ("endpoint",),
}
"""Audiences per event type; any other event goes to the integrators' endpoints only."""

DEFAULT_AUDIENCES: tuple[str, ...] = ("endpoint",)
MARKETING_AUDIENCES: tuple[str, ...] = ("customer",)
"""``marketing.*`` events (payload ``customer_id``) go to that customer, and only with their
marketing consent (:func:`core.privacy.consent.notification_refusal`)."""

CUSTOMER_STATES = frozenset(
    {
        "accepted",
        "not_accepted",
        "transferred",
        "decided",
        "answered",
        "review_decided",
        "resolved",
        "closed",
    }
)
"""Transitions into these states are also told to the customer (客户服务管理规定 第十二条).
``awaiting_materials`` is not among them: ``case.materials_missing`` tells the customer what to
add, in one notice."""

INTERNAL_EVENTS = frozenset({"delivery.retry"})
"""Events the worker handles itself; nobody is notified of them."""


FOLLOW_UP_MESSAGES = frozenset({"notification", "escalation"})
"""Follow-ups from plugins (``case.follow_up``) that are messages to their ``recipients``;
other kinds (visits, inspections, reports) are work items, for the integrators' endpoints."""


def literal_contacts(payload: Mapping[str, object]) -> list[str]:
    """Addresses an event names itself: ``contacts``, or a message follow-up's ``recipients``
    (e.g. a branch's escalation contacts from ``branch_policy``)."""
    found = payload.get("contacts")
    if not found and payload.get("kind") in FOLLOW_UP_MESSAGES:
        found = payload.get("recipients")
    return [str(a) for a in found] if isinstance(found, list) else []


def audiences(event_type: str, payload: Mapping[str, object]) -> tuple[str, ...]:
    """The audiences of an event, in priority order (a person in two gets it once, as the
    first)."""
    default = MARKETING_AUDIENCES if event_type.startswith("marketing.") else DEFAULT_AUDIENCES
    found = list(ROUTES.get(event_type, default))
    if event_type == "case.transitioned" and payload.get("to_state") in CUSTOMER_STATES:
        found.insert(1, "customer")
    if literal_contacts(payload):
        found.append("contacts")
    return tuple(dict.fromkeys(found))
