"""signing keys: the private halves wrapped by the platform master key (issue 7)

Existing keys are wrapped in place with the key manager of the environment (the same
``INSURDESK_MASTER_KEY`` every process of the deployment uses); the clear PEM column goes.
The downgrade unwraps them back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_keys = sa.table(
    "signing_keys",
    sa.column("id", sa.Uuid()),
    sa.column("kid", sa.String()),
    sa.column("private_pem", sa.Text()),
    sa.column("private_wrapped", sa.Text()),
    sa.column("master_key_id", sa.String()),
)


def _manager():  # type: ignore[no-untyped-def]
    from core.privacy.keys import default_key_manager

    return context.config.attributes.get("key_manager") or default_key_manager()


def upgrade() -> None:
    from core.auth.keys import wrap_private_key

    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("private_wrapped", sa.Text(), nullable=True))
        batch.add_column(sa.Column("master_key_id", sa.String(length=100), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_keys.c.id, _keys.c.kid, _keys.c.private_pem)).all()
    if rows:
        manager = _manager()
        for row in rows:
            wrapped, key_id = wrap_private_key(manager, row.kid, row.private_pem.encode("ascii"))
            conn.execute(
                _keys.update()
                .where(_keys.c.id == row.id)
                .values(private_wrapped=wrapped, master_key_id=key_id)
            )
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("private_wrapped", existing_type=sa.Text(), nullable=False)
        batch.alter_column("master_key_id", existing_type=sa.String(length=100), nullable=False)
        batch.drop_column("private_pem")


def downgrade() -> None:
    import base64

    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("private_pem", sa.Text(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_keys.c.id, _keys.c.kid, _keys.c.private_wrapped, _keys.c.master_key_id)
    ).all()
    if rows:
        manager = _manager()
        for row in rows:
            pem = manager.unwrap(
                row.master_key_id,
                base64.b64decode(row.private_wrapped),
                context=f"insurdesk:signing-key:{row.kid}".encode(),
            )
            conn.execute(
                _keys.update().where(_keys.c.id == row.id).values(private_pem=pem.decode("ascii"))
            )
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("private_pem", existing_type=sa.Text(), nullable=False)
        batch.drop_column("master_key_id")
        batch.drop_column("private_wrapped")
