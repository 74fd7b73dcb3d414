"""Rotation of the blind-index key (searches keep finding every row meanwhile) and of the
master key (every stored key re-wrapped by the background job: tenants' data and index keys,
the OAuth signing keys; afterwards the old master key is not needed any more)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.audit import AuditActor
from core.audit.models import AuditEntry
from core.auth.keys import KeyStore, ensure_signing_key
from core.auth.models import SigningKey
from core.customers.flows import fingerprint
from core.customers.models import Customer, CustomerKind
from core.customers.services import indexes_of
from core.db import Database, utcnow
from core.migrate import upgrade
from core.privacy.jobs import reencrypt_sweep, tenants_to_reencrypt
from core.privacy.keys import LocalKeyManager, MasterKeyError, attach
from core.privacy.models import TenantKey
from core.privacy.rotation import pending_rows, reencrypt_all, rotate
from core.scheduler.jobs import JobContext
from tests.conftest import PostgresDatabases
from tests.factories import TenantWorld, make_tenant

ACTOR = AuditActor("platform", "platform:test")


def _customer(database: Database, world: TenantWorld, phone: str) -> uuid.UUID:
    with database.tenant_transaction(world.id) as s:
        c = Customer(
            kind=CustomerKind.POLICYHOLDER,
            name="李娜",
            phone=phone,
            id_number=f"1101051949123{phone[-4:]}X",
            unit_id=world.units["bj"].id,
        )
        s.add(c)
        s.flush()
        return c.id


def _find(database: Database, world: TenantWorld, phone: str) -> set[uuid.UUID]:
    with database.tenant_session(world.id) as s:
        return set(
            s.scalars(
                select(Customer.id).where(Customer.phone_bidx.in_(indexes_of(s, "phone", phone)))
            )
        )


def test_index_key_rotation_keeps_search_working_before_during_and_after(
    database: Database,
) -> None:
    world = make_tenant(database, "idx-rot")
    old_row = _customer(database, world, "13500000001")
    with database.tenant_transaction(world.id) as s:
        old, new = rotate(s, world.id, actor=ACTOR, purpose="index")
    assert new == old + 1
    new_row = _customer(database, world, "13500000002")  # indexed with the new key at once
    with database.tenant_session(world.id) as s:
        assert s.get_one(Customer, (world.id, new_row)).index_version == new
        assert s.get_one(Customer, (world.id, old_row)).index_version == old
        assert pending_rows(s, world.id)["customers"] >= 1
        assert fingerprint(s, "phone", "13500000001").startswith(f"fp{new}:")
    # During the rotation a search compares both versions: both rows are found.
    assert _find(database, world, "135 0000 0001") == {old_row}
    assert _find(database, world, "13500000002") == {new_row}

    report = reencrypt_all(database, world.id, actor=ACTOR, batch=1)
    assert f"index:{old}" in report.destroyed
    with database.tenant_session(world.id) as s:
        assert {c.index_version for c in s.scalars(select(Customer))} == {new}
        key = s.scalars(
            select(TenantKey).where(TenantKey.purpose == "index", TenantKey.version == old)
        ).one()
        assert key.status == "destroyed" and key.wrapped is None
        assert len(indexes_of(s, "phone", "13500000001")) == 1  # only the new key is left
    assert _find(database, world, "13500000001") == {old_row}
    assert _find(database, world, "13500000002") == {new_row}
    with database.tenant_session(world.id) as s:  # and by identity number
        found = s.scalars(
            select(Customer.id).where(
                Customer.id_number_bidx.in_(indexes_of(s, "id_number", "11010519491230001x"))
            )
        ).all()
        assert found == [old_row]


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of the test's own: the master key changes here, not in the shared one."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'master.db'}"
        upgrade(url)
        db = Database(url)
    else:
        dbs: PostgresDatabases = request.getfixturevalue("pg_databases")
        admin, app = dbs.create()
        upgrade(admin, app)
        db = Database(app, admin)
    yield db
    db.dispose()


def test_a_new_master_key_rewraps_every_stored_key_without_reencrypting_data(
    own_database: Database,
) -> None:
    db = own_database
    old_key, new_key = b"o" * 32, b"n" * 32
    attach(db, LocalKeyManager(old_key))
    ensure_signing_key(db)
    world = make_tenant(db, "master")
    customer = _customer(db, world, "13600000001")
    with db.tenant_session(world.id) as s:
        token_before = s.get_one(Customer, (world.id, customer)).personal_enc
    old_id = LocalKeyManager(old_key).key_id

    both = LocalKeyManager([new_key, old_key])  # the new key first: it wraps from now on
    attach(db, both)
    assert both.key_id != old_id and both.key_ids == (both.key_id, old_id)
    assert world.id in tenants_to_reencrypt(db)
    now = utcnow()
    reencrypt_sweep(JobContext(db, None, now - dt.timedelta(minutes=5), now))
    assert world.id not in tenants_to_reencrypt(db)
    with db.platform_session() as s:
        assert {k.master_key_id for k in s.scalars(select(TenantKey))} == {both.key_id}
        assert {k.master_key_id for k in s.scalars(select(SigningKey))} == {both.key_id}
    with db.tenant_session(world.id) as s:
        row = s.get_one(Customer, (world.id, customer))
        assert row.personal_enc == token_before  # the data was not re-encrypted
        actions = set(s.scalars(select(AuditEntry.action)))
    assert "privacy.key_rewrapped" in actions

    attach(db, LocalKeyManager(new_key))  # the old master key removed: everything still reads
    with db.tenant_session(world.id) as s:
        assert s.get_one(Customer, (world.id, customer)).phone == "13600000001"
    assert KeyStore(db).signing_key().kid
    attach(db, LocalKeyManager(old_key))  # ... and the old one alone no longer does
    with db.tenant_session(world.id) as s, pytest.raises(MasterKeyError):
        _ = s.get_one(Customer, (world.id, customer)).phone
    with pytest.raises(MasterKeyError):
        KeyStore(db).signing_key()


def test_signing_keys_are_stored_wrapped(database: Database) -> None:
    ensure_signing_key(database)
    with database.platform_session() as s:
        keys = s.scalars(select(SigningKey)).all()
    assert keys
    for key in keys:
        assert "PRIVATE KEY" not in key.private_wrapped and key.master_key_id.startswith("local:")
    assert KeyStore(database).signing_key().kid in {k.kid for k in keys}
    with database.platform_session() as s:
        raw = s.execute(select(SigningKey.__table__)).mappings().all()
    assert not any("BEGIN" in str(v) for row in raw for v in row.values())
