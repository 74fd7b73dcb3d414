"""The per-tenant cache: no database round trip while nothing changed, and a change is seen on
the next request in this process and in other processes, without a restart.

A second :class:`Database` (its own engine and pool) with its own :class:`PluginHost` stands for
another process: on PostgreSQL it learns about changes through LISTEN/NOTIFY, on SQLite by
comparing the tenant's revision once its entry is older than ``recheck_seconds``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from core.db import Database
from core.orgs.services import get_unit
from core.plugins import host as host_module
from core.plugins import services
from core.plugins.host import PluginHost
from core.plugins.registry import PluginRegistry
from core.settings import Settings
from tests.factories import TenantWorld, make_tenant

ADMIN = services.Actor("person:admin")


@contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    """Collect the SQL statements ``db``'s application engine runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def set_days(db: Database, world: TenantWorld, registry: PluginRegistry, days: int) -> None:
    """Set the agency plugin's complaint days at the group (enabling it)."""
    with db.tenant_transaction(world.id) as s:
        services.apply_config(
            s,
            registry,
            plugin="agency_policy",
            unit=get_unit(s, world.units["group"].id),
            enabled=True,
            settings={"complaint_decision_days": days},
            actor=ADMIN,
        )


def days_at(host: PluginHost, world: TenantWorld, key: str = "bj") -> Any:
    """The agency plugin's complaint days at a unit, as the host resolves them."""
    tp = host.for_unit(world.id, world.units[key].path)
    return tp.settings.get("agency_policy", {}).get("complaint_decision_days")


@pytest.fixture
def second_db(settings: Settings) -> Iterator[Database]:
    """Another connection pool to the same database: another process, for the cache."""
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    yield db
    db.dispose()


def test_no_database_round_trip_while_nothing_changed(
    database: Database,
    registry: PluginRegistry,
    make_host: Callable[..., PluginHost],
    world: TenantWorld,
) -> None:
    host = make_host(registry)
    host.for_unit(world.id, world.units["bj"].path)  # warm
    with count_statements(database) as statements:
        for _ in range(200):
            for key in ("group", "company", "bj", "sh"):
                host.for_unit(world.id, world.units[key].path)
            host.config(world.id)
    assert statements == []


def test_a_change_is_seen_by_the_next_request_in_this_process(
    database: Database, registry: PluginRegistry, make_host: Callable[..., PluginHost]
) -> None:
    host = make_host(registry, recheck_seconds=3600)  # only the commit hook can explain it
    world = make_tenant(database, "next")
    assert days_at(host, world) is None
    set_days(database, world, registry, 9)
    assert days_at(host, world) == 9
    set_days(database, world, registry, 6)
    assert days_at(host, world) == 6
    assert days_at(host, world, "sh") == 6


def test_a_change_is_seen_by_another_process_without_restart(
    database: Database,
    second_db: Database,
    registry: PluginRegistry,
    make_host: Callable[..., PluginHost],
) -> None:
    world = make_tenant(database, "xproc")
    # PostgreSQL: no recheck at all, only the notification can tell it
    other = make_host(
        registry, db=second_db, recheck_seconds=None if second_db.is_postgres else 0.2
    )
    assert days_at(other, world) is None
    with count_statements(second_db) as idle:
        for _ in range(50):
            days_at(other, world)
    assert idle == []  # cached, nothing changed

    set_days(database, world, registry, 8)  # through the first "process"
    deadline = time.monotonic() + 10
    while days_at(other, world) != 8:
        assert time.monotonic() < deadline, "the other process never saw the change"
        time.sleep(0.05)
    if second_db.is_postgres:
        assert other.listening  # it was the notification, not a recheck
        assert other.stats["rechecks"] == 0


@pytest.mark.postgres_only
def test_without_its_listener_a_postgres_host_checks_the_revision_every_time(
    database: Database,
    second_db: Database,
    registry: PluginRegistry,
    make_host: Callable[..., PluginHost],
) -> None:
    assert database.is_postgres  # LISTEN/NOTIFY is PostgreSQL's
    world = make_tenant(database, "nolisten")
    other = make_host(registry, db=second_db, listen=True)
    assert other.listening
    other._stop.set()  # the listener goes away (connection lost, say)
    assert other._thread is not None
    other._thread.join(timeout=5)
    assert not other.listening
    days_at(other, world)
    set_days(database, world, registry, 7)
    assert days_at(other, world) == 7  # seen at once: the revision was compared
    assert other.stats["rechecks"] >= 1


def test_a_load_racing_with_a_change_is_not_kept(
    database: Database,
    registry: PluginRegistry,
    make_host: Callable[..., PluginHost],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = make_host(registry, recheck_seconds=3600)
    world = make_tenant(database, "race")
    real = host_module.load_tenant_config

    def load_then_change(session: Any, tenant_id: uuid.UUID) -> Any:
        config = real(session, tenant_id)
        host.invalidate(tenant_id)  # a change committed while we were reading
        return config

    monkeypatch.setattr(host_module, "load_tenant_config", load_then_change)
    host.for_unit(world.id, world.units["bj"].path)
    monkeypatch.setattr(host_module, "load_tenant_config", real)
    loads = host.stats["loads"]
    host.for_unit(world.id, world.units["bj"].path)
    assert host.stats["loads"] == loads + 1  # the racing result was not cached
    host.for_unit(world.id, world.units["bj"].path)
    assert host.stats["loads"] == loads + 1
