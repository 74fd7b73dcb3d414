"""Migration 0007: every committed change of what a token's check reads notifies its tenant;
the downgrade takes the triggers and their function away."""

from __future__ import annotations

import uuid

import psycopg

from core.migrate import downgrade, upgrade
from tests.conftest import PostgresDatabases

TRIGGERS = (
    "SELECT count(*) FROM pg_trigger WHERE tgname = 'trg_auth_state_notify' "
    "UNION ALL SELECT count(*) FROM pg_proc WHERE proname = 'insurdesk_notify_auth_state'"
)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_commits_notify_their_tenant_and_the_downgrade_removes_the_triggers(
    pg_databases: PostgresDatabases,
) -> None:
    admin, app = pg_databases.create()
    upgrade(admin, app)
    tenant = uuid.uuid4()
    with (
        psycopg.connect(_plain(admin), autocommit=True) as listener,
        psycopg.connect(_plain(admin)) as writer,
    ):
        assert [r[0] for r in listener.execute(TRIGGERS)] == [6, 1]
        listener.execute("LISTEN insurdesk_auth_state")
        insert = (
            "INSERT INTO oauth_revoked_tokens (tenant_id, id, jti, expires_at, revoked_at) "
            "VALUES (%s, %s, %s, now(), now())"
        )
        writer.execute(insert, (tenant, uuid.uuid4(), "rolled-back"))
        writer.rollback()
        for jti in ("a", "b"):  # two rows, one transaction: one notice
            writer.execute(insert, (tenant, uuid.uuid4(), jti))
        writer.commit()
        notices = [n.payload for n in listener.notifies(timeout=1.0)]
        assert notices == [str(tenant)]
        writer.execute("DELETE FROM oauth_revoked_tokens WHERE tenant_id = %s", (tenant,))
        writer.commit()
        assert [n.payload for n in listener.notifies(timeout=1.0)] == [str(tenant)]
    downgrade(admin, "0006")
    with psycopg.connect(_plain(admin), autocommit=True) as conn:
        assert [r[0] for r in conn.execute(TRIGGERS)] == [0, 0]
