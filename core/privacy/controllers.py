"""HTTP API of customer-information protection (docs/privacy.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, paginate
from core.api.problems import Problem, not_found
from core.audit import actor_from, record
from core.audit.controllers import require_tenant_wide
from core.audit.services import source_of
from core.auth.guards import Access
from core.customers.models import Customer
from core.customers.services import get_customer
from core.db import utcnow
from core.orgs.services import get_unit
from core.plugins.host import PluginHost
from core.privacy import consent as consents
from core.privacy import requests, sharing
from core.privacy.models import (
    DataSubjectRequest,
    DestructionRecord,
    LegalHold,
    SharingAgreement,
)
from core.privacy.policy import policy_from
from core.privacy.report import privacy_report
from core.privacy.retention import backlog
from core.privacy.schemas import (
    AgreementIn,
    AgreementOut,
    AgreementUpdate,
    ConsentIn,
    ConsentOut,
    ConsentsOut,
    DestructionOut,
    FulfilIn,
    FulfilOut,
    HoldIn,
    HoldOut,
    ReasonIn,
    RequestIn,
    RequestOut,
)

PRIVACY_ADMIN = "privacy:admin"


def visible_customer(
    session: Session, access: Access, customer_id: uuid.UUID, permission: str = "customers:read"
) -> Customer:
    """The customer if the caller may read it (404 otherwise) and holds ``permission`` there."""
    customer = get_customer(session, customer_id)
    unit = get_unit(session, customer.unit_id)
    access.require("customers:read", unit, hide=True)
    if permission != "customers:read":
        access.require(permission, unit)
    return customer


class ConsentController(Controller):
    """A customer's consents (read: ``customers:read``; record: ``customers:write``)."""

    path = "/api/v1/customers/{customer_id:uuid}/consents"
    tags = ["privacy"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listConsents", summary="A customer's consents")
    @uses_database
    def list_consents(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromPath[uuid.UUID],
    ) -> ConsentsOut:
        """The current choice per purpose and every consent event, oldest first."""
        visible_customer(session, access, customer_id)
        events = consents.history(session, customer_id)
        current = {e.purpose: ConsentOut.of(e) for e in events}
        return ConsentsOut(
            customer_id=customer_id, current=current, history=[ConsentOut.of(e) for e in events]
        )

    @post(
        "/",
        operation_id="recordConsent",
        summary="Record a consent or withdrawal",
    )
    @uses_database
    def record_consent(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromPath[uuid.UUID],
        data: JSONBody[ConsentIn],
    ) -> ConsentOut:
        """Record what the customer agreed to or withdrew: purpose, channel, time and the
        version of the notice they were shown (audited as ``consent.given`` /
        ``consent.withdrawn``)."""
        customer = visible_customer(session, access, customer_id, "customers:write")
        if customer.anonymized_at is not None:
            raise Problem(409, "the customer was anonymized", slug="customer-anonymized")
        if data.channel not in consents.CONSENT_CHANNELS:
            raise Problem(
                422,
                f"unknown channel {data.channel!r}; one of: {', '.join(consents.CONSENT_CHANNELS)}",
                slug="unknown-channel",
            )
        at = data.at or utcnow()
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at > utcnow():
            raise Problem(422, "a consent cannot be recorded in the future", slug="invalid-time")
        event = consents.record_consent(
            session,
            customer_id=customer_id,
            purpose=data.purpose,
            given=data.given,
            channel=data.channel,
            notice_version=data.notice_version,
            at=at,
            actor=actor_from(access.principal, session),
            evidence=data.evidence,
            source=source_of(request),
        )
        session.commit()
        return ConsentOut.of(event)


def _request(session: Session, access: Access, request_id: uuid.UUID) -> DataSubjectRequest:
    """The request if the caller holds ``privacy:admin`` at its unit (404 otherwise)."""
    found = session.get(DataSubjectRequest, (session.info["tenant_id"], request_id))
    if found is None:
        raise not_found("privacy request", request_id)
    access.require(PRIVACY_ADMIN, get_unit(session, found.unit_id), hide=True)
    return found


class RequestController(Controller):
    """Data-subject requests: registered by front-line staff (``customers:write``), handled
    by ``privacy:admin`` at the customer's unit."""

    path = "/api/v1/privacy/requests"
    tags = ["privacy"]
    dependencies = API_DEPENDENCIES

    @post(
        "/",
        operation_id="registerPrivacyRequest",
        summary="Register a data-subject request",
    )
    @uses_database
    def register(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[RequestIn],
        plugins: NamedDependency[PluginHost],
    ) -> RequestOut:
        """A customer asks to see, copy, correct or delete their data. The deadline is
        ``privacy_cn.dsr_working_days`` working days at the customer's unit (default 15),
        on the tenant calendar."""
        customer = get_customer(session, data.customer_id)
        unit = get_unit(session, customer.unit_id)
        access.require("customers:read", unit, hide=True)
        if not (access.can("customers:write", unit.path) or access.can(PRIVACY_ADMIN, unit.path)):
            raise Problem(
                403,
                "registering a request needs customers:write or privacy:admin "
                "at the customer's unit",
                slug="forbidden",
            )
        if data.channel not in requests.CHANNELS:
            raise Problem(
                422,
                f"unknown channel {data.channel!r}; one of: {', '.join(requests.CHANNELS)}",
                slug="unknown-channel",
            )
        policy = policy_from(plugins.for_unit(access.principal.tenant_id, unit.path))
        found = requests.register(
            session,
            customer=customer,
            unit=unit,
            kind=data.kind,
            channel=data.channel,
            policy=policy,
            actor=actor_from(access.principal, session),
            received_at=data.received_at,
            note=data.note,
            source=source_of(request),
        )
        session.commit()
        return RequestOut.of(found, utcnow())

    @get(
        "/",
        operation_id="listPrivacyRequests",
        summary="List data-subject requests",
    )
    @uses_database
    def list_requests(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_state: Annotated[
            str | None, QueryParameter(name="state", pattern=r"^[a-z_]+$", max_length=16)
        ] = None,
        kind: Annotated[str | None, Parameter(pattern=r"^[a-z_]+$", max_length=16)] = None,
        customer_id: FromQuery[uuid.UUID | None] = None,
        overdue: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[RequestOut]:
        """Requests at units where the caller holds ``privacy:admin``; ``overdue=true``: open
        ones past their deadline."""
        access.require_anywhere(PRIVACY_ADMIN)
        now = utcnow()
        stmt = select(DataSubjectRequest).where(
            access.unit_clause(PRIVACY_ADMIN, DataSubjectRequest.unit_id)
        )
        if request_state:
            stmt = stmt.where(DataSubjectRequest.state == request_state)
        if kind:
            stmt = stmt.where(DataSubjectRequest.kind == kind)
        if customer_id:
            stmt = stmt.where(DataSubjectRequest.customer_id == customer_id)
        if overdue:
            stmt = stmt.where(
                DataSubjectRequest.state.in_(requests.OPEN_STATES),
                DataSubjectRequest.due_at < now,
            )
        return paginate(
            session,
            stmt,
            DataSubjectRequest.id,
            cursor=cursor,
            limit=limit,
            to_item=lambda r: RequestOut.of(r, now),
        )

    @get(
        "/{request_id:uuid}",
        operation_id="getPrivacyRequest",
        summary="One request",
    )
    @uses_database
    def get_request(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
    ) -> RequestOut:
        """A request (404 outside the caller's units)."""
        return RequestOut.of(_request(session, access, request_id), utcnow())

    @post(
        "/{request_id:uuid}/start",
        operation_id="startPrivacyRequest",
        summary="Take a request",
        status_code=200,
    )
    @uses_database
    def start(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
    ) -> RequestOut:
        """``received`` → ``in_progress``; the caller becomes the handler."""
        found = _request(session, access, request_id)
        requests.start(
            session, found, actor=actor_from(access.principal, session), source=source_of(request)
        )
        session.commit()
        return RequestOut.of(found, utcnow())

    @post(
        "/{request_id:uuid}/fulfil",
        operation_id="fulfilPrivacyRequest",
        summary="Fulfil a request",
        status_code=200,
    )
    @uses_database
    def fulfil(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[FulfilIn],
    ) -> FulfilOut:
        """Access/copy: the complete export of the person (JSON, also the answer's
        ``export``); correction: apply ``changes`` (before/after in the audit log); deletion:
        anonymize the customer, keeping the cases (409 ``legal-hold`` while held)."""
        found = _request(session, access, request_id)
        customer = get_customer(session, found.customer_id)
        result = requests.fulfil(
            session,
            found,
            customer,
            actor=actor_from(access.principal, session),
            changes=data.changes,
            source=source_of(request),
        )
        session.commit()
        return FulfilOut(request=RequestOut.of(found, utcnow()), export=result.get("export"))

    @get(
        "/{request_id:uuid}/export",
        operation_id="exportPrivacyRequest",
        summary="The person's export (access and copy requests)",
    )
    @uses_database
    def export(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        """Everything held about the person, as a JSON file (audited ``customer.exported``)."""
        found = _request(session, access, request_id)
        document = requests.export(
            session,
            found,
            get_customer(session, found.customer_id),
            actor=actor_from(access.principal, session),
            source=source_of(request),
        )
        session.commit()
        return Response(
            document, headers={"Content-Disposition": f'attachment; filename="{found.number}.json"'}
        )

    @post(
        "/{request_id:uuid}/refuse",
        operation_id="refusePrivacyRequest",
        summary="Refuse a request, with the reason",
        status_code=200,
    )
    @uses_database
    def refuse(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[ReasonIn],
    ) -> RequestOut:
        """Refuse, stating why (第五十条)."""
        found = _request(session, access, request_id)
        requests.refuse(
            session,
            found,
            reason=data.reason,
            actor=actor_from(access.principal, session),
            source=source_of(request),
        )
        session.commit()
        return RequestOut.of(found, utcnow())

    @post(
        "/{request_id:uuid}/withdraw",
        operation_id="withdrawPrivacyRequest",
        summary="The customer withdraws a request",
        status_code=200,
    )
    @uses_database
    def withdraw(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        request_id: FromPath[uuid.UUID],
    ) -> RequestOut:
        """Close the request at the customer's wish."""
        found = _request(session, access, request_id)
        requests.withdraw(
            session, found, actor=actor_from(access.principal, session), source=source_of(request)
        )
        session.commit()
        return RequestOut.of(found, utcnow())


class SharingController(Controller):
    """The register of sharing agreements (``privacy:admin`` at the top of the tree)."""

    path = "/api/v1/privacy/sharing-agreements"
    tags = ["privacy"]
    dependencies = API_DEPENDENCIES

    @get(
        "/",
        operation_id="listSharingAgreements",
        summary="List sharing agreements",
    )
    @uses_database
    def list_agreements(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> list[AgreementOut]:
        """Every agreement, soonest expiry first, with its status today."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        today = utcnow().date()
        return [
            AgreementOut.of(a, sharing.status_of(a, today)) for a in sharing.agreements(session)
        ]

    @post(
        "/",
        operation_id="createSharingAgreement",
        summary="Register a sharing agreement",
    )
    @uses_database
    def create(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[AgreementIn],
    ) -> AgreementOut:
        """Register a third party, the purpose, the personal fields it may receive, the legal
        basis (个人信息保护法 第十三条), the agreement's reference and validity."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        if data.third_party_kind not in sharing.THIRD_PARTY_KINDS:
            raise Problem(
                422,
                f"third_party_kind: one of {', '.join(sharing.THIRD_PARTY_KINDS)}",
                slug="invalid-kind",
            )
        if data.legal_basis not in sharing.LEGAL_BASES:
            raise Problem(
                422,
                f"legal_basis: one of {', '.join(sharing.LEGAL_BASES)}",
                slug="invalid-legal-basis",
            )
        if data.expires_on < data.starts_on:
            raise Problem(422, "expires_on is before starts_on", slug="invalid-dates")
        actor = actor_from(access.principal, session)
        agreement = SharingAgreement(
            third_party=data.third_party,
            third_party_kind=data.third_party_kind,
            purpose=data.purpose,
            fields=sharing.check_fields(data.fields),
            legal_basis=data.legal_basis,
            reference=data.reference,
            starts_on=data.starts_on,
            expires_on=data.expires_on,
            created_by=actor.label,
        )
        session.add(agreement)
        session.flush()
        record(
            session,
            action="sharing.agreement_registered",
            actor=actor,
            target=("sharing_agreement", agreement.id),
            details={
                "third_party": agreement.third_party,
                "reference": agreement.reference,
                "fields": agreement.fields,
                "expires_on": str(agreement.expires_on),
            },
            source=source_of(request),
        )
        session.commit()
        return AgreementOut.of(agreement, sharing.status_of(agreement, utcnow().date()))

    @patch(
        "/{agreement_id:uuid}",
        operation_id="updateSharingAgreement",
        summary="Extend, narrow or terminate an agreement",
    )
    @uses_database
    def update(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        agreement_id: FromPath[uuid.UUID],
        data: JSONBody[AgreementUpdate],
    ) -> AgreementOut:
        """Change the expiry or the fields, or terminate (``active: false``)."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        agreement = sharing.get_agreement(session, agreement_id)
        changed: dict[str, Any] = {}
        if data.expires_on is not None:
            if data.expires_on < agreement.starts_on:
                raise Problem(422, "expires_on is before starts_on", slug="invalid-dates")
            changed["expires_on"] = str(data.expires_on)
            agreement.expires_on = data.expires_on
        if data.fields is not None:
            agreement.fields = sharing.check_fields(data.fields)
            changed["fields"] = agreement.fields
        if data.active is not None:
            agreement.active = data.active
            changed["active"] = data.active
        record(
            session,
            action="sharing.agreement_changed",
            actor=actor_from(access.principal, session),
            target=("sharing_agreement", agreement.id),
            details={"reference": agreement.reference, **changed},
            source=source_of(request),
        )
        session.commit()
        return AgreementOut.of(agreement, sharing.status_of(agreement, utcnow().date()))


class HoldController(Controller):
    """Legal holds (``privacy:admin`` at the customer's unit)."""

    path = "/api/v1/privacy/legal-holds"
    tags = ["privacy"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listLegalHolds", summary="List legal holds")
    @uses_database
    def list_holds(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromQuery[uuid.UUID | None] = None,
        active: FromQuery[bool] = True,
    ) -> list[HoldOut]:
        """Holds on customers of units where the caller holds ``privacy:admin``."""
        access.require_anywhere(PRIVACY_ADMIN)
        stmt = (
            select(LegalHold)
            .join(Customer, Customer.id == LegalHold.customer_id)
            .where(access.unit_clause(PRIVACY_ADMIN, Customer.unit_id))
        )
        if customer_id is not None:
            stmt = stmt.where(LegalHold.customer_id == customer_id)
        if active:
            stmt = stmt.where(LegalHold.released_at.is_(None))
        return [HoldOut.of(h) for h in session.scalars(stmt.order_by(LegalHold.placed_at))]

    @post("/", operation_id="placeLegalHold", summary="Place a legal hold")
    @uses_database
    def place(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[HoldIn],
    ) -> HoldOut:
        """Stop retention and deletion for a customer's data (a dispute, a regulator's
        inquiry, litigation)."""
        visible_customer(session, access, data.customer_id, PRIVACY_ADMIN)
        if data.case_id is not None:
            from core.cases.models import Case

            case = session.get(Case, (session.info["tenant_id"], data.case_id))
            if case is None or case.customer_id != data.customer_id:
                raise not_found("case", data.case_id)
        actor = actor_from(access.principal, session)
        hold = LegalHold(
            customer_id=data.customer_id,
            case_id=data.case_id,
            reason=data.reason,
            reference=data.reference,
            placed_by=actor.label,
        )
        session.add(hold)
        session.flush()
        record(
            session,
            action="privacy.hold_placed",
            actor=actor,
            target=("customer", data.customer_id),
            details={"hold_id": str(hold.id), "reason": data.reason, "reference": data.reference},
            source=source_of(request),
        )
        session.commit()
        return HoldOut.of(hold)

    @post(
        "/{hold_id:uuid}/release",
        operation_id="releaseLegalHold",
        summary="Release a legal hold",
        status_code=200,
    )
    @uses_database
    def release(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        """End a hold; retention applies again."""
        hold = session.get(LegalHold, (session.info["tenant_id"], hold_id))
        if hold is None:
            raise not_found("legal hold", hold_id)
        visible_customer(session, access, hold.customer_id, PRIVACY_ADMIN)
        if hold.released_at is not None:
            raise Problem(409, "the hold was already released", slug="hold-released")
        actor = actor_from(access.principal, session)
        hold.released_at, hold.released_by = utcnow(), actor.label
        record(
            session,
            action="privacy.hold_released",
            actor=actor,
            target=("customer", hold.customer_id),
            details={"hold_id": str(hold.id)},
            source=source_of(request),
        )
        session.commit()
        return HoldOut.of(hold)


class AssessmentController(Controller):
    """Retention backlog, destruction records and the privacy report (``privacy:admin`` at
    the top of the tree)."""

    path = "/api/v1/privacy"
    tags = ["privacy"]
    dependencies = API_DEPENDENCIES

    @get(
        "/report",
        operation_id="privacyReport",
        summary="Privacy and security assessment",
    )
    @uses_database
    def report(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> dict[str, Any]:
        """Where personal data is stored and how, who may read it in clear, unmasked reads
        and exports in the period (default: the last 30 days), sharing agreements and their
        expiry, data-subject requests, retention backlog, holds and keys."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        now = utcnow()
        end = _aware(until) or now
        # the 30 days before the first representable day start at that day
        start = _aware(since) or max(end, _EARLIEST + timedelta(days=30)) - timedelta(days=30)
        if start > end:
            raise Problem(422, "since is after until", slug="invalid-period")
        return privacy_report(session, access.principal.tenant_id, since=start, until=end, now=now)

    @get(
        "/retention",
        operation_id="retentionBacklog",
        summary="What retention has due",
    )
    @uses_database
    def retention(
        self, session: NamedDependency[Session], access: NamedDependency[Access]
    ) -> dict[str, Any]:
        """Per data class: rows past their retention period, and how many of them are held."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        return {"backlog": backlog(session, access.principal.tenant_id, utcnow())}

    @get(
        "/destruction-records",
        operation_id="listDestructionRecords",
        summary="Destruction records",
    )
    @uses_database
    def destruction_records(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[DestructionOut]:
        """Every destruction batch: class, rule, method, count, held, ids, when, by whom."""
        require_tenant_wide(session, access, PRIVACY_ADMIN)
        return paginate(
            session,
            select(DestructionRecord),
            DestructionRecord.id,
            cursor=cursor,
            limit=limit,
            to_item=DestructionOut.of,
        )


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


ROUTES: list[Any] = [
    ConsentController,
    RequestController,
    SharingController,
    HoldController,
    AssessmentController,
]
