"""Attachment files encrypted at rest (issue 7) on both stores (a local directory, moto's S3
server): the store holds no plaintext, a download gives back exactly what was uploaded, a file
moved to another attachment or tenant does not decrypt, a legacy file in clear is served and
then encrypted by the re-encryption, a key rotation re-encrypts the files before the old key
is erased, and a deletion scheduled for after the commit loses nothing on a rollback."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.audit import AuditActor
from core.auth.guards import load_access
from core.auth.principal import Principal
from core.cases import flows, services
from core.cases.flows import CaseContext, make_context
from core.cases.models import Attachment
from core.cases.storage import (
    AttachmentStorage,
    LocalStorage,
    delete_after_commit,
    doomed_keys,
    storage_for,
)
from core.db import Database, new_id
from core.people.permissions import ALL_PERMISSIONS
from core.plugins.host import PluginHost
from core.privacy import files
from core.privacy.crypto import keyring_of
from core.privacy.files import FileIntegrityError, read_attachment
from core.privacy.models import TenantKey
from core.privacy.rotation import pending_rows, reencrypt_all, rotate
from core.settings import Settings
from tests.cases.conftest import complaint
from tests.cases.http import Api, person_token, problem
from tests.conftest import LiveServer
from tests.factories import TenantWorld, make_tenant
from tests.s3server import S3Server

ACTOR = AuditActor.system("test_attachments")
RECORD = "病历：客户赵敏，身份证 110105194912310021，诊断为肺炎，住院十天。\n".encode() * 40
"""A medical record, as a customer would send it (text/plain)."""
PDF = b"%PDF-1.7\n" + "赵敏 理赔申请书 13711112222".encode() + bytes(range(256)) * 8


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server) -> AttachmentStorage:
    """Each backend in turn: a local directory, then a fresh bucket on the S3 server."""
    if request.param == "local":
        return LocalStorage(tmp_path / "attachments")
    return s3_server.store()


Acting = Callable[[TenantWorld], AbstractContextManager[CaseContext]]


@pytest.fixture
def acting_in(database: Database, host: PluginHost, store: AttachmentStorage) -> Acting:
    """``with acting_in(world) as ctx``: the world's agent_bj in one transaction."""

    @contextmanager
    def _acting(w: TenantWorld) -> Iterator[CaseContext]:
        person = w.people["agent_bj"]
        with database.tenant_transaction(w.id) as s:
            principal = Principal(
                tenant_id=w.id,
                subject=str(person.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=person.id,
            )
            yield make_context(s, load_access(s, principal), plugins=host, storage=store)

    return _acting


def _attach(
    ctx: CaseContext, case_id: uuid.UUID, data: bytes = RECORD, media_type: str = "text/plain"
) -> Attachment:
    case = services.get_case(ctx.session, case_id)
    return flows.add_attachment(
        ctx,
        case,
        filename="病历.txt",
        media_type=media_type,
        data=data,
        purpose="material",
        expected_sha256=hashlib.sha256(data).hexdigest(),
    )


def _raw(store: AttachmentStorage, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def _keys(store: AttachmentStorage, w: TenantWorld) -> set[str]:
    return {o.key for o in store.iter_objects(f"{w.id}/")}


def _row(database: Database, w: TenantWorld, attachment_id: uuid.UUID) -> Attachment:
    with database.tenant_session(w.id) as s:
        row = s.get_one(Attachment, (w.id, attachment_id))
        s.expunge(row)
        return row


def _read(database: Database, store: AttachmentStorage, w: TenantWorld, a_id: uuid.UUID) -> bytes:
    with database.tenant_session(w.id) as s:
        return read_attachment(s, store, s.get_one(Attachment, (w.id, a_id)))


def _legacy(
    database: Database, store: AttachmentStorage, w: TenantWorld, case_id: uuid.UUID
) -> uuid.UUID:
    """An attachment stored before encryption: the row without a key version, the file in
    clear (as the platform kept them until migration 0005)."""
    attachment_id = new_id()
    key = f"{w.id}/{case_id}/{attachment_id}"
    store.put(key, RECORD)
    with database.tenant_transaction(w.id) as s:
        s.add(
            Attachment(
                id=attachment_id,
                case_id=case_id,
                filename="旧病历.txt",
                media_type="text/plain",
                size=len(RECORD),
                sha256=hashlib.sha256(RECORD).hexdigest(),
                storage_key=key,
                uploaded_by="person:agent_bj",
            )
        )
    return attachment_id


def test_attachment_files_are_encrypted_at_rest_and_read_back_as_uploaded(
    acting_in: Acting, database: Database, world: TenantWorld, store: AttachmentStorage
) -> None:
    with acting_in(world) as ctx:
        case_id = flows.register_case(ctx, complaint(world)).id
    with acting_in(world) as ctx:
        text = _attach(ctx, case_id)
        pdf = _attach(ctx, case_id, PDF, "application/pdf")
    for attachment, plain in ((text, RECORD), (pdf, PDF)):
        raw = _raw(store, attachment.storage_key)
        assert plain not in raw
        assert "赵敏".encode() not in raw and b"110105194912310021" not in raw
        assert b"13711112222" not in raw and b"%PDF" not in raw
        assert raw.startswith(files.MAGIC)
        assert len(raw) == len(plain) + files.HEADER_BYTES + 12 + 16  # nonce and tag
        row = _row(database, world, attachment.id)
        with database.tenant_session(world.id) as s:
            active = keyring_of(s).active_version(s, world.id, lock=False)
        assert row.key_version == active
        # The API contract is the plaintext's: size and checksum of what was uploaded.
        assert (row.size, row.sha256) == (len(plain), hashlib.sha256(plain).hexdigest())
        assert _read(database, store, world, attachment.id) == plain


def test_an_attachment_file_moved_to_another_attachment_or_tenant_does_not_decrypt(
    acting_in: Acting,
    database: Database,
    world: TenantWorld,
    other: TenantWorld,
    store: AttachmentStorage,
) -> None:
    made = {}
    for w in (world, other):
        with acting_in(w) as ctx:
            case_id = flows.register_case(ctx, complaint(w)).id
        with acting_in(w) as ctx:
            made[w.id] = (_attach(ctx, case_id), _attach(ctx, case_id, PDF, "application/pdf"))
    mine, same_tenant = made[world.id]
    theirs, _ = made[other.id]
    original = _raw(store, mine.storage_key)

    # Onto another attachment of the same tenant, and onto one of another tenant:
    for target, w in ((same_tenant, world), (theirs, other)):
        kept = _raw(store, target.storage_key)
        store.put(target.storage_key, original)
        with pytest.raises(FileIntegrityError, match="does not decrypt"):
            _read(database, store, w, target.id)
        store.put(target.storage_key, kept)
        assert _read(database, store, w, target.id) in (RECORD, PDF)

    # A byte changed, the header changed, or a clear file where ciphertext belongs:
    flipped = bytearray(original)
    flipped[-1] ^= 1
    for bad in (bytes(flipped), files.MAGIC + (99).to_bytes(4, "big") + original[8:], RECORD):
        store.put(mine.storage_key, bad)
        with pytest.raises(FileIntegrityError):
            _read(database, store, world, mine.id)
    store.put(mine.storage_key, original)
    assert _read(database, store, world, mine.id) == RECORD

    # The checksum is the plaintext's and is checked after decrypting.
    with database.platform_transaction() as s:
        s.execute(
            update(Attachment)
            .where(Attachment.tenant_id == world.id, Attachment.id == mine.id)
            .values(sha256="0" * 64)
        )
    with pytest.raises(FileIntegrityError, match="SHA-256"):
        _read(database, store, world, mine.id)


def test_a_legacy_clear_file_is_served_and_rotation_reencrypts_files_before_erasing_the_key(
    acting_in: Acting, database: Database, store: AttachmentStorage
) -> None:
    w = make_tenant(database, "att-rot")
    with acting_in(w) as ctx:
        case_id = flows.register_case(ctx, complaint(w)).id
    with acting_in(w) as ctx:
        first = _attach(ctx, case_id)
    legacy = _legacy(database, store, w, case_id)
    assert _raw(store, _row(database, w, legacy).storage_key) == RECORD
    assert _read(database, store, w, legacy) == RECORD  # served as it is
    assert _row(database, w, first.id).key_version == 1

    with database.tenant_transaction(w.id) as s:
        assert rotate(s, w.id, actor=ACTOR) == (1, 2)
    with acting_in(w) as ctx:
        second = _attach(ctx, case_id, PDF, "application/pdf")  # the new key at once
    assert _row(database, w, second.id).key_version == 2
    assert _read(database, store, w, first.id) == RECORD  # the old key still decrypts
    with database.tenant_session(w.id) as s:
        assert pending_rows(s, w.id)["case_attachments"] == 2  # v1 and the clear one

    # Without the store the files are left, and so is the key version they use.
    report = reencrypt_all(database, w.id, actor=ACTOR)
    assert report.attachments == 0 and "data:1" not in report.destroyed
    with database.tenant_session(w.id) as s:
        v1 = s.scalars(select(TenantKey).where(TenantKey.purpose == "data", TenantKey.version == 1))
        assert v1.one().wrapped is not None

    before = _keys(store, w)
    report = reencrypt_all(database, w.id, actor=ACTOR, batch=1, storage=store)
    assert report.attachments == 2 and report.attachments_failed == {}
    assert "data:1" in report.destroyed
    rows = {a: _row(database, w, a) for a in (first.id, legacy, second.id)}
    assert {r.key_version for r in rows.values()} == {2}
    assert rows[first.id].storage_key == f"{w.id}/{case_id}/{first.id}.k2"
    assert rows[legacy].storage_key == f"{w.id}/{case_id}/{legacy}.k2"
    assert rows[second.id].storage_key == second.storage_key  # already on v2: untouched
    # The old objects went once their batch committed; every row has its file.
    assert _keys(store, w) == {r.storage_key for r in rows.values()}
    assert not before & {rows[first.id].storage_key, rows[legacy].storage_key}
    assert RECORD not in _raw(store, rows[legacy].storage_key)
    for attachment_id, plain in ((first.id, RECORD), (legacy, RECORD), (second.id, PDF)):
        assert _read(database, store, w, attachment_id) == plain
    with database.tenant_session(w.id) as s:
        assert pending_rows(s, w.id)["case_attachments"] == 0
        key = s.scalars(
            select(TenantKey).where(TenantKey.purpose == "data", TenantKey.version == 1)
        ).one()
        assert key.status == "destroyed" and key.wrapped is None


def test_a_file_deleted_after_commit_survives_a_rollback(
    acting_in: Acting, database: Database, world: TenantWorld, store: AttachmentStorage
) -> None:
    with acting_in(world) as ctx:
        case_id = flows.register_case(ctx, complaint(world)).id
    with acting_in(world) as ctx:
        attachment = _attach(ctx, case_id)
    key = attachment.storage_key
    with pytest.raises(RuntimeError, match="later"), acting_in(world) as ctx:
        delete_after_commit(ctx.session, store, key)
        assert doomed_keys(ctx.session) == [key]
        raise RuntimeError("the transaction fails later")
    assert _raw(store, key)  # the rollback lost nothing
    with acting_in(world) as ctx:
        delete_after_commit(ctx.session, store, key)
        assert _raw(store, key)  # nothing deleted before the commit
    assert key not in _keys(store, world)


# -- over HTTP: the contract unchanged, problems instead of errors ------------------------------


def test_attachment_downloads_decrypt_and_answer_problems_for_bad_files_and_destroyed_keys(
    database: Database, live_server: LiveServer, app_settings: Settings
) -> None:
    w = make_tenant(database, "att-http")
    intruder = make_tenant(database, "att-http-other")
    api = Api(live_server.url, person_token(database, w, live_server.url, "agent_bj"))
    foreign = Api(live_server.url, person_token(database, intruder, live_server.url, "agent_bj"))
    store = storage_for(app_settings)
    try:
        made = api.post(
            "/api/v1/cases",
            {
                "type": "complaint",
                "channel": "letter",
                "subject": "附件加密 / encrypted attachments",
                "unit_id": str(w.units["bj"].id),
                "customer_id": str(w.customers["bj"].id),
            },
        )
        assert made.status_code == 201, made.text
        url = f"/api/v1/cases/{made.json()['case']['id']}/attachments"
        up = [
            api.post(url, files={"file": ("病历.txt", RECORD, "text/plain")}),
            api.post(url, files={"file": ("申请书.pdf", PDF, "application/pdf")}),
        ]
        assert [u.status_code for u in up] == [201, 201], up[0].text
        assert up[0].json()["size"] == len(RECORD)
        assert up[0].json()["sha256"] == hashlib.sha256(RECORD).hexdigest()
        got = api.get(up[0].headers["location"])
        assert got.status_code == 200 and got.content == RECORD
        assert got.headers["content-length"] == str(len(RECORD))
        assert got.headers["etag"] == f'"{hashlib.sha256(RECORD).hexdigest()}"'
        assert got.headers["content-type"].startswith("text/plain")
        rows = [_row(database, w, uuid.UUID(u.json()["id"])) for u in up]
        assert RECORD not in _raw(store, rows[0].storage_key)

        problem(foreign.get(up[0].headers["location"]), 404)  # another tenant: not found

        original = _raw(store, rows[0].storage_key)
        store.put(rows[0].storage_key, _raw(store, rows[1].storage_key))  # another row's file
        bad = problem(api.get(up[0].headers["location"]), 409)
        assert bad["type"] == "/problems/attachment-integrity"
        store.put(rows[0].storage_key, original)
        assert api.get(up[0].headers["location"]).content == RECORD

        with database.platform_transaction() as s:  # the tenant's data key destroyed
            s.execute(
                update(TenantKey)
                .where(TenantKey.tenant_id == w.id, TenantKey.purpose == "data")
                .values(status="destroyed", wrapped=None)
            )
        gone = problem(api.get(up[1].headers["location"]), 410)
        assert gone["type"] == "/problems/attachment-key-destroyed"
    finally:
        api.close()
        foreign.close()


def test_a_file_the_store_does_not_show_keeps_its_key_version_and_the_key(
    acting_in: Acting, database: Database, store: AttachmentStorage
) -> None:
    """A store that does not have a row's file (lost, or the job pointed at the wrong store)
    gets nothing erased: the row stays as it is and so does the key version it names."""
    w = make_tenant(database, "att-missing")
    with acting_in(w) as ctx:
        case_id = flows.register_case(ctx, complaint(w)).id
    with acting_in(w) as ctx:
        attachment = _attach(ctx, case_id)
    with database.tenant_transaction(w.id) as s:
        rotate(s, w.id, actor=ACTOR)
    elsewhere = LocalStorage(Path(str(uuid.uuid4())))  # an empty, wrongly configured store
    report = reencrypt_all(database, w.id, actor=ACTOR, storage=elsewhere)
    assert list(report.attachments_failed) == [str(attachment.id)]
    assert "no stored file" in report.attachments_failed[str(attachment.id)]
    assert report.attachments == 0 and "data:1" not in report.destroyed
    assert _row(database, w, attachment.id).key_version == 1
    assert _read(database, store, w, attachment.id) == RECORD  # v1 still there to read it
    report = reencrypt_all(database, w.id, actor=ACTOR, storage=store)
    assert report.attachments == 1 and "data:1" in report.destroyed
