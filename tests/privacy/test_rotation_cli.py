"""Rotation from the command line and from the scheduler job, while rows keep being read."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select
from typer.testing import CliRunner

from core.cli import build_cli
from core.customers.models import Customer, CustomerKind
from core.db import Database, utcnow
from core.privacy.jobs import reencrypt_sweep, tenants_to_reencrypt
from core.scheduler.jobs import JobContext
from core.settings import Settings
from tests.factories import TenantWorld, make_tenant


def _env(settings: Settings) -> dict[str, str]:
    return {
        "INSURDESK_DATABASE_URL": settings.effective_database_url,
        "INSURDESK_ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        "INSURDESK_VAR_DIR": str(settings.var_dir),
    }


def _phones(database: Database, world: TenantWorld) -> dict[str, int]:
    with database.tenant_session(world.id) as s:
        return {c.phone or "": c.key_version for c in s.scalars(select(Customer))}


def test_rotate_keys_command_reencrypts_and_erases_the_old_key(
    database: Database, settings: Settings
) -> None:
    world = make_tenant(database, "rot-cli")
    runner, env = CliRunner(), _env(settings)
    result = runner.invoke(
        build_cli(),
        ["privacy", "rotate-keys", "--tenant", world.tenant.slug, "--batch", "1"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "data key v1 retired, v2 active" in result.output
    assert "erased: data v1" in result.output
    assert set(_phones(database, world).values()) == {2}
    listed = runner.invoke(
        build_cli(), ["privacy", "keys", "--tenant", world.tenant.slug, "--json"], env=env
    )
    keys = {(k["purpose"], k["version"]): k["status"] for k in json.loads(listed.output)["keys"]}
    assert keys == {("data", 1): "destroyed", ("data", 2): "active", ("index", 1): "active"}
    audit = runner.invoke(
        build_cli(), ["audit", "tail", "--tenant", world.tenant.slug], env=env
    ).output
    assert "privacy.key_rotated" in audit and "privacy.key_destroyed" in audit


def test_the_scheduler_job_finishes_a_rotation_left_to_it(
    database: Database, settings: Settings
) -> None:
    world = make_tenant(database, "rot-job")
    with database.tenant_transaction(world.id) as s:
        for i in range(5):
            s.add(
                Customer(
                    kind=CustomerKind.PROSPECT,
                    name=f"客户{i}",
                    phone=f"1380000{i:04d}",
                    unit_id=world.units["sh"].id,
                )
            )
    result = CliRunner().invoke(
        build_cli(),
        ["privacy", "rotate-keys", "--tenant", world.tenant.slug, "--no-reencrypt"],
        env=_env(settings),
    )
    assert result.exit_code == 0, result.output
    assert world.id in tenants_to_reencrypt(database)
    before = _phones(database, world)
    assert set(before.values()) == {1}
    now = utcnow()
    reencrypt_sweep(JobContext(database, settings, now - dt.timedelta(minutes=1), now))
    after = _phones(database, world)
    assert after.keys() == before.keys() and set(after.values()) == {2}
    assert world.id not in tenants_to_reencrypt(database)


def test_index_key_rotation_and_rewrap_from_the_command_line(
    database: Database, settings: Settings
) -> None:
    world = make_tenant(database, "rot-idx")
    runner, env = CliRunner(), _env(settings)
    rotated = runner.invoke(
        build_cli(), ["privacy", "rotate-keys", "--tenant", world.tenant.slug, "--index"], env=env
    )
    assert rotated.exit_code == 0, rotated.output
    assert "index key v1 retired, v2 active" in rotated.output
    assert "erased: index v1" in rotated.output
    with database.tenant_session(world.id) as s:
        assert {c.index_version for c in s.scalars(select(Customer))} == {2}
    rewrapped = runner.invoke(build_cli(), ["privacy", "rewrap"], env=env)
    assert rewrapped.exit_code == 0, rewrapped.output
    assert "left on older master keys: 0" in rewrapped.output


def test_the_job_encrypts_legacy_attachment_files_and_rotation_covers_them(
    database: Database, settings: Settings
) -> None:
    """A file stored in clear before encryption (key_version NULL) is served, counted by
    ``privacy keys``, encrypted by the privacy_reencrypt job; ``rotate-keys`` re-encrypts it
    and only then erases the old key."""
    import hashlib
    import uuid

    from core.cases.models import Attachment, Case, CaseType, Channel
    from core.cases.storage import storage_for
    from core.db import new_id
    from core.privacy.files import read_attachment

    record = "赵敏的病历（旧文件，明文存放）\n".encode() * 30
    world = make_tenant(database, "rot-att")
    store = storage_for(settings)  # the store the job and the commands use
    attachment_id = new_id()
    with database.tenant_transaction(world.id) as s:
        case = Case(
            number=f"C-{uuid.uuid4().hex[:6]}",
            type=CaseType.CONSULTATION,
            channel=Channel.HOTLINE,
            subject="咨询",
            unit_id=world.units["bj"].id,
            received_at=utcnow(),
        )
        s.add(case)
        s.flush()
        key = f"{world.id}/{case.id}/{attachment_id}"
        store.put(key, record)
        s.add(
            Attachment(
                id=attachment_id,
                case_id=case.id,
                filename="病历.txt",
                media_type="text/plain",
                size=len(record),
                sha256=hashlib.sha256(record).hexdigest(),
                storage_key=key,
                uploaded_by="person:agent_bj",
            )
        )

    def row() -> tuple[Attachment, bytes]:
        with database.tenant_session(world.id) as s:
            found = s.get_one(Attachment, (world.id, attachment_id))
            plain = read_attachment(s, store, found)
            s.expunge(found)
            return found, plain

    runner, env = CliRunner(), _env(settings)
    listed = runner.invoke(
        build_cli(), ["privacy", "keys", "--tenant", world.tenant.slug, "--json"], env=env
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["pending_rows"]["case_attachments"] == 1
    legacy, plain = row()
    assert legacy.key_version is None and plain == record  # served in clear meanwhile
    assert world.id in tenants_to_reencrypt(database)

    now = utcnow()
    reencrypt_sweep(JobContext(database, settings, now - dt.timedelta(minutes=1), now))
    encrypted, plain = row()
    assert encrypted.key_version == 1 and encrypted.storage_key == f"{key}.k1"
    assert plain == record
    with store.open(encrypted.storage_key) as stream:
        assert record not in stream.read()
    assert key not in {o.key for o in store.iter_objects(f"{world.id}/")}  # the clear one
    assert world.id not in tenants_to_reencrypt(database)

    result = runner.invoke(
        build_cli(), ["privacy", "rotate-keys", "--tenant", world.tenant.slug], env=env
    )
    assert result.exit_code == 0, result.output
    assert "1 attachment files re-encrypted" in result.output
    assert "erased: data v1" in result.output
    rotated, plain = row()
    assert rotated.key_version == 2 and plain == record
    assert {o.key for o in store.iter_objects(f"{world.id}/")} == {rotated.storage_key}
