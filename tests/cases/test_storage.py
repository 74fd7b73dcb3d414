"""Attachment stores: the local directory and an S3-compatible object store (a real server,
moto's, in its own process), chosen by settings; no file outlives a transaction that did not
commit; the sweeper deletes the leftovers of a process that died before its commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.app import create_app
from core.auth.guards import load_access
from core.auth.principal import Principal
from core.cases import flows, services
from core.cases.flows import CaseContext, make_context
from core.cases.models import Attachment, CaseView
from core.cases.storage import (
    AttachmentStorage,
    LocalStorage,
    S3Storage,
    StorageError,
    pending_keys,
    storage_for,
    sweep_orphans,
)
from core.db import Database, utcnow
from core.people.permissions import ALL_PERMISSIONS
from core.plugins.host import PluginHost
from core.privacy.files import read_attachment
from core.settings import Settings, load_settings
from tests.cases.conftest import complaint
from tests.cases.http import person_token
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.s3server import S3Server

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 16


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server) -> AttachmentStorage:
    """Each backend in turn: a local directory, then a fresh bucket on the S3 server."""
    if request.param == "local":
        return LocalStorage(tmp_path / "attachments")
    return s3_server.store()


ActingWith = Callable[[], AbstractContextManager[CaseContext]]


@pytest.fixture
def acting_with(
    database: Database, host: PluginHost, world: TenantWorld, store: AttachmentStorage
) -> ActingWith:
    """``with acting_with() as ctx``: agent_bj in one transaction, attachments in ``store``."""

    @contextmanager
    def _acting() -> Iterator[CaseContext]:
        person = world.people["agent_bj"]
        with database.tenant_transaction(world.id) as s:
            principal = Principal(
                tenant_id=world.id,
                subject=str(person.id),
                kind="person",
                scopes=ALL_PERMISSIONS,
                person_id=person.id,
            )
            yield make_context(s, load_access(s, principal), plugins=host, storage=store)

    return _acting


def _stored(store: AttachmentStorage) -> dict[str, bytes]:
    out = {}
    for obj in store.iter_objects():
        with store.open(obj.key) as stream:
            out[obj.key] = stream.read()
    return out


def _new_case(acting_with: ActingWith, world: TenantWorld) -> uuid.UUID:
    with acting_with() as ctx:
        return flows.register_case(ctx, complaint(world)).id


def _attach(ctx: CaseContext, case_id: uuid.UUID, data: bytes = PDF) -> Attachment:
    case = services.get_case(ctx.session, case_id)
    return flows.add_attachment(
        ctx,
        case,
        filename="决定书.pdf",
        media_type="application/pdf",
        data=data,
        purpose="decision",
        expected_sha256=hashlib.sha256(data).hexdigest(),
    )


def _rows(database: Database, world: TenantWorld, case_id: uuid.UUID) -> int:
    with database.tenant_session(world.id) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(Attachment).where(Attachment.case_id == case_id)
            )
            or 0
        )


# -- the interface, on both backends ----------------------------------------------------------


def test_a_store_keeps_reads_lists_and_deletes(store: AttachmentStorage) -> None:
    store.put("t1/c1/a1", b"first")
    store.put("t1/c1/a2", PDF)
    store.put("t2/c9/a3", b"other tenant")
    store.put("t1/c1/a1", b"replaced")  # a put replaces the whole object
    with store.open("t1/c1/a1") as stream:
        assert stream.read() == b"replaced"
    assert _stored(store) == {"t1/c1/a1": b"replaced", "t1/c1/a2": PDF, "t2/c9/a3": b"other tenant"}
    listed = list(store.iter_objects("t1/"))
    assert [(o.key, o.size) for o in listed] == [("t1/c1/a1", 8), ("t1/c1/a2", len(PDF))]
    assert all(abs(o.modified - utcnow()) < dt.timedelta(minutes=5) for o in listed)
    store.delete("t1/c1/a1")
    store.delete("t1/c1/a1")  # deleting a missing key is not an error
    with pytest.raises(StorageError):
        store.open("t1/c1/a1")
    for bad in ("", "../etc/passwd", "t1//a", "t1/./a", "t1\\a"):
        with pytest.raises(StorageError):
            store.put(bad, b"x")


def test_the_s3_store_is_chosen_by_settings(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    settings = load_settings(s3_server.settings_env(bucket), var_dir=tmp_path)
    store = storage_for(settings)
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix) == (bucket, "attachments/")
    assert storage_for(settings) is store  # one client per settings, not per request
    store.put("t/c/a", b"via settings")
    raw = s3_server.client().get_object(Bucket=bucket, Key="attachments/t/c/a")
    assert raw["Body"].read() == b"via settings"
    assert isinstance(storage_for(load_settings({}, var_dir=tmp_path)), LocalStorage)
    with pytest.raises(ValueError, match="INSURDESK_S3_BUCKET"):
        load_settings({"INSURDESK_ATTACHMENT_STORAGE": "s3"})
    with pytest.raises(ValueError, match="INSURDESK_ATTACHMENT_STORAGE"):
        load_settings({"INSURDESK_ATTACHMENT_STORAGE": "ftp"})


def test_attachments_over_http_on_the_s3_store(
    s3_server: S3Server,
    app_settings: Settings,
    database: Database,
    world: TenantWorld,
    live_server: LiveServer,
) -> None:
    """The whole API path with the S3 backend: limits and checksum as on the local store."""
    bucket = s3_server.new_bucket()
    env = s3_server.settings_env(bucket)
    settings = replace(
        app_settings,
        broker_url="redis://127.0.0.1:1/0",  # no embedded worker in this second app
        attachment_storage="s3",
        s3_bucket=bucket,
        s3_prefix=env["INSURDESK_S3_PREFIX"],
        s3_endpoint_url=env["INSURDESK_S3_ENDPOINT_URL"],
        s3_region=env["INSURDESK_S3_REGION"],
        s3_access_key_id=env["INSURDESK_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=env["INSURDESK_S3_SECRET_ACCESS_KEY"],
    )
    token = person_token(database, world, live_server.url, "agent_bj")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, database), base_url=app_settings.issuer) as client:
        made = client.post(
            "/api/v1/cases",
            headers=auth,
            json={
                "type": "complaint",
                "channel": "letter",
                "subject": "附件存储 / stored on S3",
                "unit_id": str(world.units["bj"].id),
            },
        )
        assert made.status_code == 201, made.text
        url = f"/api/v1/cases/{made.json()['case']['id']}/attachments"
        ok = client.post(url, headers=auth, files={"file": ("信函.pdf", PDF, "application/pdf")})
        assert ok.status_code == 201, ok.text
        key = ok.json()["id"]
        objects = list(s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
        assert len(objects) == 1 and objects[0]["Key"].endswith(key)
        assert objects[0]["Key"].startswith(f"attachments/{world.id}/")
        raw = s3_server.client().get_object(Bucket=bucket, Key=objects[0]["Key"])["Body"].read()
        assert PDF not in raw and len(raw) > len(PDF)  # encrypted at rest
        got = client.get(ok.headers["location"], headers=auth)
        assert got.status_code == 200 and got.content == PDF
        assert got.headers["etag"] == f'"{hashlib.sha256(PDF).hexdigest()}"'
        refused = [
            client.post(url, headers=auth, files={"file": ("a.exe", b"MZ\x90", "application/x-x")}),
            client.post(
                url, headers=auth, files={"file": ("a.pdf", b"not a pdf", "application/pdf")}
            ),
            client.post(
                url,
                headers=auth,
                files={"file": ("a.pdf", PDF, "application/pdf")},
                data={"sha256": "0" * 64},
            ),
            client.post(
                url,
                headers=auth,
                files={
                    "file": ("big.pdf", b"%PDF-" + b"0" * (20 * 1024 * 1024), "application/pdf")
                },
            ),
        ]
        assert [r.status_code for r in refused] == [415, 415, 422, 413]
        for answer in refused:
            assert answer.headers["content-type"].startswith("application/problem+json")
        assert len(s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]) == 1
        s3_server.client().delete_object(Bucket=bucket, Key=objects[0]["Key"])
        gone = client.get(ok.headers["location"], headers=auth)
        assert gone.status_code == 410 and gone.json()["type"] == "/problems/attachment-gone"


# -- no file outlives its transaction -----------------------------------------------------------


def test_an_attachment_of_a_rolled_back_transaction_leaves_no_file(
    acting_with: ActingWith,
    world: TenantWorld,
    database: Database,
    store: AttachmentStorage,
) -> None:
    case_id = _new_case(acting_with, world)
    before = _stored(store)

    # 1. the flow fails after the file was stored (any error before the commit)
    with pytest.raises(RuntimeError, match="after the upload"), acting_with() as ctx:
        attachment = _attach(ctx, case_id)
        assert pending_keys(ctx.session) == [attachment.storage_key]
        assert attachment.storage_key in _stored(store)  # stored before the commit...
        raise RuntimeError("something failed after the upload")
    assert _stored(store) == before  # ...and deleted by the rollback
    assert _rows(database, world, case_id) == 0

    # 2. the commit itself fails (a constraint violated at the final flush)
    person = world.people["agent_bj"]
    with pytest.raises(IntegrityError), acting_with() as ctx:
        _attach(ctx, case_id)
        for _ in range(2):
            ctx.session.add(CaseView(person_id=person.id, name=f"dup-{case_id}", filters={}))
    assert _stored(store) == before
    assert _rows(database, world, case_id) == 0

    # 3. a commit keeps the file (encrypted), whose plaintext has the checksum the row records
    with acting_with() as ctx:
        kept = _attach(ctx, case_id)
    stored = _stored(store)
    assert set(stored) - set(before) == {kept.storage_key}
    assert PDF not in stored[kept.storage_key]
    with database.tenant_session(world.id) as s:
        plain = read_attachment(s, store, s.get_one(Attachment, (world.id, kept.id)))
    assert hashlib.sha256(plain).hexdigest() == kept.sha256 and plain == PDF
    assert _rows(database, world, case_id) == 1


def test_the_sweeper_deletes_only_old_files_without_a_row(
    acting_with: ActingWith,
    world: TenantWorld,
    database: Database,
    store: AttachmentStorage,
) -> None:
    case_id = _new_case(acting_with, world)
    with acting_with() as ctx:
        kept = _attach(ctx, case_id)
    # A process that died between the upload and its commit left this one behind:
    orphan = f"{world.id}/{case_id}/{uuid.uuid4()}"
    store.put(orphan, PDF)

    now = utcnow()
    young = sweep_orphans(database, store, now=now)  # within the grace period: kept
    assert young.deleted == [] and young.kept_recent >= 2
    assert orphan in _stored(store)

    later = sweep_orphans(database, store, now=now + dt.timedelta(hours=2), batch=1)
    assert later.deleted == [orphan]
    assert set(_stored(store)) == {kept.storage_key}
    with acting_with() as ctx:
        case = services.get_case(ctx.session, case_id)
        assert [a.id for a in services.attachments_of(ctx.session, case.id)] == [kept.id]
