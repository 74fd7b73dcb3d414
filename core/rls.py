"""PostgreSQL row-level security for tenant-owned tables, used by the migrations.

Each tenant-owned table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` and one policy,
``tenant_isolation``, comparing ``tenant_id`` with ``current_setting('app.tenant_id')``,
which every tenant transaction sets with ``set_config(..., true)`` (``SET LOCAL``). A
connection that never set it sees no rows at all. SQLite ignores all of this.
"""

from __future__ import annotations

from collections.abc import Iterable

from alembic import op

TENANT_SETTING = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"


def enable_tenant_rls(tables: Iterable[str]) -> None:
    """Turn RLS on for ``tables`` (PostgreSQL only; a no-op on SQLite)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY tenant_isolation ON "{table}" '
            f"USING (tenant_id = {TENANT_SETTING}) WITH CHECK (tenant_id = {TENANT_SETTING})"
        )


def disable_tenant_rls(tables: Iterable[str]) -> None:
    """Undo :func:`enable_tenant_rls` (downgrades)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        op.execute(f'DROP POLICY IF EXISTS tenant_isolation ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
