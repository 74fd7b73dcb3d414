"""attachments: the data-key version their stored file is encrypted with (issue 7)

``case_attachments.key_version``: the tenant data-key version of the file's AES-256-GCM
encryption (core.privacy.files); NULL for the files stored before, in clear (0: a row with no
file to encrypt). The files themselves are not touched here (a migration does not reach the
attachment store): downloads serve the clear ones as before, and the ``privacy_reencrypt`` job
(or ``insurdesk privacy reencrypt``) encrypts them in batches.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_attachments") as batch:
        batch.add_column(sa.Column("key_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    # The files stay encrypted in the store; without the column nothing would say so and
    # every download would serve ciphertext. Refuse while any exists.
    from core.privacy.migrating import enter_tenant, tenant_ids

    attachments = sa.table(
        "case_attachments",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("key_version", sa.Integer()),
    )
    conn = op.get_bind()
    encrypted = 0
    for tenant_id in tenant_ids(conn):  # row-level security: one tenant at a time
        enter_tenant(conn, tenant_id)
        encrypted += int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(attachments)
                .where(attachments.c.tenant_id == tenant_id, attachments.c.key_version > 0)
            )
            or 0
        )
    if encrypted:
        raise RuntimeError(
            f"{encrypted} attachment files are encrypted: a downgrade below 0005 would serve "
            "them as ciphertext"
        )
    with op.batch_alter_table("case_attachments") as batch:
        batch.drop_column("key_version")
