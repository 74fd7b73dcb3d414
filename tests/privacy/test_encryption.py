"""Personal fields at rest: ciphertext in the tables and the database file, blind-index
search, key rotation with old ciphertext still readable, and no key crossing tenants."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import StatementError

from core.audit import AuditActor
from core.customers.models import Customer, CustomerKind
from core.customers.services import index_of
from core.db import Database
from core.privacy.crypto import DecryptionError, keyring_for, keyring_of
from core.privacy.fields import aad
from core.privacy.keys import LocalKeyManager, MasterKeyError, key_manager_for
from core.privacy.models import TenantKey
from core.privacy.rotation import (
    pending_rows,
    reencrypt_all,
    reencrypt_batch,
    rotate,
)
from core.settings import Settings, load_settings
from tests.factories import TenantWorld, make_tenant

ACTOR = AuditActor("platform", "platform:test")
PERSON = {
    "name": "张伟",
    "id_number": "11010519491231002X",
    "phone": "13912345678",
    "email": "zhang.wei@example.com",
    "address": "北京市朝阳区建国路88号",
    "bank_account": "6222020200112233445",
}


@pytest.fixture()
def world(database: Database) -> TenantWorld:
    """A fresh tenant (rotation changes its keys)."""
    return make_tenant(database, "crypt")


def _add(database: Database, world: TenantWorld, n: int = 1, **fields: str) -> list[uuid.UUID]:
    ids = []
    with database.tenant_transaction(world.id) as s:
        for i in range(n):
            values = {**PERSON, **fields}
            if n > 1:
                values["phone"] = f"1390000{i:04d}"
            c = Customer(kind=CustomerKind.POLICYHOLDER, unit_id=world.units["bj"].id, **values)
            s.add(c)
            s.flush()
            ids.append(c.id)
    return ids


def test_raw_sql_sees_only_ciphertext(database: Database, world: TenantWorld) -> None:
    (cid,) = _add(database, world)
    with database.platform_session() as s:
        row = (
            s.execute(
                text("SELECT * FROM customers WHERE id = :id"),
                {"id": cid if database.is_postgres else cid.hex},
            )
            .mappings()
            .one()
        )
    stored = " ".join(str(v) for v in row.values())
    for value in PERSON.values():
        assert value not in stored
    assert str(row["personal_enc"]).startswith("v1:")
    assert "name" not in row and "phone" not in row  # no clear columns at all
    with database.tenant_session(world.id) as s:
        customer = s.get_one(Customer, (world.id, cid))
        assert {k: getattr(customer, k) for k in PERSON} == PERSON


@pytest.mark.sqlite_only
def test_the_sqlite_file_holds_no_personal_data(
    database: Database, settings: Settings, world: TenantWorld
) -> None:
    _add(database, world, phone="13987654321", name="欧阳娜娜")
    with database.engine.connect() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(FULL)"))
    path = Path(settings.effective_database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"13987654321" not in raw
    assert "欧阳娜娜".encode() not in raw
    assert PERSON["id_number"].encode() not in raw


def test_clear_values_never_reach_a_ciphertext_column(
    database: Database, world: TenantWorld
) -> None:
    (cid,) = _add(database, world)
    with database.tenant_session(world.id) as s, pytest.raises(StatementError, match="unencrypt"):
        forged = '{"phone": "13800000000"}'
        s.execute(update(Customer).where(Customer.id == cid).values(personal_enc=forged))
    with pytest.raises(TypeError, match="encrypted"):
        select(Customer).where(Customer.phone == "13800000000")  # type: ignore[arg-type]


def test_search_by_phone_and_id_number_through_the_blind_index(
    database: Database, world: TenantWorld
) -> None:
    (cid,) = _add(database, world, phone="13911112222", id_number="11010519491231002x")
    with database.tenant_session(world.id) as s:
        for phone in ("13911112222", "139 1111 2222", "139-1111-2222"):
            found = s.scalars(
                select(Customer.id).where(Customer.phone_bidx == index_of(s, "phone", phone))
            ).all()
            assert found == [cid]
        by_id = s.scalars(
            select(Customer.id).where(
                Customer.id_number_bidx == index_of(s, "id_number", "11010519491231002X")
            )
        ).all()
        assert by_id == [cid]
        assert not s.scalars(
            select(Customer.id).where(Customer.phone_bidx == index_of(s, "phone", "13911112223"))
        ).all()
    # The index is keyed per tenant: the same phone in another tenant indexes differently.
    other = make_tenant(database, "crypt-other")
    with database.tenant_session(world.id) as s:
        mine = index_of(s, "phone", "13911112222")
    with database.tenant_session(other.id) as s:
        assert index_of(s, "phone", "13911112222") != mine


def test_rotation_reencrypts_every_row_while_old_ciphertext_still_decrypts(
    database: Database, world: TenantWorld
) -> None:
    ids = _add(database, world, 7)
    with database.tenant_transaction(world.id) as s:
        old, new = rotate(s, world.id, actor=ACTOR)
    assert new == old + 1
    with database.tenant_transaction(world.id) as s:
        # Nothing re-encrypted yet: old rows still read, new writes use the new key.
        rows = s.scalars(select(Customer).where(Customer.id.in_(ids))).all()
        assert {r.key_version for r in rows} == {old}
        assert sorted(r.phone or "" for r in rows) == [f"1390000{i:04d}" for i in range(7)]
        s.add(Customer(kind=CustomerKind.PROSPECT, name="新客户", unit_id=world.units["bj"].id))
        phone = rows[0].phone
        rows[0].email = "changed@example.com"
        s.flush()  # the whole row moves to the new key, not only the changed field
        assert rows[0].key_version == new and rows[0].phone == phone
        token = rows[0].personal_enc
        assert token is not None and token.startswith(f"v1:{new}:")
    with database.tenant_session(world.id) as s:
        before = sum(pending_rows(s, world.id).values())
    with database.tenant_transaction(world.id) as s:  # one batch of 3, in the middle
        assert reencrypt_batch(s, world.id, batch=3) == 3
    with database.tenant_session(world.id) as s:
        assert sum(pending_rows(s, world.id).values()) == before - 3
        assert all(
            r.name == PERSON["name"]
            for r in s.scalars(select(Customer).where(Customer.id.in_(ids)))
        )
    report = reencrypt_all(database, world.id, actor=ACTOR, batch=2)
    assert report.reencrypted >= 3 and report.destroyed == [f"data:{old}"]
    with database.tenant_session(world.id) as s:
        assert set(pending_rows(s, world.id).values()) == {0}
        rows = s.scalars(select(Customer)).all()
        assert {r.key_version for r in rows} == {new}
        assert sorted(r.phone or "" for r in rows if r.id in ids) == [
            f"1390000{i:04d}" for i in range(7)
        ]
        key = s.scalars(
            select(TenantKey).where(TenantKey.purpose == "data", TenantKey.version == old)
        ).one()
        assert key.status == "destroyed" and key.wrapped is None


def test_tenant_a_key_cannot_decrypt_tenant_b_rows(database: Database) -> None:
    a, b = make_tenant(database, "crypt-a"), make_tenant(database, "crypt-b")
    (a_id,) = _add(database, a)
    (b_id,) = _add(database, b, phone="13700000001")
    with database.platform_session() as s:
        b_row = s.get_one(Customer, (b.id, b_id))
        b_token = b_row.personal_enc
        assert b_token is not None
        keyring = keyring_of(s)
        # B's ciphertext, opened with A's key (as if it were A's row), fails.
        with pytest.raises(DecryptionError):
            keyring.open(s, a.id, b_token, f"{a.id}|customers|{a_id}".encode())
        # ... and with B's own bound data too: A's key is another key.
        with pytest.raises(DecryptionError):
            keyring.open(s, a.id, b_token, aad(b_row))
    # Copied into A's row at the database, it does not decrypt there either.
    with database.platform_transaction() as s:
        s.execute(
            update(Customer)
            .where(Customer.tenant_id == a.id, Customer.id == a_id)
            .values(personal_enc=b_token)
        )
    with database.tenant_session(a.id) as s, pytest.raises(DecryptionError):
        _ = s.get_one(Customer, (a.id, a_id)).phone
    with database.tenant_session(b.id) as s:
        assert s.get_one(Customer, (b.id, b_id)).phone == "13700000001"


def test_data_keys_are_stored_wrapped_and_need_the_master_key(
    database: Database, world: TenantWorld
) -> None:
    _add(database, world)
    with database.tenant_session(world.id) as s:
        keys = s.scalars(select(TenantKey)).all()
        assert {(k.purpose, k.status) for k in keys} >= {("data", "active"), ("index", "active")}
        key = next(k for k in keys if k.purpose == "data")
        stranger = keyring_for(LocalKeyManager(b"\x01" * 32))
        with pytest.raises(MasterKeyError):
            stranger.cipher(s, world.id, key.version)


def test_master_key_from_environment_file_or_generated(tmp_path: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    from_env = key_manager_for(load_settings(environ={"INSURDESK_MASTER_KEY": key}))
    file = tmp_path / "secret" / "master"
    file.parent.mkdir()
    file.write_text(key + "\n")
    from_file = key_manager_for(
        load_settings(environ={"INSURDESK_MASTER_KEY_FILE": str(file)}, var_dir=tmp_path)
    )
    assert from_env.key_id == from_file.key_id
    generated = key_manager_for(load_settings(environ={}, var_dir=tmp_path / "var"))
    assert generated.key_id != from_env.key_id
    made = tmp_path / "var" / "master.key"
    assert made.exists() and made.stat().st_mode & 0o777 == 0o600
    again = key_manager_for(load_settings(environ={}, var_dir=tmp_path / "var"))
    assert again.key_id == generated.key_id
    bad = key_manager_for(load_settings(environ={"INSURDESK_MASTER_KEY": "short"}))
    with pytest.raises(MasterKeyError, match=r"base64|32 bytes"):
        _ = bad.key_id
    assert "master_key=" not in repr(load_settings(environ={"INSURDESK_MASTER_KEY": key}))
