"""HTTP API of the delivery log, dead letters and notification templates (tenant admins)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, paginate
from core.api.problems import Problem
from core.auth.guards import Access
from core.auth.principal import Principal
from core.notifications import services
from core.notifications.delivery import retry_delivery
from core.notifications.models import Delivery, DeliveryStatus
from core.notifications.schemas import DeliveryOut, TemplateIn, TemplateOut


def actor_label(principal: Principal) -> str:
    """``person:<subject>`` or ``client:<client id>``: who did it, for the records."""
    if principal.kind == "person":
        return f"person:{principal.subject}"
    return f"client:{principal.client_id or principal.subject}"


class DeliveryController(Controller):
    """The delivery log of the caller's tenant: every attempt, dead letters, retries.

    Tenant administrators only (``notifications:admin`` for the whole tenant). Recipients are
    masked. Another tenant's delivery id answers 404.
    """

    path = "/api/v1/deliveries"
    tags = ["notifications"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listDeliveries", summary="List deliveries")
    @uses_database
    def list_deliveries(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        status: FromQuery[DeliveryStatus | None] = None,
        event_type: FromQuery[str | None] = None,
        channel: FromQuery[str | None] = None,
        outbox_id: FromQuery[uuid.UUID | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> Page[DeliveryOut]:
        """Deliveries, oldest first; ``status=dead`` lists the dead letters."""
        services.require_tenant_admin(session, access)
        stmt = services.deliveries_query(
            status=status.value if status else None,
            event_type=event_type,
            channel=channel,
            outbox_id=outbox_id,
        )
        return paginate(
            session, stmt, Delivery.id, cursor=cursor, limit=limit, to_item=DeliveryOut.of
        )

    @get(
        "/{delivery_id:uuid}",
        operation_id="getDelivery",
        summary="One delivery",
    )
    @uses_database
    def get_delivery(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryOut:
        """A delivery by id."""
        services.require_tenant_admin(session, access)
        return DeliveryOut.of(services.get_delivery(session, delivery_id))

    @post(
        "/{delivery_id:uuid}/retry",
        operation_id="retryDelivery",
        summary="Send a dead or failed delivery again",
        status_code=HTTP_202_ACCEPTED,
    )
    @uses_database
    def retry(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryOut:
        """Queue the delivery again with a fresh attempt budget (202: the worker sends it)."""
        services.require_tenant_admin(session, access)
        row = services.get_delivery(session, delivery_id)
        try:
            retry_delivery(session, row, actor=actor_label(request.user))
        except ValueError as exc:
            raise Problem(409, str(exc), slug="not-retryable", status_value=row.status) from exc
        session.commit()
        return DeliveryOut.of(row)


class TemplateController(Controller):
    """The tenant's notification templates (overrides of the built-in wording)."""

    path = "/api/v1/notification-templates"
    tags = ["notifications"]
    dependencies = API_DEPENDENCIES

    @get(
        "/",
        operation_id="listNotificationTemplates",
        summary="List template overrides",
    )
    @uses_database
    def list_templates(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> list[TemplateOut]:
        """Every override of the tenant."""
        services.require_tenant_admin(session, access)
        return [TemplateOut.of(t) for t in services.list_templates(session)]

    @put(
        "/",
        operation_id="putNotificationTemplate",
        summary="Set a template override",
    )
    @uses_database
    def put_template(
        self,
        request: Request[Principal, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[TemplateIn],
    ) -> TemplateOut:
        """Create or replace the override for (event, language, channel); it is compiled and
        test-rendered first (422 naming the error)."""
        services.require_tenant_admin(session, access)
        row = services.put_template(
            session,
            event_type=data.event_type,
            language=data.language,
            channel=data.channel,
            subject=data.subject,
            body=data.body,
            actor=actor_label(request.user),
        )
        session.commit()
        return TemplateOut.of(row)

    @delete(
        "/{template_id:uuid}",
        operation_id="deleteNotificationTemplate",
        summary="Remove a template override",
        status_code=HTTP_204_NO_CONTENT,
    )
    @uses_database
    def delete_template(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        template_id: FromPath[uuid.UUID],
    ) -> None:
        """The built-in wording applies again."""
        services.require_tenant_admin(session, access)
        services.delete_template(session, template_id)
        session.commit()


ROUTES = [DeliveryController, TemplateController]
