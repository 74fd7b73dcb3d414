"""The events an integrator can subscribe to, and the JSON body a delivery carries.

Bodies hold ids and states, never personal data (the integrator reads the case through the
API with its token, which applies its scopes and units)::

    {
      "id": "0193…",                       # the event id: the same for every subscription
      "type": "case.transitioned",
      "timestamp": "2026-03-02T08:15:00Z",  # when the event happened (UTC)
      "tenant": "huaxia",
      "data": {"case_id": "…", "number": "TS-2026-000123", "type": "complaint",
               "unit_id": "…", "from_state": "registered", "to_state": "accepted"}
    }
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

EVENT_TYPES: dict[str, str] = {
    "case.created": "A case was registered (any type: complaint, appeal, consultation ...).",
    "case.assigned": "A case was given to a handler.",
    "case.transitioned": "A case moved in its lifecycle (from_state, to_state).",
    "case.materials_missing": "The customer was asked for missing materials.",
    "case.answered": "The customer was given the decision.",
    "deadline.approaching": "A deadline clock of a case is near its due time.",
    "deadline.breached": "A deadline clock of a case passed its due time.",
    "plugin.settings_changed": "A plugin was enabled, disabled or reconfigured at a unit "
    "(which keys changed, never their values).",
    "visit.completed": "A callback visit was completed (reserved until visits are recorded).",
    "webhook.ping": "A test message, sent on request (POST /api/v1/webhooks/{id}/ping).",
}
"""Public event types and what they mean (``*`` subscribes to all)."""

_FROM_OUTBOX: dict[str, str] = {"deadline.reminder": "deadline.approaching"}
"""Outbox event types published under another name."""


def public_type(outbox_type: str) -> str | None:
    """The public event type of an outbox event, or None when it is not published."""
    name = _FROM_OUTBOX.get(outbox_type, outbox_type)
    return name if name in EVENT_TYPES and name != "webhook.ping" else None


def matches(subscribed: list[str], event_type: str) -> bool:
    """Whether a subscription to ``subscribed`` gets ``event_type``."""
    return "*" in subscribed or event_type in subscribed


def _iso(at: dt.datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def build_body(
    *,
    event_id: uuid.UUID,
    event_type: str,
    occurred_at: dt.datetime,
    tenant_slug: str,
    data: Mapping[str, Any],
) -> str:
    """The JSON body of a delivery (compact, keys sorted, UTF-8 text)."""
    return json.dumps(
        {
            "id": str(event_id),
            "type": event_type,
            "timestamp": _iso(occurred_at),
            "tenant": tenant_slug,
            "data": dict(data),
        },
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )
