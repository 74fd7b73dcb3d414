"""The issue-7 migrations move existing clear data under encryption in place: case free text,
timeline reasons and notice bodies (0003), OAuth signing keys (0002); and back on downgrade."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.auth.keys import KeyStore, ensure_signing_key
from core.cases.models import Case, CaseEvent, CaseType, Channel, event_parts, split_texts
from core.db import Database
from core.migrate import downgrade, upgrade
from tests.conftest import PostgresDatabases
from tests.factories import make_tenant

DESCRIPTION = "客户王芳，手机13811112222，住院诊断为糖尿病并发症"
DECISION = "同意赔付，王芳的银行卡6222020200112233445"
NOTICE = "已短信告知王芳补充病历"
REASON = "王芳要求延期：需调取住院病历"
CLEAR = ("13811112222", "糖尿病", "6222020200112233445", "补充病历", "调取住院病历")


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(owner URL, application URL) of a new empty database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data.db'}"
        yield url, url
    else:
        dbs: PostgresDatabases = request.getfixturevalue("pg_databases")
        yield dbs.create()


def _dump(db: Database, table: str) -> str:
    with db.admin_engine.connect() as conn:
        if db.is_postgres:
            conn.execute(text("SET row_security = off"))
        rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
    return " ".join(str(v) for row in rows for v in row.values())


def test_existing_case_texts_and_signing_keys_are_sealed_in_place(
    urls: tuple[str, str],
) -> None:
    admin, app = urls
    upgrade(admin, app if app != admin else None)
    db = Database(app, admin)
    try:
        ensure_signing_key(db)
        world = make_tenant(db, "mig")
        with db.tenant_transaction(world.id) as s:
            case = Case(
                number="TS-MIG-1",
                type=CaseType.COMPLAINT,
                channel=Channel.HOTLINE,
                subject="王芳投诉",
                description=DESCRIPTION,
                decision=DECISION,
                unit_id=world.units["bj"].id,
                received_at=dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC),
                created_by="system:test",
            )
            s.add(case)
            s.flush()
            before, after, data, texts = split_texts(
                {},
                {"decision": DECISION, "state": "decided"},
                {"channel": "sms", "content": NOTICE},
            )
            event = CaseEvent(
                case_id=case.id, seq=1, kind="notice", actor="system:test",
                before=before, after=after, data=data,
            )  # fmt: skip
            event.reason, event.texts = REASON, texts
            s.add(event)
            case_id = case.id
        sealed_cases, sealed_events = _dump(db, "cases"), _dump(db, "case_events")
        assert not any(v in sealed_cases + sealed_events for v in CLEAR)

        downgrade(admin, "0001")  # back to clear columns, decrypted
        db.dispose()
        with db.admin_engine.connect() as conn:
            if db.is_postgres:
                conn.execute(text("SET row_security = off"))
            row = conn.execute(
                text("SELECT description, decision FROM cases WHERE number = 'TS-MIG-1'")
            ).one()
            assert tuple(row) == (DESCRIPTION, DECISION)
            reason, data = conn.execute(
                text("SELECT reason, data FROM case_events WHERE actor = 'system:test'")
            ).one()
            assert reason == REASON and NOTICE in str(
                json.loads(data) if isinstance(data, str) else data
            )
        assert "-----BEGIN" in _dump(db, "signing_keys")

        upgrade(admin, app if app != admin else None)  # existing rows encrypted in place
        db.dispose()
        assert not any(v in _dump(db, "cases") + _dump(db, "case_events") for v in CLEAR)
        assert "-----BEGIN" not in _dump(db, "signing_keys")
        with db.tenant_session(world.id) as s:
            case = s.get_one(Case, (world.id, case_id))
            assert (case.description, case.decision, case.subject) == (
                DESCRIPTION,
                DECISION,
                "王芳投诉",
            )
            (event,) = s.query(CaseEvent).filter(CaseEvent.case_id == case_id).all()
            parts: Any = event_parts(event)
            assert event.reason == REASON
            assert parts[1] == {"decision": DECISION, "state": "decided"}
            assert parts[2] == {"channel": "sms", "content": NOTICE}
        assert KeyStore(db).signing_key().kid
    finally:
        db.dispose()


def test_the_downgrade_below_0005_refuses_while_attachment_files_are_encrypted(
    urls: tuple[str, str],
) -> None:
    """Without ``case_attachments.key_version`` nothing would say a stored file is encrypted
    and downloads would serve ciphertext: the downgrade refuses, and the rows keep it."""
    from core.cases.models import Attachment

    admin, app = urls
    upgrade(admin, app if app != admin else None)
    db = Database(app, admin)
    try:
        world = make_tenant(db, "mig-att")
        with db.tenant_transaction(world.id) as s:
            row = Attachment(
                case_id=world.cases["bj"].id,
                filename="病历.pdf",
                media_type="application/pdf",
                size=10,
                sha256="0" * 64,
                storage_key=f"{world.id}/{world.cases['bj'].id}/x",
                uploaded_by="system:test",
                key_version=1,
            )
            s.add(row)
            s.flush()
            attachment_id = row.id
        db.dispose()
        with pytest.raises(RuntimeError, match="1 attachment files are encrypted"):
            downgrade(admin, "0004")
        with db.tenant_session(world.id) as s:
            assert s.get_one(Attachment, (world.id, attachment_id)).key_version == 1
    finally:
        db.dispose()
