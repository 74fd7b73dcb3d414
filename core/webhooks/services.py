"""Webhook subscriptions and deliveries of a tenant: who may do what, and the changes.

Managing a subscription needs ``webhooks:admin`` and ``cases:read`` at every unit it covers
(a subscription for the whole tenant: at the top of the tree), because its deliveries tell
about the cases there. Subscriptions the caller cannot manage, and their deliveries, are 404s.
Every change is written to the tenant's audit log.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.auth.audit import record_by
from core.auth.guards import Access
from core.db import new_id, utcnow
from core.orgs.models import OrgUnit
from core.orgs.services import unit_paths
from core.outbox.services import emit
from core.settings import Settings
from core.tenancy.models import Tenant
from core.webhooks.events import build_body
from core.webhooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookSubscription
from core.webhooks.signing import generate_secret
from core.webhooks.urls import AddressRefused, check_url

ADMIN = "webhooks:admin"
READ = "cases:read"
SEND_EVENT = "webhook.send"
"""The outbox event that sends one delivery (payload ``delivery_id``)."""
PREVIOUS_SECRET_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class Caller:
    """Who is asking: permissions, audit label and source address."""

    access: Access
    source: str | None = None

    @property
    def label(self) -> str:
        """``client:<client_id>`` or ``person:<id>``."""
        p = self.access.principal
        return f"person:{p.subject}" if p.kind == "person" else f"client:{p.client_id}"


def _may_manage(session: Session, access: Access, unit_ids: Sequence[str | uuid.UUID]) -> bool:
    paths = unit_paths(session, unit_ids)
    return bool(paths) and all(access.can(ADMIN, p) and access.can(READ, p) for p, _ in paths)


def _require_units(session: Session, access: Access, unit_ids: Sequence[uuid.UUID]) -> list[str]:
    access.require_anywhere(ADMIN)
    wanted = sorted(set(unit_ids), key=str)
    paths = unit_paths(session, wanted)
    if wanted and len(paths) < len(wanted):
        found = set(session.scalars(select(OrgUnit.id).where(OrgUnit.id.in_(wanted))))
        missing = [str(u) for u in wanted if u not in found]
        raise Problem(
            422,
            f"unknown organization units: {', '.join(missing)}",
            slug="unknown-unit",
            units=missing,
        )
    for path, code in paths:
        for permission in (ADMIN, READ):
            if not access.can(permission, path):
                raise Problem(
                    403,
                    f"{permission!r} does not hold at unit {code}"
                    + ("" if wanted else " (a subscription for the tenant needs it at the top)"),
                    slug="forbidden",
                    permission=permission,
                    unit=code,
                )
    return [str(u) for u in wanted]


def check_target(settings: Settings, url: str) -> None:
    """Refuse a URL the platform must not call (422 ``webhook-url-refused``)."""
    try:
        check_url(
            url,
            https_only=settings.is_production,
            allow_private=settings.webhooks_may_reach_private,
        )
    except AddressRefused as exc:
        raise Problem(422, str(exc), slug="webhook-url-refused") from None


def _event_types(types: Sequence[str]) -> list[str]:
    unique = sorted(set(types))
    return ["*"] if "*" in unique else unique


def create(
    session: Session,
    caller: Caller,
    settings: Settings,
    *,
    url: str,
    event_types: Sequence[str],
    description: str,
    unit_ids: Sequence[uuid.UUID],
    active: bool,
) -> tuple[WebhookSubscription, str]:
    """Subscribe ``url``; returns the subscription and its secret (shown once).

    Without ``unit_ids``, an integrator restricted to some units subscribes for those units;
    anyone else for the whole tenant.
    """
    principal = caller.access.principal
    if not unit_ids and principal.kind == "client" and principal.client_unit_ids:
        unit_ids = list(principal.client_unit_ids)
    units = _require_units(session, caller.access, unit_ids)
    check_target(settings, url)
    secret = generate_secret()
    sub = WebhookSubscription(
        url=url,
        description=description,
        event_types=_event_types(event_types),
        unit_ids=units,
        secret=secret,
        active=active,
        created_by=caller.label,
    )
    session.add(sub)
    session.flush()
    _audit(session, caller, "webhook.subscribed", sub)
    return sub, secret


def get_visible(session: Session, caller: Caller, webhook_id: uuid.UUID) -> WebhookSubscription:
    """The subscription, if the caller may manage it; else a 404."""
    caller.access.require_anywhere(ADMIN)
    sub = session.get(WebhookSubscription, (session.info["tenant_id"], webhook_id))
    if sub is None or not _may_manage(session, caller.access, sub.unit_ids):
        raise not_found("webhook", webhook_id)
    return sub


def list_visible(
    session: Session, caller: Caller, *, active: bool | None = None
) -> list[WebhookSubscription]:
    """The subscriptions the caller may manage, by id."""
    caller.access.require_anywhere(ADMIN)
    stmt = select(WebhookSubscription).order_by(WebhookSubscription.id)
    if active is not None:
        stmt = stmt.where(WebhookSubscription.active.is_(active))
    return [s for s in session.scalars(stmt) if _may_manage(session, caller.access, s.unit_ids)]


def update(
    session: Session,
    caller: Caller,
    settings: Settings,
    sub: WebhookSubscription,
    *,
    url: str | None,
    event_types: Sequence[str] | None,
    description: str | None,
    unit_ids: Sequence[uuid.UUID] | None,
    active: bool | None,
) -> WebhookSubscription:
    """Change a subscription (the new units and URL are checked like at creation)."""
    changes: dict[str, object] = {}
    if unit_ids is not None:
        changes["unit_ids"] = _require_units(session, caller.access, unit_ids)
    if url is not None:
        check_target(settings, url)
        changes["url"] = url
    if event_types is not None:
        changes["event_types"] = _event_types(event_types)
    if description is not None:
        changes["description"] = description
    if active is not None:
        changes["active"] = active
    changed = {k: v for k, v in changes.items() if getattr(sub, k) != v}
    for attr, value in changed.items():
        setattr(sub, attr, value)
    if changed:
        session.flush()
        _audit(session, caller, "webhook.updated", sub, changed=sorted(changed))
    return sub


def rotate_secret(session: Session, caller: Caller, sub: WebhookSubscription) -> str:
    """A new secret; the previous one keeps signing alongside for 24 hours."""
    now = utcnow()
    sub.previous_secret = sub.secret
    sub.previous_secret_until = now + PREVIOUS_SECRET_GRACE
    sub.secret = generate_secret()
    session.flush()
    _audit(session, caller, "webhook.secret_rotated", sub)
    return sub.secret


def deliveries(
    session: Session,
    sub: WebhookSubscription,
    *,
    status: str | None,
    event_type: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[WebhookDelivery]:
    """Deliveries of ``sub``, newest first (``after``: older than that id); one more than
    ``limit`` tells if a page follows."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub.id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if event_type:
        stmt = stmt.where(WebhookDelivery.event_type == event_type)
    if after is not None:
        stmt = stmt.where(WebhookDelivery.id < after)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))


