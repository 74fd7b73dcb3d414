"""On PostgreSQL the application role may read and append audit entries, never change them."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from core.audit import AuditActor, record
from core.db import Database
from core.migrate import APPEND_ONLY_TABLES
from tests.factories import make_tenant


def test_audit_log_is_append_only_for_the_application_role(pg_database: Database) -> None:
    assert "audit_log" in APPEND_ONLY_TABLES
    world = make_tenant(pg_database, "grants")
    with pg_database.tenant_transaction(world.id) as s:
        entry = record(s, action="test.grant", actor=AuditActor("person", "person:admin"))
    with pg_database.tenant_transaction(world.id) as s:  # the application role, under RLS
        assert s.execute(text("SELECT count(*) FROM audit_log")).scalar_one() >= 1
        privileges = s.execute(
            text(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_name = 'audit_log' AND grantee = current_user"
            )
        ).scalars()
        assert set(privileges) == {"SELECT", "INSERT"}
    for statement in (
        "UPDATE audit_log SET action = 'forged' WHERE seq = :seq",
        "DELETE FROM audit_log WHERE seq = :seq",
        "TRUNCATE audit_log",
    ):
        with (
            pg_database.tenant_transaction(world.id) as s,
            pytest.raises(ProgrammingError, match="permission denied"),
        ):
            s.execute(text(statement), {"seq": entry.seq})
