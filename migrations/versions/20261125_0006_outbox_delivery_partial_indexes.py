"""outbox and delivery log: partial status indexes instead of full ones

Every status change of an outbox row (pending -> dispatched -> done) or a delivery (sending ->
sent) is a non-HOT update (the status is indexed), which adds an entry to every index of the
table. The full status indexes held an entry for every row in every status, although the
queries that use them look only for open rows (the relay: pending rows by ``available_at``;
the stale-dispatch sweep: dispatched rows by ``dispatched_at``; the dead-letter and problem
listings: deliveries that are not sent). Partial indexes take only those rows:

* ``outbox``: ``ix_outbox_pending`` (available_at) WHERE status = 'pending' and
  ``ix_outbox_dispatched`` (dispatched_at) WHERE status = 'dispatched' replace
  ``ix_outbox_status_available`` and ``ix_outbox_tenant_status_available``;
* ``deliveries``: ``ix_deliveries_tenant_unsent`` (tenant_id, status, id) WHERE status <> 'sent'
  replaces ``ix_deliveries_tenant_status`` and ``ix_deliveries_status``.

Index entries written per notification: outbox 12 -> 8, deliveries 8 -> 5. Counting rows by
status (metrics) and listing sent deliveries read the primary key's range of the tenant
instead. The worker's reads by id now have only the primary key to choose among the indexes
that lead with ``tenant_id`` besides the dedupe key's (the planner took the tenant-and-status
index and scanned all of a tenant's rows while a fresh backlog had no statistics yet).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")
_DISPATCHED = sa.text("status = 'dispatched'")
_UNSENT = sa.text("status <> 'sent'")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_available")
        batch_op.drop_index("ix_outbox_tenant_status_available")
        batch_op.create_index(
            "ix_outbox_pending",
            ["available_at"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )
        batch_op.create_index(
            "ix_outbox_dispatched",
            ["dispatched_at"],
            unique=False,
            postgresql_where=_DISPATCHED,
            sqlite_where=_DISPATCHED,
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_tenant_status")
        batch_op.drop_index("ix_deliveries_status")
        batch_op.create_index(
            "ix_deliveries_tenant_unsent",
            ["tenant_id", "status", "id"],
            unique=False,
            postgresql_where=_UNSENT,
            sqlite_where=_UNSENT,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_deliveries_tenant_unsent", postgresql_where=_UNSENT, sqlite_where=_UNSENT
        )
        batch_op.create_index("ix_deliveries_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_deliveries_tenant_status", ["tenant_id", "status", "id"], unique=False
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_dispatched", postgresql_where=_DISPATCHED, sqlite_where=_DISPATCHED
        )
        batch_op.drop_index("ix_outbox_pending", postgresql_where=_PENDING, sqlite_where=_PENDING)
        batch_op.create_index(
            "ix_outbox_status_available", ["status", "available_at"], unique=False
        )
        batch_op.create_index(
            "ix_outbox_tenant_status_available",
            ["tenant_id", "status", "available_at"],
            unique=False,
        )