def get_delivery(
    session: Session, sub: WebhookSubscription, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """A delivery of ``sub``, or a 404."""
    row = session.get(WebhookDelivery, (session.info["tenant_id"], delivery_id))
    if row is None or row.subscription_id != sub.id:
        raise not_found("delivery", delivery_id)
    return row


def replay(
    session: Session, caller: Caller, sub: WebhookSubscription, row: WebhookDelivery
) -> WebhookDelivery:
    """Send a delivery again: same ``webhook-id`` and body, a fresh attempt budget."""
    if row.status == WebhookDeliveryStatus.SENDING.value:
        raise Problem(
            409, "the delivery is being sent right now; try again shortly", slug="delivery-busy"
        )
    if not sub.active:
        raise Problem(409, "the subscription is paused (active: false)", slug="webhook-inactive")
    row.status = WebhookDeliveryStatus.PENDING.value
    row.attempts = 0
    row.replays += 1
    row.next_attempt_at = None
    row.lease_until = None
    session.flush()
    emit(session, SEND_EVENT, {"delivery_id": row.id}, dedupe_key=f"webhook-replay:{new_id()}")
    _audit(session, caller, "webhook.delivery_replayed", sub, delivery_id=str(row.id))
    return row


def ping(session: Session, caller: Caller, sub: WebhookSubscription) -> WebhookDelivery:
    """Queue a ``webhook.ping`` delivery to ``sub`` (to test a receiver)."""
    if not sub.active:
        raise Problem(409, "the subscription is paused (active: false)", slug="webhook-inactive")
    tenant = session.get(Tenant, session.info["tenant_id"])
    event_id = new_id()
    row = WebhookDelivery(
        subscription_id=sub.id,
        event_id=event_id,
        event_type="webhook.ping",
        body=build_body(
            event_id=event_id,
            event_type="webhook.ping",
            occurred_at=utcnow(),
            tenant_slug=tenant.slug if tenant else "",
            data={"webhook_id": str(sub.id), "requested_by": caller.label},
        ),
        status=WebhookDeliveryStatus.PENDING.value,
    )
    session.add(row)
    session.flush()
    emit(session, SEND_EVENT, {"delivery_id": row.id}, dedupe_key=f"webhook-send:{row.id}:0")
    return row


def _audit(
    session: Session, caller: Caller, action: str, sub: WebhookSubscription, **details: object
) -> None:
    record_by(
        session,
        caller.access.principal,
        action=action,
        target=("webhook", sub.id),
        details={
            "url": sub.url,
            "event_types": list(sub.event_types),
            "unit_ids": list(sub.unit_ids),
            "active": sub.active,
            **details,
        },
        source=caller.source,
    )
