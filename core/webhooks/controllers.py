"""HTTP API of webhooks: subscriptions, their secrets, deliveries, replays and pings.

Needs ``webhooks:admin`` (and ``cases:read``) at the subscription's units
(:mod:`core.webhooks.services`). Deliveries are sent by the background worker through the
outbox (:mod:`core.webhooks.delivery`), signed as docs/integrators.md explains.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlalchemy.orm import Session

from core.api.concurrency import (
    IfMatch,
    check_if_match,
    flush_or_412,
    requires_if_match,
    version_etag,
    with_etag,
)
from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, check_limit, decode_cursor, encode_cursor
from core.auth.guards import Access
from core.auth.principal import Principal
from core.settings import Settings
from core.webhooks import services
from core.webhooks.events import EVENT_TYPES
from core.webhooks.models import WebhookDeliveryStatus
from core.webhooks.schemas import (
    EventTypeOut,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookSecret,
    WebhookUpdate,
)


def _caller(request: Request[Principal, Any, Any], access: Access) -> services.Caller:
    return services.Caller(access, request.client.host if request.client else None)


class WebhookController(Controller):
    """Webhook subscriptions of the caller's tenant."""

    path = "/api/v1/webhooks"
    tags = ["webhooks"]
    dependencies = API_DEPENDENCIES

    @post(
        "/",
        operation_id="createWebhook",
        summary="Subscribe a URL to events",
        status_code=201,
    )
    @uses_database
    def create(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        settings: NamedDependency[Settings],
        data: JSONBody[WebhookCreate],
    ) -> Response[WebhookCreated]:
        """Subscribe ``url`` to event types (``*``: all) for units you manage. The answer holds
        the signing secret, shown this once. Private, loopback and link-local addresses are
        refused (422) unless the platform allows them; production needs https."""
        sub, secret = services.create(
            session,
            _caller(request, access),
            settings,
            url=data.url,
            event_types=[str(t) for t in data.event_types],
            description=data.description,
            unit_ids=data.unit_ids,
            active=data.active,
        )
        session.commit()
        return with_etag(
            WebhookCreated(webhook=WebhookOut.of(sub), secret=secret),
            sub.version,
            201,
            Location=f"/api/v1/webhooks/{sub.id}",
        )

    @get("/", operation_id="listWebhooks", summary="List webhook subscriptions")
    @uses_database
    def list_webhooks(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        active: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[WebhookOut]:
        """The subscriptions you may manage, oldest first."""
        limit = check_limit(limit)
        found = services.list_visible(session, _caller(request, access), active=active)
        if cursor:
            after = decode_cursor(cursor)
            found = [s for s in found if s.id > after]
        page = found[:limit]
        next_cursor = encode_cursor(page[-1].id) if len(found) > limit else None
        return Page(items=[WebhookOut.of(s) for s in page], next_cursor=next_cursor)

    @get(
        "/{webhook_id:uuid}",
        operation_id="getWebhook",
        summary="One webhook subscription",
    )
    @uses_database
    def get_webhook(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
    ) -> Response[WebhookOut]:
        """A subscription you may manage (its secret is never shown again)."""
        sub = services.get_visible(session, _caller(request, access), webhook_id)
        return with_etag(WebhookOut.of(sub), sub.version)

    @patch(
        "/{webhook_id:uuid}",
        operation_id="updateWebhook",
        summary="Change a webhook subscription",
    )
    @uses_database
    def update_webhook(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        settings: NamedDependency[Settings],
        webhook_id: FromPath[uuid.UUID],
        data: JSONBody[WebhookUpdate],
        if_match: IfMatch = None,
    ) -> Response[WebhookOut]:
        """Change the URL, event types, description, units or ``active``; ``If-Match``
        required of integrators."""
        caller = _caller(request, access)
        sub = services.get_visible(session, caller, webhook_id)
        check_if_match(
            if_match,
            version_etag(sub.version),
            required=requires_if_match(request.user),
            what="the webhook",
        )
        services.update(
            session,
            caller,
            settings,
            sub,
            url=data.url,
            event_types=[str(t) for t in data.event_types]
            if data.event_types is not None
            else None,
            description=data.description,
            unit_ids=data.unit_ids,
            active=data.active,
        )
        flush_or_412(session, what="the webhook")
        session.commit()
        return with_etag(WebhookOut.of(sub), sub.version)

    @post(
        "/{webhook_id:uuid}/secret",
        operation_id="rotateWebhookSecret",
        summary="Rotate a webhook's signing secret",
        status_code=200,
    )
    @uses_database
    def rotate_secret(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
    ) -> Response[WebhookSecret]:
        """A new secret, shown this once; for 24 hours deliveries carry a signature with each
        secret (``webhook-signature: v1,<new> v1,<old>``)."""
        caller = _caller(request, access)
        sub = services.get_visible(session, caller, webhook_id)
        secret = services.rotate_secret(session, caller, sub)
        flush_or_412(session, what="the webhook")
        session.commit()
        assert sub.previous_secret_until is not None
        return with_etag(
            WebhookSecret(id=sub.id, secret=secret, previous_valid_until=sub.previous_secret_until),
            sub.version,
        )

    @post(
        "/{webhook_id:uuid}/ping",
        operation_id="pingWebhook",
        summary="Send a test delivery",
        status_code=202,
    )
    @uses_database
    def ping(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
    ) -> WebhookDeliveryOut:
        """Queue a signed ``webhook.ping`` delivery to the subscription's URL."""
        caller = _caller(request, access)
        sub = services.get_visible(session, caller, webhook_id)
        row = services.ping(session, caller, sub)
        session.commit()
        return WebhookDeliveryOut.of(row)

    @get(
        "/{webhook_id:uuid}/deliveries",
        operation_id="listWebhookDeliveries",
        summary="Deliveries of a webhook, newest first",
    )
    @uses_database
    def list_deliveries(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
        status: FromQuery[WebhookDeliveryStatus | None] = None,
        event_type: Annotated[str | None, Parameter(max_length=100)] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[WebhookDeliveryOut]:
        """Each delivery with its status, attempts (status code, error, duration) and body;
        filter by ``status`` (e.g. ``dead``) and ``event_type``."""
        limit = check_limit(limit)
        sub = services.get_visible(session, _caller(request, access), webhook_id)
        rows = services.deliveries(
            session,
            sub,
            status=status.value if status else None,
            event_type=event_type,
            after=decode_cursor(cursor) if cursor else None,
            limit=limit,
        )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
        return Page(items=[WebhookDeliveryOut.of(r) for r in page], next_cursor=next_cursor)

    @get(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}",
        operation_id="getWebhookDelivery",
        summary="One webhook delivery",
    )
    @uses_database
    def get_delivery(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> WebhookDeliveryOut:
        """A delivery with its attempts and body."""
        sub = services.get_visible(session, _caller(request, access), webhook_id)
        return WebhookDeliveryOut.of(services.get_delivery(session, sub, delivery_id))

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/replay",
        operation_id="replayWebhookDelivery",
        summary="Send a delivery again",
        status_code=202,
    )
    @uses_database
    def replay(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        webhook_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> WebhookDeliveryOut:
        """Queue the delivery again (any state but ``sending``): same ``webhook-id`` and body,
        a new timestamp and signature, a fresh budget of attempts."""
        caller = _caller(request, access)
        sub = services.get_visible(session, caller, webhook_id)
        row = services.replay(
            session, caller, sub, services.get_delivery(session, sub, delivery_id)
        )
        session.commit()
        return WebhookDeliveryOut.of(row)


@get(
    "/api/v1/webhook-event-types",
    operation_id="listWebhookEventTypes",
    summary="Event types one can subscribe to",
    tags=["webhooks"],
)
async def event_types() -> list[EventTypeOut]:
    """Every event type, with what it means (``*`` in a subscription means all of them)."""
    return [EventTypeOut(name=n, description=d) for n, d in EVENT_TYPES.items()]


ROUTES = [WebhookController, event_types]
