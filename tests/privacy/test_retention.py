"""Retention: rows past their period are destroyed (anonymized) in batches with a destruction
record; held ones (legal hold, open case, review window) are not; notes of old requests are
erased; statutory minimums for former customers (保险法 第八十七条)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy import select, update

from core.audit import AuditActor
from core.audit.models import AuditEntry
from core.cases.models import Case, CaseType, Channel
from core.customers.models import Customer, CustomerKind, LineOfBusiness, Policy
from core.db import Database, utcnow
from core.privacy.jobs import retention_sweep
from core.privacy.models import DataSubjectRequest, DestructionRecord, LegalHold
from core.privacy.retention import backlog, run_retention
from core.scheduler.jobs import JobContext
from core.settings import Settings
from tests.api.conftest import TokenFor, auth
from tests.factories import TenantWorld, make_tenant

ACTOR = AuditActor.system("test_retention")
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _customer(s: object, world: TenantWorld, name: str, kind: CustomerKind) -> Customer:
    c = Customer(kind=kind, name=name, phone="13500000000", unit_id=world.units["bj"].id)
    s.add(c)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return c


def _age(database: Database, world: TenantWorld, ids: list[uuid.UUID]) -> None:
    with database.platform_transaction() as s:
        s.execute(
            update(Customer.__table__)  # type: ignore[arg-type]
            .where(Customer.__table__.c.tenant_id == world.id, Customer.__table__.c.id.in_(ids))
            .values(updated_at=LONG_AGO, created_at=LONG_AGO)
        )


def _world(database: Database) -> tuple[TenantWorld, dict[str, uuid.UUID]]:
    world = make_tenant(database, "ret")
    ids: dict[str, uuid.UUID] = {}
    with database.tenant_transaction(world.id) as s:
        for i in range(5):
            ids[f"prospect{i}"] = _customer(s, world, f"潜客{i}", CustomerKind.PROSPECT).id
        ids["recent"] = _customer(s, world, "新潜客", CustomerKind.PROSPECT).id
        ids["held"] = _customer(s, world, "争议潜客", CustomerKind.PROSPECT).id
        ids["open_case"] = _customer(s, world, "在办潜客", CustomerKind.PROSPECT).id
        short = _customer(s, world, "短险客户", CustomerKind.POLICYHOLDER)
        long = _customer(s, world, "长险客户", CustomerKind.POLICYHOLDER)
        ids["short"], ids["long"] = short.id, long.id
        for customer, term, start in (
            (short, 12, dt.date(2012, 1, 1)),
            (long, 60, dt.date(2012, 1, 1)),
        ):
            s.add(
                Policy(
                    number=f"P-{uuid.uuid4().hex[:8]}",
                    product_code="X",
                    product_name="险",
                    line_of_business=LineOfBusiness.ACCIDENT,
                    term_months=term,
                    start_date=start,
                    unit_id=world.units["bj"].id,
                    policyholder_id=customer.id,
                )
            )
        s.add(
            LegalHold(
                customer_id=ids["held"],
                reason="regulator_inquiry",
                reference="监管函〔2026〕12号",
                placed_by="person:admin",
            )
        )
        s.add(
            Case(
                number=f"C-{uuid.uuid4().hex[:6]}",
                type=CaseType.CONSULTATION,
                channel=Channel.HOTLINE,
                subject="咨询",
                unit_id=world.units["bj"].id,
                customer_id=ids["open_case"],
                received_at=LONG_AGO,  # received long ago and still open: held
            )
        )
        request = DataSubjectRequest(
            number=f"DSR-OLD-{uuid.uuid4().hex[:4]}",
            kind="access",
            channel="letter",
            state="completed",
            customer_id=ids["recent"],
            unit_id=world.units["bj"].id,
            received_at=LONG_AGO,
            due_at=LONG_AGO,
            last_day=LONG_AGO.date(),
            working_days=15,
            created_by="test",
            note="旧请求备注",
            completed_at=LONG_AGO,
        )
        s.add(request)
        s.flush()
        ids["request"] = request.id
    _age(database, world, [v for k, v in ids.items() if k not in ("recent", "request")])
    return world, ids


def test_due_rows_are_destroyed_in_batches_with_records_and_held_ones_are_not(
    database: Database,
) -> None:
    world, ids = _world(database)
    with database.tenant_session(world.id) as s:
        before = backlog(s, world.id)
    assert before["prospect"] == {"due": 7, "held": 2}
    assert before["former_customer"] == {"due": 1, "held": 0}  # only the 1-year policy's
    assert before["request_note"] == {"due": 1, "held": 0}
    report = run_retention(database, world.id, actor=ACTOR, batch=2)
    none = {"closed_case_text": 0, "case_attachment": 0, "delivery_recipient": 0}
    assert report.destroyed == {"prospect": 5, "former_customer": 1, "request_note": 1, **none}
    assert report.held == {"prospect": 2, "former_customer": 0, "request_note": 0, **none}
    with database.tenant_session(world.id) as s:
        rows = {c.id: c for c in s.scalars(select(Customer))}
        for i in range(5):
            gone = rows[ids[f"prospect{i}"]]
            assert gone.anonymized_at is not None and gone.phone is None
            assert gone.name.startswith("匿名客户 ANON-")
        assert rows[ids["short"]].anonymized_at is not None
        for kept in ("recent", "held", "open_case", "long"):
            assert rows[ids[kept]].anonymized_at is None, kept
            assert rows[ids[kept]].phone == "13500000000"
        assert s.get_one(DataSubjectRequest, (world.id, ids["request"])).note is None
        records = s.scalars(
            select(DestructionRecord)
            .where(DestructionRecord.run_id == report.run_id)
            .order_by(DestructionRecord.batch)
        ).all()
        assert sum(r.count for r in records if r.data_class == "prospect") == 5
        assert max(r.count for r in records) <= 2  # batches of 2
        assert sum(r.held for r in records if r.data_class == "prospect") == 2
        assert all(r.method == "anonymized" for r in records if r.data_class != "request_note")
        prospect = next(r for r in records if r.data_class == "prospect" and r.count)
        assert prospect.rule == "privacy_cn.prospect_retention_days=730"
        former = next(r for r in records if r.data_class == "former_customer")
        assert former.subject_ids == [str(ids["short"])] and "保险法/87" in former.rule
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.destroyed")).all()
        assert len(audit) == len(records)
        assert backlog(s, world.id) == {
            "prospect": {"due": 2, "held": 2},
            "former_customer": {"due": 0, "held": 0},
            "request_note": {"due": 0, "held": 0},
            "closed_case_text": {"due": 0, "held": 0},
            "case_attachment": {"due": 0, "held": 0},
            "delivery_recipient": {"due": 0, "held": 0},
        }
    again = run_retention(database, world.id, actor=ACTOR)
    assert sum(again.destroyed.values()) == 0


def test_releasing_a_hold_lets_retention_proceed_and_the_job_runs_it(
    database: Database, settings: Settings, api: httpx.Client, person_token: TokenFor
) -> None:
    world, ids = _world(database)
    admin = auth(person_token(world, "admin"))
    holds = api.get(
        "/api/v1/privacy/legal-holds", headers=admin, params={"customer_id": str(ids["held"])}
    ).json()
    assert [h["reason"] for h in holds] == ["regulator_inquiry"]
    released = api.post(f"/api/v1/privacy/legal-holds/{holds[0]['id']}/release", headers=admin)
    assert released.status_code == 200 and released.json()["released_at"]
    backlog_api = api.get("/api/v1/privacy/retention", headers=admin).json()["backlog"]
    assert backlog_api["prospect"] == {"due": 7, "held": 1}
    now = utcnow()
    retention_sweep(JobContext(database, settings, now, now))
    with database.tenant_session(world.id) as s:
        assert s.get_one(Customer, (world.id, ids["held"])).anonymized_at is not None
        assert s.get_one(Customer, (world.id, ids["open_case"])).anonymized_at is None
    records = api.get("/api/v1/privacy/destruction-records", headers=admin).json()["items"]
    assert any(str(ids["held"]) in r["subject_ids"] for r in records)
    assert all(
        r["actor"] == "system:privacy_retention" for r in records if r["run_id"] != "fixture"
    )
    placed = api.post(
        "/api/v1/privacy/legal-holds",
        headers=admin,
        json={
            "customer_id": str(ids["long"]),
            "reason": "litigation",
            "reference": "(2026)京0105民初1号",
        },
    )
    assert placed.status_code == 201
    other = make_tenant(database, "ret-other")
    other_admin = auth(person_token(other, "admin"))
    assert (
        api.post(
            f"/api/v1/privacy/legal-holds/{placed.json()['id']}/release", headers=other_admin
        ).status_code
        == 404
    )


CLOSED_LONG_AGO = dt.datetime(2012, 6, 1, tzinfo=dt.UTC)
TEXT = "客户赵敏（13711112222）住院，诊断为肺炎"


def _closed_case(s: Any, world: TenantWorld, customer_id: uuid.UUID, **extra: Any) -> Case:
    from core.cases.clocks import new_row
    from core.cases.models import CaseEvent, split_texts
    from core.deadlines import DeadlineRule, TenantCalendar, start_clock

    closed_at = extra.pop("closed_at", CLOSED_LONG_AGO)
    case = Case(
        number=f"TS-{uuid.uuid4().hex[:8]}",
        type=CaseType.COMPLAINT,
        channel=Channel.HOTLINE,
        state="closed",
        subject="赵敏投诉",
        description=TEXT,
        decision="同意赔付赵敏",
        unit_id=world.units["bj"].id,
        customer_id=customer_id,
        received_at=closed_at - dt.timedelta(days=20),
        closed_at=closed_at,
        **extra,
    )
    s.add(case)
    s.flush()
    before, after, data, texts = split_texts(
        {}, {"decision": "同意赔付赵敏"}, {"channel": "phone", "content": "已告知赵敏"}
    )
    event = CaseEvent(
        case_id=case.id, seq=1, kind="notice", actor="system:test", at=closed_at,
        before=before, after=after, data=data,
    )  # fmt: skip
    event.reason, event.texts = "赵敏要求延期", texts
    s.add(event)
    rule = DeadlineRule(
        clock="complaint.decision",
        amount=15,
        unit="natural_days",
        citation="x",
        source="test",
        statutory=True,
    )
    clock = new_row(start_clock(rule, case.received_at, TenantCalendar()))
    clock.case_id = case.id
    clock.status = "met"
    clock.history = {
        **clock.history,
        "pause_reason": "鉴定：赵敏病历",
        "pauses": [{"begin": "x", "end": "y", "reason": "委托鉴定赵敏病历"}],
    }
    s.add(clock)
    s.flush()
    return case


def _delivery(s: Any, customer_id: uuid.UUID, sent_at: dt.datetime) -> uuid.UUID:
    from core.notifications.models import Delivery
    from core.outbox.models import OutboxEvent

    outbox = OutboxEvent(event_type="test.retention", payload={}, status="done")
    s.add(outbox)
    s.flush()
    row = Delivery(
        outbox_id=outbox.id,
        event_type="test.retention",
        channel="sms",
        recipient_key=uuid.uuid4().hex,
        recipient_masked="137****2222",
        recipient_ref=f"customer:{customer_id}",
        audience="customer",
        status="sent",
        sent_at=sent_at,
    )
    s.add(row)
    s.flush()
    return row.id


def test_closed_case_texts_and_delivery_recipients_are_destroyed_in_batches_held_ones_not(
    database: Database,
) -> None:
    from core.cases.models import CaseClock, CaseEvent
    from core.notifications.models import Delivery

    world = make_tenant(database, "ret-cases")
    with database.tenant_transaction(world.id) as s:
        free = _customer(s, world, "赵敏", CustomerKind.POLICYHOLDER)
        held = _customer(s, world, "钱多", CustomerKind.POLICYHOLDER)
        disputed = _customer(s, world, "孙立", CustomerKind.POLICYHOLDER)
        running = Policy(
            number=f"P-{uuid.uuid4().hex[:8]}",
            product_code="L",
            product_name="终身寿险",
            line_of_business=LineOfBusiness.LIFE,
            term_months=None,
            start_date=dt.date(2010, 1, 1),
            unit_id=world.units["bj"].id,
            policyholder_id=free.id,
        )
        s.add(running)
        s.flush()
        due = [_closed_case(s, world, free.id).id for _ in range(3)]
        case_held = _closed_case(s, world, disputed.id).id  # a hold on this case only ...
        due.append(_closed_case(s, world, disputed.id).id)  # ... not on the customer's other
        customer_held = _closed_case(s, world, held.id).id
        recent = _closed_case(s, world, free.id, closed_at=utcnow() - dt.timedelta(days=30)).id
        policy_runs = _closed_case(s, world, free.id, policy_id=running.id).id
        s.add(
            LegalHold(customer_id=disputed.id, case_id=case_held, reason="dispute", placed_by="x")
        )
        s.add(LegalHold(customer_id=held.id, reason="litigation", placed_by="x"))
        old_sends = [_delivery(s, free.id, LONG_AGO) for _ in range(2)]
        held_send = _delivery(s, held.id, LONG_AGO)
        new_send = _delivery(s, free.id, utcnow())
    with database.tenant_session(world.id) as s:
        before = backlog(s, world.id)
    assert before["closed_case_text"] == {"due": 6, "held": 2}
    assert before["delivery_recipient"] == {"due": 3, "held": 1}

    report = run_retention(database, world.id, actor=ACTOR, batch=2)
    assert report.destroyed["closed_case_text"] == 4 and report.held["closed_case_text"] == 2
    assert report.destroyed["delivery_recipient"] == 2 and report.held["delivery_recipient"] == 1
    with database.tenant_session(world.id) as s:
        for case_id in due:
            case = s.get_one(Case, (world.id, case_id))
            assert case.anonymized_at is not None and case.subject == "（已匿名）"
            assert case.description is None and case.decision is None
            assert case.state == "closed" and case.number.startswith("TS-")  # the record stays
            (event,) = s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id))
            assert event.sealed_enc is None and event.reason is None and event.kind == "notice"
            (clock,) = s.scalars(select(CaseClock).where(CaseClock.case_id == case_id))
            assert "赵敏" not in str(clock.history) and clock.status == "met"
        for case_id in (case_held, customer_held, recent, policy_runs):
            case = s.get_one(Case, (world.id, case_id))
            assert case.anonymized_at is None and case.description == TEXT, case_id
        erased = {d.id: d for d in s.scalars(select(Delivery))}
        assert {erased[i].recipient_masked for i in old_sends} == {"(erased)"}
        assert erased[held_send].recipient_masked == "137****2222"
        assert erased[new_send].recipient_masked == "137****2222"
        records = s.scalars(
            select(DestructionRecord).where(DestructionRecord.run_id == report.run_id)
        ).all()
        by_class = {
            c: [r for r in records if r.data_class == c]
            for c in ("closed_case_text", "delivery_recipient")
        }
        assert sum(r.count for r in by_class["closed_case_text"]) == 4
        assert sum(r.held for r in by_class["closed_case_text"]) == 2
        assert max(r.count for r in records) <= 2  # batches of 2
        assert {r.method for r in by_class["closed_case_text"]} == {"anonymized"}
        assert {r.method for r in by_class["delivery_recipient"]} == {"erased"}
        assert "case_text_retention_years=10" in by_class["closed_case_text"][0].rule
        assert set().union(*(r.subject_ids for r in by_class["closed_case_text"])) == {
            str(i) for i in due
        }
    for case_id in due:  # and at rest: nothing of the text is left in the tables
        with database.platform_session() as s:
            raw = s.execute(
                select(CaseEvent.__table__).where(CaseEvent.__table__.c.case_id == case_id)
            ).all()
        assert not any("赵敏" in str(v) for row in raw for v in row)


RECORD = "赵敏病历：诊断为肺炎\n".encode() * 20


def _file(s: Any, world: TenantWorld, case_id: uuid.UUID, store: Any) -> uuid.UUID:
    """An attachment of ``case_id`` as an upload stores it: the file encrypted in ``store``."""
    import hashlib

    from core.cases.models import Attachment
    from core.cases.storage import put_in_transaction
    from core.db import new_id
    from core.privacy.files import seal_file

    attachment = Attachment(
        id=new_id(),
        case_id=case_id,
        filename="病历.txt",
        media_type="text/plain",
        size=len(RECORD),
        sha256=hashlib.sha256(RECORD).hexdigest(),
        uploaded_by="person:agent_bj",
    )
    attachment.storage_key = f"{world.id}/{case_id}/{attachment.id}"
    stored, attachment.key_version = seal_file(s, world.id, attachment.id, RECORD)
    put_in_transaction(s, store, attachment.storage_key, stored)
    s.add(attachment)
    s.flush()
    return attachment.id


def test_attachments_of_closed_cases_are_deleted_with_their_files_held_ones_not(
    database: Database, tmp_path: Any
) -> None:
    from core.cases.models import Attachment
    from core.cases.storage import LocalStorage
    from core.privacy.files import read_attachment
    from core.privacy.report import privacy_report

    store = LocalStorage(tmp_path / "attachments")
    world = make_tenant(database, "ret-att")
    other = make_tenant(database, "ret-att-other")
    with database.tenant_transaction(world.id) as s:
        free = _customer(s, world, "赵敏", CustomerKind.POLICYHOLDER)
        held = _customer(s, world, "钱多", CustomerKind.POLICYHOLDER)
        first, second = (_closed_case(s, world, free.id).id for _ in range(2))
        due = [_file(s, world, first, store), _file(s, world, first, store)]
        due.append(_file(s, world, second, store))
        case_held = _closed_case(s, world, free.id).id
        s.add(LegalHold(customer_id=free.id, case_id=case_held, reason="dispute", placed_by="x"))
        customer_held = _closed_case(s, world, held.id).id
        s.add(LegalHold(customer_id=held.id, reason="litigation", placed_by="x"))
        recent = _closed_case(s, world, free.id, closed_at=utcnow() - dt.timedelta(days=30)).id
        kept = [_file(s, world, c, store) for c in (case_held, customer_held, recent)]
    with database.tenant_transaction(other.id) as s:  # another tenant's, as old: not ours
        theirs_customer = _customer(s, other, "孙立", CustomerKind.POLICYHOLDER)
        theirs = _file(s, other, _closed_case(s, other, theirs_customer.id).id, store)
    with database.tenant_session(world.id) as s:
        assert backlog(s, world.id)["case_attachment"] == {"due": 5, "held": 2}
        keys = {a.id: a.storage_key for a in s.scalars(select(Attachment))}

    # Without the attachment store the class waits (no row loses its file, or the reverse).
    report = run_retention(database, world.id, actor=ACTOR, batch=2)
    assert report.destroyed["case_attachment"] == 0
    assert report.destroyed["closed_case_text"] == 2  # the texts of the two due cases
    with database.tenant_session(world.id) as s:
        assert backlog(s, world.id)["case_attachment"] == {"due": 5, "held": 2}

    report = run_retention(database, world.id, actor=ACTOR, batch=2, storage=store)
    assert report.destroyed["case_attachment"] == 3 and report.held["case_attachment"] == 2
    stored = {o.key for o in store.iter_objects()}
    with database.tenant_session(world.id) as s:
        left = {a.id: a for a in s.scalars(select(Attachment))}
        assert not set(due) & set(left)  # the rows ...
        assert not {keys[a] for a in due} & stored  # ... and their files
        for attachment_id in kept:  # held or not due: row and file, still readable
            assert read_attachment(s, store, left[attachment_id]) == RECORD
        records = s.scalars(
            select(DestructionRecord).where(
                DestructionRecord.run_id == report.run_id,
                DestructionRecord.data_class == "case_attachment",
            )
        ).all()
        assert sum(r.count for r in records) == 3 and sum(r.held for r in records) == 2
        assert max(r.count for r in records) <= 2 and {r.method for r in records} == {"deleted"}
        assert set().union(*(r.subject_ids for r in records)) == {str(i) for i in due}
        assert "attachment_retention_years=10" in records[0].rule
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "privacy.destroyed"))
        assert (
            sum(e.details["count"] for e in audit if e.details["data_class"] == "case_attachment")
            == 3
        )
        assert backlog(s, world.id)["case_attachment"] == {"due": 2, "held": 2}
        now = utcnow()
        listed = privacy_report(s, world.id, since=now - dt.timedelta(days=1), until=now, now=now)
        files = next(p for p in listed["storage"] if p["table"] == "case_attachments (files)")
        assert "AES-256-GCM" in files["protection"] and files["in_clear"] == 0
        assert listed["retention_backlog"]["case_attachment"] == {"due": 2, "held": 2}

    # The other tenant's attachment: untouched by this tenant's run, due in its own.
    with database.tenant_session(other.id) as s:
        assert read_attachment(s, store, s.get_one(Attachment, (other.id, theirs))) == RECORD
    theirs_run = run_retention(database, other.id, actor=ACTOR, storage=store)
    assert theirs_run.destroyed["case_attachment"] == 1
    with database.tenant_session(world.id) as s:
        assert set(kept) <= {a.id for a in s.scalars(select(Attachment))}


def test_a_deleted_customer_s_attachments_stay_with_their_cases_until_the_case_retention(
    database: Database, tmp_path: Any
) -> None:
    """Deletion anonymizes the customer; the files of their cases are the case's evidence and
    stay (encrypted) under the case's retention."""
    from core.cases.models import Attachment
    from core.cases.storage import LocalStorage
    from core.privacy.files import read_attachment
    from core.privacy.subjects import anonymize_customer

    store = LocalStorage(tmp_path / "attachments")
    world = make_tenant(database, "ret-dsr")
    with database.tenant_transaction(world.id) as s:
        customer = _customer(s, world, "赵敏", CustomerKind.POLICYHOLDER)
        recent = _closed_case(s, world, customer.id, closed_at=utcnow() - dt.timedelta(days=40))
        attachment_id = _file(s, world, recent.id, store)
    with database.tenant_transaction(world.id) as s:
        anonymize_customer(
            s, s.get_one(Customer, (world.id, customer.id)), actor=ACTOR, reason="deletion"
        )
    run_retention(database, world.id, actor=ACTOR, storage=store)
    with database.tenant_session(world.id) as s:
        assert s.get_one(Customer, (world.id, customer.id)).anonymized_at is not None
        kept = s.get_one(Attachment, (world.id, attachment_id))
        assert read_attachment(s, store, kept) == RECORD
        assert backlog(s, world.id)["case_attachment"] == {"due": 0, "held": 0}
