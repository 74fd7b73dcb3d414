"""data-subject requests: the refusal reason sealed with the note

``privacy_requests.refusal_reason`` (free text about the person's request) joins the note in
``sealed_enc``; existing reasons are encrypted in place and the clear column goes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_requests = sa.table(
    "privacy_requests",
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("sealed_enc", sa.Text()),
    sa.column("key_version", sa.Integer()),
    sa.column("refusal_reason", sa.Text()),
)


def _rows(conn: sa.Connection, tenant_id: object, clause: sa.ColumnElement[bool]) -> list:  # type: ignore[type-arg]
    return list(
        conn.execute(sa.select(_requests).where(_requests.c.tenant_id == tenant_id, clause)).all()
    )


def upgrade() -> None:
    from core.privacy.migrating import TenantSealer, enter_tenant, tenant_ids

    conn = op.get_bind()
    manager = context.config.attributes.get("key_manager")
    for tenant_id in tenant_ids(conn):
        enter_tenant(conn, tenant_id)
        rows = _rows(conn, tenant_id, _requests.c.refusal_reason.isnot(None))
        if not rows:
            continue
        sealer = TenantSealer(conn, tenant_id, manager)
        for row in rows:
            record = (
                sealer.open("privacy_requests", row.id, row.sealed_enc) if row.sealed_enc else {}
            )
            record["refusal_reason"] = row.refusal_reason
            conn.execute(
                _requests.update()
                .where(_requests.c.tenant_id == tenant_id, _requests.c.id == row.id)
                .values(
                    sealed_enc=sealer.seal("privacy_requests", row.id, record),
                    key_version=sealer.active,
                )
            )
    op.drop_column("privacy_requests", "refusal_reason")


def downgrade() -> None:
    from core.privacy.migrating import TenantSealer, enter_tenant, tenant_ids

    op.add_column("privacy_requests", sa.Column("refusal_reason", sa.Text(), nullable=True))
    conn = op.get_bind()
    manager = context.config.attributes.get("key_manager")
    for tenant_id in tenant_ids(conn):
        enter_tenant(conn, tenant_id)
        rows = _rows(conn, tenant_id, _requests.c.sealed_enc.isnot(None))
        if not rows:
            continue
        sealer = TenantSealer(conn, tenant_id, manager)
        for row in rows:
            record = sealer.open("privacy_requests", row.id, row.sealed_enc)
            reason = record.pop("refusal_reason", None)
            if reason is None:
                continue
            rest = {k: v for k, v in record.items() if not k.startswith("#")}
            conn.execute(
                _requests.update()
                .where(_requests.c.tenant_id == tenant_id, _requests.c.id == row.id)
                .values(
                    refusal_reason=reason,
                    sealed_enc=sealer.seal("privacy_requests", row.id, rest) if rest else None,
                    key_version=sealer.active if rest else 0,
                )
            )
