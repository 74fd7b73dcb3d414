"""Data access of the delivery log and the template overrides (keyword-only functions)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.api.problems import Problem, not_found
from core.db import utcnow
from core.notifications.models import Delivery, DeliveryStatus, NotificationTemplate
from core.notifications.templates import Renderer, TemplateRenderError, TemplateText
from core.orgs.models import OrgUnit

ADMIN_PERMISSION = "notifications:admin"


def require_tenant_admin(session: Session, access: object) -> None:
    """Refuse (403) unless the caller holds ``notifications:admin`` at the tenant's top unit.

    The delivery log and the metrics cover the whole tenant, so a permission held only for
    a branch is not enough.
    """
    from core.auth.guards import Access

    assert isinstance(access, Access)
    access.require_anywhere(ADMIN_PERMISSION)
    roots = session.scalars(select(OrgUnit.path).where(OrgUnit.parent_id.is_(None))).all()
    if not roots or not all(access.can(ADMIN_PERMISSION, path) for path in roots):
        raise Problem(
            403,
            f"the delivery log needs {ADMIN_PERMISSION!r} for the whole tenant",
            slug="forbidden",
            permission=ADMIN_PERMISSION,
        )


def deliveries_query(
    *,
    status: str | None = None,
    event_type: str | None = None,
    channel: str | None = None,
    outbox_id: uuid.UUID | None = None,
) -> Select[Delivery]:
    """The delivery log, filtered (the tenant filter comes from the session)."""
    stmt = select(Delivery)
    if status:
        stmt = stmt.where(Delivery.status == status)
    if event_type:
        stmt = stmt.where(Delivery.event_type == event_type)
    if channel:
        stmt = stmt.where(Delivery.channel == channel)
    if outbox_id:
        stmt = stmt.where(Delivery.outbox_id == outbox_id)
    return stmt


def get_delivery(session: Session, delivery_id: uuid.UUID) -> Delivery:
    """A delivery of the session's tenant; 404 otherwise (also for another tenant's id)."""
    row = session.get(Delivery, (session.info["tenant_id"], delivery_id))
    if row is None:
        raise not_found("delivery", delivery_id)
    return row


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries of the session's scope by status (every status present, zero if none)."""
    counts = dict(
        session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    )
    return {s.value: int(counts.get(s.value, 0)) for s in DeliveryStatus}


def list_templates(session: Session) -> Sequence[NotificationTemplate]:
    """The tenant's template overrides."""
    return session.scalars(
        select(NotificationTemplate).order_by(
            NotificationTemplate.event_type,
            NotificationTemplate.language,
            NotificationTemplate.channel,
        )
    ).all()


def check_template(subject: str, body: str, renderer: Renderer | None = None) -> None:
    """Compile and test-render a template with an empty context; 422 naming the error."""
    renderer = renderer or Renderer()
    try:
        renderer.render(TemplateText(subject, body), {"recipient": {}, "case": {}, "clock": {}})
    except TemplateRenderError as exc:
        raise Problem(422, str(exc), slug="invalid-template") from exc


def put_template(
    session: Session,
    *,
    event_type: str,
    language: str,
    channel: str,
    subject: str,
    body: str,
    actor: str,
) -> NotificationTemplate:
    """Create or replace the tenant's template for (event, language, channel)."""
    check_template(subject, body)
    row = session.scalars(
        select(NotificationTemplate).where(
            NotificationTemplate.event_type == event_type,
            NotificationTemplate.language == language,
            NotificationTemplate.channel == channel,
        )
    ).one_or_none()
    if row is None:
        row = NotificationTemplate(event_type=event_type, language=language, channel=channel)
        session.add(row)
    row.subject, row.body, row.updated_by, row.changed_at = subject, body, actor, utcnow()
    session.flush()
    return row


def delete_template(session: Session, template_id: uuid.UUID) -> None:
    """Remove an override (the built-in wording applies again); 404 if there is none."""
    row = session.get(NotificationTemplate, (session.info["tenant_id"], template_id))
    if row is None:
        raise not_found("template", template_id)
    session.delete(row)
    session.flush()
