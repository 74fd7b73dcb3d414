"""token state: NOTIFY insurdesk_auth_state on every change of what a token's check reads

The per-process cache of accepted tokens' state (``core/auth/state_cache.py``, decision 0011)
must learn about every change that could refuse a token or change its caller's permissions,
whoever makes it (the API, the CLI, a worker, ``psql``). A row-level trigger on each table the
check reads (``oauth_revoked_tokens``, ``oauth_clients``, ``people``, ``role_assignments``,
``roles``, ``org_units``), after INSERT, UPDATE or DELETE, runs
``pg_notify('insurdesk_auth_state', <tenant_id>)``. PostgreSQL delivers the notices when the
transaction commits (none if it rolls back) and sends one per tenant per transaction (equal
notices are folded), so a bulk change costs one notice per tenant.

PostgreSQL only: SQLite has no such cache, so nothing is done there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "oauth_revoked_tokens",
    "oauth_clients",
    "people",
    "role_assignments",
    "roles",
    "org_units",
)
"""What the token check reads (``core.auth.state_cache.WATCHED_TABLES`` at this revision)."""
FUNCTION = "insurdesk_notify_auth_state"
TRIGGER = "trg_auth_state_notify"

_CREATE_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('insurdesk_auth_state', OLD.tenant_id::text);
    ELSE
        PERFORM pg_notify('insurdesk_auth_state', NEW.tenant_id::text);
        IF TG_OP = 'UPDATE' AND NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
            PERFORM pg_notify('insurdesk_auth_state', OLD.tenant_id::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgres():
        return
    op.execute(_CREATE_FUNCTION)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
        )


def downgrade() -> None:
    if not _postgres():
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
