"""The audit chain: appends in order, verification, and tampering found by ``insurdesk audit
verify`` (edited, deleted in the middle, deleted at the end), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from core.audit import AuditActor, record
from core.audit.chain import entry_hash
from core.audit.models import AuditEntry, AuditHead, AuditLogAppendOnlyError
from core.audit.services import verify
from core.cli import build_cli
from core.db import Base, Database
from core.settings import Settings
from tests.factories import TenantWorld, make_tenant

ACTOR = AuditActor("person", "person:admin")
LOG = Base.metadata.tables["audit_log"]


@pytest.fixture()
def world(database: Database) -> TenantWorld:
    """A fresh tenant per test (tampering must not leak into other tests)."""
    return make_tenant(database, "audit")


def _append(database: Database, world: TenantWorld, n: int) -> list[int]:
    seqs = []
    with database.tenant_transaction(world.id) as s:
        for i in range(n):
            entry = record(
                s, action="test.action", actor=ACTOR, target=("thing", i), details={"i": i}
            )
            seqs.append(entry.seq)
    return seqs


def _env(settings: Settings) -> dict[str, str]:
    return {
        "INSURDESK_DATABASE_URL": settings.effective_database_url,
        "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        "INSURDESK_VAR_DIR": str(settings.var_dir),
    }


def _cli_verify(settings: Settings, world: TenantWorld) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        build_cli(),
        ["audit", "verify", "--tenant", world.tenant.slug, "--json"],
        env=_env(settings),
    )
    return result.exit_code, json.loads(result.output)


def test_entries_are_numbered_and_chained(database: Database, world: TenantWorld) -> None:
    _append(database, world, 3)
    with database.tenant_session(world.id) as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        head = s.scalars(select(AuditHead)).one()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    for prev, cur in itertools.pairwise(rows):
        assert cur.prev_hash == prev.hash
    assert all(entry_hash(r) == r.hash for r in rows)
    assert (head.seq, head.hash) == (rows[-1].seq, rows[-1].hash)
    assert rows[-1].details == {"i": 2} and rows[-1].target_type == "thing"


def test_the_orm_refuses_to_change_or_delete_an_entry(
    database: Database, world: TenantWorld
) -> None:
    _append(database, world, 1)
    with database.tenant_session(world.id) as s:
        entry = s.scalars(select(AuditEntry)).first()
        assert entry is not None
        entry.action = "forged"
        with pytest.raises(AuditLogAppendOnlyError):
            s.flush()
        s.rollback()
        entry = s.scalars(select(AuditEntry)).first()
        s.delete(entry)
        with pytest.raises(AuditLogAppendOnlyError):
            s.flush()


@pytest.mark.parametrize(
    "details",
    [
        {"client": {"client_secret": "s3cret"}},
        {"User_PASSWORD": "x"},
        {"headers": [{"Authorization": "Bearer x"}]},
        {"private_key_pem": "x"},
        {"access_token": "x"},
        {"refresh_token": "x"},
        {"pkce": {"code_verifier": "x"}},
    ],
)
def test_secrets_are_refused_in_details(
    database: Database, world: TenantWorld, details: dict[str, object]
) -> None:
    with database.tenant_session(world.id) as s, pytest.raises(ValueError, match="secret"):
        record(s, action="x", actor=ACTOR, details=details)


def test_an_intact_chain_verifies(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    _append(database, world, 5)
    with database.tenant_session(world.id) as s:
        result = verify(s)
    assert result.ok and result.checked >= 5
    code, out = _cli_verify(settings, world)
    assert code == 0 and out["ok"] is True


def test_an_edited_entry_is_named(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    seqs = _append(database, world, 5)
    target = seqs[2]
    with database.platform_transaction() as s:  # the owner, straight into the table
        s.execute(
            update(LOG)
            .where(LOG.c.tenant_id == world.id, LOG.c.seq == target)
            .values(details={"i": 999})
        )
    code, out = _cli_verify(settings, world)
    assert code == 1
    broken = out["first_broken"]
    assert broken["seq"] == target and broken["reason"] == "edited"


def test_an_edited_and_rehashed_entry_breaks_the_next_link(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    seqs = _append(database, world, 4)
    target = seqs[1]
    with database.platform_transaction() as s:
        entry = s.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == world.id, AuditEntry.seq == target)
        ).one()
        forged = dict(entry.details, i=-1)
        s.expunge(entry)
        entry.details = forged
        s.execute(
            update(LOG)
            .where(LOG.c.tenant_id == world.id, LOG.c.seq == target)
            .values(details=forged, hash=entry_hash(entry))
        )
    code, out = _cli_verify(settings, world)
    assert code == 1
    assert out["first_broken"] == {
        "seq": target + 1,
        "entry_id": out["first_broken"]["entry_id"],
        "reason": "relinked",
        "detail": f"entry {target + 1} does not chain to entry {target} (that entry was "
        "changed or removed)",
    }


def test_a_deleted_entry_is_named(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    seqs = _append(database, world, 5)
    target = seqs[1]
    with database.platform_transaction() as s:
        s.execute(delete(LOG).where(LOG.c.tenant_id == world.id, LOG.c.seq == target))
    result = CliRunner().invoke(
        build_cli(), ["audit", "verify", "--tenant", world.tenant.slug], env=_env(settings)
    )
    assert result.exit_code == 1
    assert f"BROKEN at entry {target} (missing)" in result.output


def test_entries_deleted_at_the_end_are_found_through_the_head(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    seqs = _append(database, world, 3)
    with database.platform_transaction() as s:
        s.execute(delete(LOG).where(LOG.c.tenant_id == world.id, LOG.c.seq >= seqs[1]))
    code, out = _cli_verify(settings, world)
    assert code == 1
    assert out["first_broken"]["seq"] == seqs[1]
    assert out["first_broken"]["reason"] == "truncated"


def test_tampering_in_one_tenant_leaves_another_intact(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    other = make_tenant(database, "audit-other")
    _append(database, world, 2)
    _append(database, other, 2)
    with database.platform_transaction() as s:
        s.execute(update(LOG).where(LOG.c.tenant_id == world.id).values(actor="person:mallory"))
    assert _cli_verify(settings, world)[0] == 1
    code, out = _cli_verify(settings, other)
    assert code == 0 and out["ok"] is True


def test_unknown_tenant_exits_2(settings: Settings) -> None:
    result = CliRunner().invoke(
        build_cli(),
        ["audit", "verify", "--tenant", f"nope-{uuid.uuid4().hex[:6]}"],
        env=_env(settings),
    )
    assert result.exit_code == 2


def test_a_head_locked_with_another_write_continues_the_chain(
    database: Database, world: TenantWorld
) -> None:
    """lock_head_with (a registration's case-number counter and the audit head in one
    statement on PostgreSQL): the statement's row comes back with the head as it is, the
    entry recorded with that head continues the chain, and the tenant's log still verifies."""
    from core.audit.services import lock_head_with
    from core.cases.services import _counter_statement

    _append(database, world, 2)
    values = []
    for _ in range(2):
        with database.tenant_transaction(world.id) as s:
            stmt = _counter_statement(s.get_bind().dialect.name)
            row, head = lock_head_with(
                s, stmt, {"tenant_id": world.id, "id": uuid.uuid4(), "key": "test:locked"}
            )
            values.append(int(row.value))
            stored = s.scalars(select(AuditHead)).one()
            assert head == (stored.seq, stored.hash)
            entry = record(s, action="test.locked", actor=ACTOR, target=("thing", 9), head=head)
            assert (entry.seq, entry.prev_hash) == (head[0] + 1, head[1])
    assert values == [1, 2]
    with database.tenant_session(world.id) as s:
        result = verify(s)
    assert result.ok and result.checked == result.last_seq == entry.seq
