"""Retention and secure destruction (保险行业客户信息管理制度 (5)): per data class, what is due,
and a batch destruction that writes a destruction record and never touches held data.

Data classes (periods from ``privacy_cn`` at the customer's unit, :mod:`core.privacy.policy`):

* ``prospect`` — a prospect (潜在客户) with no policy, ``prospect_retention_days`` after the last
  contact (the customer's last change or case);
* ``former_customer`` — a customer whose every policy ended, ``former_customer_retention_years``
  after the last one ended, and never less than 保险法 第八十七条 (5 years for a policy of up to
  one year, 10 for a longer one);
* ``request_note`` — the free-text note (and refusal reason) of a closed data-subject
  request, ``dsr_note_retention_days`` after it closed;
* ``closed_case_text`` — the personal free text of a closed case (subject, description,
  decisions, answers, reasons, notices, the whistle-blower's identity, the timeline's texts,
  the clocks' pause and extension reasons), ``case_text_retention_years`` after it closed and
  not before its policy's statutory period (保险法 第八十七条) ended. The case record stays
  (number, type, states, dates, clocks, category: statistics and the law's records);
* ``delivery_recipient`` — whom a finished delivery went to (masked address, address hash,
  last error), ``delivery_log_retention_days`` after it finished (the longest of the tenant's
  units); the delivery row stays;
* ``case_attachment`` — a closed case's attachment files (medical records, letters: the
  case's evidence), ``attachment_retention_years`` after the case closed — by default the
  case text's period, so the files go with the case's free text — and not before its
  policy's statutory period ended. The row and the file are deleted: the row in the batch's
  transaction, the file from the attachment store once it committed
  (:func:`core.cases.storage.delete_after_commit`; a crash in between leaves an object no row
  refers to, which the ``attachment_sweep`` job deletes). Runs only with the attachment store
  (``run_retention(storage=...)``). The timeline keeps the ``attachment`` event (name, size,
  SHA-256), as it keeps the case record.

Customers and cases are anonymized (:func:`core.privacy.subjects.anonymize_customer`,
:func:`core.privacy.subjects.anonymize_case`); notes and recipients are erased. Held data is
skipped and counted: customers under a legal hold, with an open case or in a review window
(:func:`core.privacy.subjects.holds_for`); cases — and their attachments — under a legal hold
of their own or of their customer; deliveries to a customer under a legal hold. Each batch
is one transaction with one :class:`DestructionRecord` and one audit entry.

The audit log is not a data class here: it holds no clear personal data (masked values, keyed
fingerprints) and is the record of processing the law requires to be kept (个人信息保护法
第五十六条: at least three years); it is append-only and kept.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.audit import AuditActor, record
from core.cases.models import Attachment, Case
from core.cases.storage import AttachmentStorage, delete_after_commit
from core.customers.models import Customer, CustomerKind, Policy
from core.db import Database, utcnow
from core.notifications.models import FINAL_STATUSES, Delivery
from core.orgs.models import OrgUnit
from core.privacy.models import DataSubjectRequest, DestructionRecord, LegalHold
from core.privacy.policy import (
    STATUTORY_RETENTION_YEARS_LONG,
    STATUTORY_RETENTION_YEARS_SHORT,
    PrivacyPolicy,
    policy_at,
)
from core.privacy.subjects import anonymize_case, anonymize_customer, holds_for

DEFAULT_BATCH = 200
DATA_CLASSES = (
    "prospect",
    "former_customer",
    "request_note",
    "closed_case_text",
    "case_attachment",
    "delivery_recipient",
)
ERASED = "(erased)"
"""What an erased delivery recipient reads."""
_YEAR = dt.timedelta(days=365)
log = structlog.get_logger("insurdesk.privacy")
_DEFAULT = PrivacyPolicy()


def _add_months(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    last = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return dt.date(year, month, min(day.day, last))


def policy_end(policy: Policy, today: dt.date) -> dt.date | None:
    """When the policy ended, or None while it runs (no term: it runs until its status says
    otherwise)."""
    if policy.term_months:
        end = _add_months(policy.start_date, policy.term_months)
        if end <= today:
            return end
    if policy.status != "in_force":
        return max(policy.start_date, policy.updated_at.date())
    return None


@dataclass
class Policies:
    """The privacy policy of every unit of a tenant (units are few: resolved once per run)."""

    by_unit: dict[uuid.UUID, PrivacyPolicy]

    @classmethod
    def load(cls, session: Session, tenant_id: uuid.UUID) -> Policies:
        """Resolve the policy of each unit."""
        units = session.execute(select(OrgUnit.id, OrgUnit.path)).all()
        return cls({uid: policy_at(session, tenant_id, path) for uid, path in units})

    def at(self, unit_id: uuid.UUID) -> PrivacyPolicy:
        """The policy at ``unit_id`` (defaults for an unknown unit)."""
        return self.by_unit.get(unit_id, _DEFAULT)

    @property
    def shortest_prospect(self) -> dt.timedelta:
        """The shortest prospect period of any unit (a pre-filter for the query)."""
        days = min((p.prospect_retention_days for p in self.by_unit.values()), default=730)
        return dt.timedelta(days=days)


@dataclass(frozen=True)
class Due:
    """A row whose retention ended."""

    id: uuid.UUID
    rule: str


def _last_case_activity(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, dt.datetime]:
    if not ids:
        return {}
    rows = session.execute(
        select(Case.customer_id, func.max(func.coalesce(Case.closed_at, Case.received_at)))
        .where(Case.customer_id.in_(ids))
        .group_by(Case.customer_id)
    ).all()
    return {cid: when for cid, when in rows if cid is not None and when is not None}


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def due_prospects(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Prospects past their period, by id after ``after``; returns them and the last id seen."""
    has_policy = (
        select(Policy.id)
        .where(or_(Policy.policyholder_id == Customer.id, Policy.insured_id == Customer.id))
        .exists()
    )
    stmt = (
        select(Customer)
        .where(
            Customer.kind == CustomerKind.PROSPECT,
            Customer.anonymized_at.is_(None),
            Customer.updated_at < now - policies.shortest_prospect,
            ~has_policy,
        )
        .order_by(Customer.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Customer.id > after)
    rows = session.scalars(stmt).all()
    last = _last_case_activity(session, [c.id for c in rows])
    found = []
    for c in rows:
        days = policies.at(c.unit_id).prospect_retention_days
        latest = max(_aware(c.updated_at), _aware(last.get(c.id, c.updated_at)))
        if latest < now - dt.timedelta(days=days):
            found.append(Due(c.id, f"privacy_cn.prospect_retention_days={days}"))
    return found, rows[-1].id if rows else None


def due_former_customers(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Customers whose every policy ended long enough ago (see the module docstring)."""
    stmt = (
        select(Customer)
        .where(
            Customer.anonymized_at.is_(None),
            Customer.updated_at < now - STATUTORY_RETENTION_YEARS_SHORT * _YEAR,
        )
        .order_by(Customer.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Customer.id > after)
    rows = session.scalars(stmt).all()
    ids = [c.id for c in rows]
    by_customer: dict[uuid.UUID, list[Policy]] = defaultdict(list)
    if ids:
        for p in session.scalars(
            select(Policy).where(or_(Policy.policyholder_id.in_(ids), Policy.insured_id.in_(ids)))
        ):
            for cid in {p.policyholder_id, p.insured_id} & set(ids):
                if cid is not None:
                    by_customer[cid].append(p)
    last_case = _last_case_activity(session, ids)
    today = now.date()
    found = []
    for c in rows:
        held_policies = by_customer.get(c.id)
        if not held_policies:
            continue  # prospects and customers without policies: not this class
        years = policies.at(c.unit_id).former_customer_retention_years
        keep_until: dt.date | None = None
        for p in held_policies:
            end = policy_end(p, today)
            if end is None:  # a policy still runs: a current customer
                keep_until = None
                break
            short = p.term_months is not None and p.term_months <= 12
            kept = STATUTORY_RETENTION_YEARS_SHORT if short else years
            until = end + dt.timedelta(days=365 * kept)
            keep_until = until if keep_until is None else max(keep_until, until)
        if keep_until is None or keep_until > today:
            continue
        activity = last_case.get(c.id)
        if activity is not None and _aware(activity) > now - dt.timedelta(days=365 * years):
            continue
        found.append(Due(c.id, f"privacy_cn.former_customer_retention_years={years}; 保险法/87"))
    return found, rows[-1].id if rows else None


def due_request_notes(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Closed requests whose note outlived its period."""
    shortest = min((p.dsr_note_retention_days for p in policies.by_unit.values()), default=1095)
    stmt = (
        select(DataSubjectRequest)
        .where(
            DataSubjectRequest.sealed_enc.isnot(None),
            DataSubjectRequest.completed_at < now - dt.timedelta(days=shortest),
        )
        .order_by(DataSubjectRequest.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(DataSubjectRequest.id > after)
    rows = session.scalars(stmt).all()
    found = []
    for r in rows:
        days = policies.at(r.unit_id).dsr_note_retention_days
        if r.completed_at is not None and _aware(r.completed_at) < now - dt.timedelta(days=days):
            found.append(Due(r.id, f"privacy_cn.dsr_note_retention_days={days}"))
    return found, rows[-1].id if rows else None


def due_case_texts(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Closed cases whose free text outlived its period (and its policy's)."""
    shortest = min(
        (p.case_text_retention_years for p in policies.by_unit.values()),
        default=_DEFAULT.case_text_retention_years,
    )
    stmt = (
        select(Case)
        .where(
            Case.state == "closed",
            Case.anonymized_at.is_(None),
            Case.closed_at < now - shortest * _YEAR,
        )
        .order_by(Case.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Case.id > after)
    rows = session.scalars(stmt).all()
    found = _closed_past(
        session,
        rows,
        now,
        lambda unit_id: policies.at(unit_id).case_text_retention_years,
        "privacy_cn.case_text_retention_years",
    )
    return found, rows[-1].id if rows else None


class _ClosedRow(Protocol):
    id: uuid.UUID
    unit_id: uuid.UUID
    closed_at: dt.datetime | None
    policy_id: uuid.UUID | None


def _closed_past(
    session: Session,
    rows: Sequence[_ClosedRow],
    now: dt.datetime,
    years_at: Callable[[uuid.UUID], int],
    setting: str,
) -> list[Due]:
    """The rows whose case closed more than its unit's period ago (``years_at``) and whose
    policy's records are no longer kept (保险法 第八十七条)."""
    policy_ids = {r.policy_id for r in rows if r.policy_id is not None}
    by_id = (
        {p.id: p for p in session.scalars(select(Policy).where(Policy.id.in_(policy_ids)))}
        if policy_ids
        else {}
    )
    today = now.date()
    found = []
    for r in rows:
        years = years_at(r.unit_id)
        if r.closed_at is None or _aware(r.closed_at) >= now - years * _YEAR:
            continue
        if _policy_kept(by_id.get(r.policy_id) if r.policy_id else None, today):
            continue
        found.append(Due(r.id, f"{setting}={years}; 保险法/87"))
    return found


def _policy_kept(policy: Policy | None, today: dt.date) -> bool:
    """Whether the records of ``policy`` are still kept (保险法 第八十七条: it runs, or it
    ended less than its statutory period ago)."""
    if policy is None:
        return False
    end = policy_end(policy, today)
    short = policy.term_months is not None and policy.term_months <= 12
    kept = STATUTORY_RETENTION_YEARS_SHORT if short else STATUTORY_RETENTION_YEARS_LONG
    return end is None or end + dt.timedelta(days=365 * kept) > today


def due_attachments(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Attachments of closed cases past their period (and their policy's), by id."""
    shortest = min(
        (p.attachment_years for p in policies.by_unit.values()),
        default=_DEFAULT.attachment_years,
    )
    stmt = (
        select(Attachment.id, Case.unit_id, Case.closed_at, Case.policy_id)
        .join(Case, (Case.tenant_id == Attachment.tenant_id) & (Case.id == Attachment.case_id))
        .where(Case.state == "closed", Case.closed_at < now - shortest * _YEAR)
        .order_by(Attachment.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Attachment.id > after)
    rows = session.execute(stmt).all()
    found = _closed_past(
        session,
        rows,
        now,
        lambda unit_id: policies.at(unit_id).attachment_years,
        "privacy_cn.attachment_retention_years",
    )
    return found, rows[-1].id if rows else None


def due_delivery_recipients(
    session: Session, policies: Policies, now: dt.datetime, after: uuid.UUID | None, limit: int
) -> tuple[list[Due], uuid.UUID | None]:
    """Finished deliveries whose recipient outlived the delivery log's period."""
    days = max(
        (p.delivery_log_retention_days for p in policies.by_unit.values()),
        default=_DEFAULT.delivery_log_retention_days,
    )
    stmt = (
        select(Delivery.id)
        .where(
            Delivery.status.in_([s.value for s in FINAL_STATUSES]),
            Delivery.recipient_masked != ERASED,
            func.coalesce(Delivery.sent_at, Delivery.updated_at) < now - dt.timedelta(days=days),
        )
        .order_by(Delivery.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Delivery.id > after)
    ids = list(session.scalars(stmt))
    rule = f"privacy_cn.delivery_log_retention_days={days}"
    return [Due(i, rule) for i in ids], ids[-1] if ids else None


Finder = Callable[
    [Session, Policies, dt.datetime, uuid.UUID | None, int], tuple[list[Due], uuid.UUID | None]
]
FINDERS: dict[str, Finder] = {
    "prospect": due_prospects,
    "former_customer": due_former_customers,
    "request_note": due_request_notes,
    "closed_case_text": due_case_texts,
    "case_attachment": due_attachments,
    "delivery_recipient": due_delivery_recipients,
}
METHODS: dict[str, str] = {
    "prospect": "anonymized",
    "former_customer": "anonymized",
    "request_note": "erased",
    "closed_case_text": "anonymized",
    "case_attachment": "deleted",
    "delivery_recipient": "erased",
}


def _case_holds(
    session: Session, ids: list[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, list[str]]:
    """Cases under an active legal hold, of their own or of their customer."""
    if not ids:
        return {}
    cases = session.execute(select(Case.id, Case.customer_id).where(Case.id.in_(ids))).all()
    customers = {cid for _, cid in cases if cid is not None}
    found: dict[uuid.UUID, list[str]] = defaultdict(list)
    for case_id, customer_id, reason in session.execute(
        select(LegalHold.case_id, LegalHold.customer_id, LegalHold.reason).where(
            LegalHold.released_at.is_(None),
            or_(LegalHold.case_id.in_(ids), LegalHold.customer_id.in_(customers)),
        )
    ):
        for cid, customer in cases:
            if cid == case_id or (case_id is None and customer == customer_id):
                found[cid].append(f"legal hold: {reason}")
    return dict(found)


def _attachment_holds(
    session: Session, ids: list[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, list[str]]:
    """Attachments of cases under an active legal hold (the case's or its customer's)."""
    if not ids:
        return {}
    rows = session.execute(select(Attachment.id, Attachment.case_id).where(Attachment.id.in_(ids)))
    case_of = {aid: cid for aid, cid in rows}
    held = _case_holds(session, sorted(set(case_of.values())), now)
    return {aid: held[cid] for aid, cid in case_of.items() if cid in held}


def _delivery_holds(
    session: Session, ids: list[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, list[str]]:
    """Deliveries to a customer under an active legal hold."""
    if not ids:
        return {}
    held_refs = {
        f"customer:{cid}"
        for cid in session.scalars(
            select(LegalHold.customer_id).where(LegalHold.released_at.is_(None))
        )
    }
    if not held_refs:
        return {}
    return {
        did: ["legal hold on the customer"]
        for did, ref in session.execute(
            select(Delivery.id, Delivery.recipient_ref).where(Delivery.id.in_(ids))
        )
        if ref in held_refs
    }


def _no_holds(
    session: Session, ids: list[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, list[str]]:
    return {}


Holder = Callable[[Session, list[uuid.UUID], dt.datetime], dict[uuid.UUID, list[str]]]
HOLDERS: dict[str, Holder] = {
    "prospect": holds_for,
    "former_customer": holds_for,
    "request_note": _no_holds,
    "closed_case_text": _case_holds,
    "case_attachment": _attachment_holds,
    "delivery_recipient": _delivery_holds,
}
"""What keeps a due row of each class from being destroyed."""


def iter_due(
    session: Session, tenant_id: uuid.UUID, data_class: str, now: dt.datetime, limit: int = 500
) -> Iterator[Due]:
    """Every row of ``data_class`` past its period (held ones included)."""
    policies = Policies.load(session, tenant_id)
    after: uuid.UUID | None = None
    while True:
        found, after = FINDERS[data_class](session, policies, now, after, limit)
        yield from found
        if after is None:
            return


def backlog(
    session: Session, tenant_id: uuid.UUID, now: dt.datetime | None = None
) -> dict[str, dict[str, int]]:
    """Per data class, how many rows are due and how many of those are held."""
    now = now or utcnow()
    out = {}
    for data_class in DATA_CLASSES:
        due = list(iter_due(session, tenant_id, data_class, now))
        held = len(HOLDERS[data_class](session, [d.id for d in due], now))
        out[data_class] = {"due": len(due), "held": held}
    return out


@dataclass
class RetentionReport:
    """What a retention run did, per data class."""

    run_id: str
    destroyed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATA_CLASSES, 0))
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATA_CLASSES, 0))
    batches: int = 0


def _destroy(
    session: Session,
    data_class: str,
    due: Due,
    actor: AuditActor,
    run_id: str,
    storage: AttachmentStorage | None = None,
) -> None:
    tenant_id = session.info["tenant_id"]
    if data_class == "case_attachment":
        assert storage is not None
        key = session.execute(
            delete(Attachment)
            .where(Attachment.tenant_id == tenant_id, Attachment.id == due.id)
            .returning(Attachment.storage_key)
            .execution_options(synchronize_session=False)
        ).scalar()
        if key is not None:  # the file goes once the batch commits; kept if it rolls back
            delete_after_commit(session, storage, key)
        return
    if data_class == "request_note":
        request = session.get(DataSubjectRequest, (tenant_id, due.id))
        if request is not None:
            request.note = None
            request.refusal_reason = None
        return
    if data_class == "closed_case_text":
        case = session.get(Case, (tenant_id, due.id))
        if case is not None and case.anonymized_at is None:
            anonymize_case(session, case)
        return
    if data_class == "delivery_recipient":
        session.execute(
            update(Delivery)
            .where(Delivery.tenant_id == tenant_id, Delivery.id == due.id)
            .values(
                recipient_masked=ERASED,
                recipient_key=f"erased:{due.id.hex}",
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        )
        return
    customer = session.get(Customer, (session.info["tenant_id"], due.id))
    if customer is not None and customer.anonymized_at is None:
        anonymize_customer(
            session,
            customer,
            actor=actor,
            reason=f"retention {data_class} ({run_id})",
            audit=False,
        )


def run_retention(
    db: Database,
    tenant_id: uuid.UUID,
    *,
    actor: AuditActor,
    now: dt.datetime | None = None,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
    storage: AttachmentStorage | None = None,
) -> RetentionReport:
    """Destroy what is due in batches (one transaction, destruction record and audit entry
    each), skipping held rows. Attachment files only with ``storage``, the attachment store
    (without it they wait for a run that has it)."""
    now = now or utcnow()
    report = RetentionReport(run_id=f"ret-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    for data_class in DATA_CLASSES:
        if data_class == "case_attachment" and storage is None:
            log.info("retention_skipped", data_class=data_class, reason="no attachment store")
            continue
        after: uuid.UUID | None = None
        while max_batches is None or report.batches < max_batches:
            started = utcnow()
            with db.tenant_transaction(tenant_id) as session:
                policies = Policies.load(session, tenant_id)
                found, after = FINDERS[data_class](session, policies, now, after, batch)
                holds = HOLDERS[data_class](session, [d.id for d in found], now)
                todo = [d for d in found if d.id not in holds]
                for due in todo:
                    _destroy(session, data_class, due, actor, report.run_id, storage)
                if todo or holds:
                    report.batches += 1
                    rules = sorted({d.rule for d in todo} or {d.rule for d in found})
                    session.add(
                        DestructionRecord(
                            run_id=report.run_id,
                            batch=report.batches,
                            data_class=data_class,
                            rule="; ".join(rules)[:300],
                            method=METHODS[data_class],
                            cutoff=now,
                            count=len(todo),
                            held=len(holds),
                            subject_ids=[str(d.id) for d in todo],
                            actor=actor.label,
                            started_at=started,
                        )
                    )
                    record(
                        session,
                        action="privacy.destroyed",
                        actor=actor,
                        target=("destruction_run", report.run_id),
                        details={
                            "data_class": data_class,
                            "batch": report.batches,
                            "count": len(todo),
                            "held": len(holds),
                            "rules": rules,
                        },
                    )
                report.destroyed[data_class] += len(todo)
                report.held[data_class] += len(holds)
            if after is None:
                break
    return report
