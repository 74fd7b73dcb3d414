"""HTTP API of customers and policies. Visibility follows the owning unit."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.concurrency import (
    IfMatch,
    check_if_match,
    claim_unchanged,
    requires_if_match,
    timestamp_etag,
)
from core.api.deps import API_DEPENDENCIES
from core.api.handlers import uses_database
from core.api.pagination import Page, paginate
from core.api.problems import Problem
from core.audit import actor_from, record
from core.audit.services import source_of
from core.auth.guards import Access
from core.customers import flows, services
from core.customers.models import Customer, CustomerKind, LineOfBusiness, Policy
from core.customers.schemas import (
    CustomerCreate,
    CustomerOut,
    CustomerUpdate,
    PolicyCreate,
    PolicyOut,
)
from core.db import utcnow
from core.orgs.services import get_unit
from core.people.services import get_person
from core.privacy.purposes import PurposeHeader
from core.privacy.sharing import require_agreement


def _with_etag(customer: Customer, out: CustomerOut) -> Response[CustomerOut]:
    return Response(out, headers={"ETag": timestamp_etag(customer.id, customer.updated_at)})


def _same(customer: Customer) -> Customer:
    return customer


EXPORT_MAX = 10_000
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""Query strings the database can compare (no NUL or other control characters)."""


class CustomerController(Controller):
    """Customers of the units the caller may read (``customers:read``)."""

    path = "/api/v1/customers"
    tags = ["customers"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listCustomers", summary="List customers")
    @uses_database
    def list_customers(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        purpose: PurposeHeader = None,
        kind: FromQuery[CustomerKind | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
        phone: Annotated[
            str | None,
            Parameter(max_length=32, pattern=PRINTABLE, description="Exact phone number."),
        ] = None,
        id_number: Annotated[
            str | None,
            Parameter(max_length=64, pattern=PRINTABLE, description="Exact identity number."),
        ] = None,
        name: Annotated[str | None, Parameter(max_length=200, pattern=PRINTABLE)] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[CustomerOut]:
        """Customers owned by visible units; filter by kind, unit, exact phone, identity number
        or name. Personal fields are stored encrypted: the exact-match filters compare keyed
        blind indexes, so no row is decrypted to search. Personal fields come back masked
        unless ``X-Purpose`` is declared by a caller with ``customers:read_clear`` (audited)."""
        access.require_anywhere("customers:read")
        stmt = select(Customer).where(access.unit_clause("customers:read", Customer.unit_id))
        if kind is not None:
            stmt = stmt.where(Customer.kind == kind)
        if unit_id is not None:
            stmt = stmt.where(Customer.unit_id == unit_id)
        if phone:
            stmt = stmt.where(Customer.phone_bidx.in_(services.indexes_of(session, "phone", phone)))
        if id_number:
            stmt = stmt.where(
                Customer.id_number_bidx.in_(services.indexes_of(session, "id_number", id_number))
            )
        if name:
            stmt = stmt.where(Customer.name_bidx.in_(services.indexes_of(session, "name", name)))
        page = paginate(session, stmt, Customer.id, cursor=cursor, limit=limit, to_item=_same)
        items = flows.disclose(
            session, access, page.items, purpose=purpose, source=source_of(request)
        )
        session.commit()
        return Page(items=items, next_cursor=page.next_cursor)

    @get(
        "/export",
        operation_id="exportCustomers",
        summary="Export customers (masked unless under a sharing agreement)",
    )
    @uses_database
    def export_customers(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        format: Annotated[str, Parameter(pattern=r"^(csv|json)$")] = "csv",
        agreement_id: Annotated[
            uuid.UUID | None,
            Parameter(
                description="The sharing agreement the export is made under: its fields go out "
                "in clear (others are left out); refused when the agreement expired."
            ),
        ] = None,
        kind: FromQuery[CustomerKind | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
    ) -> Response[Any]:
        """Customers of visible units as CSV or JSON. Personal fields are **masked** by
        default; an export for a third party names its sharing agreement (``agreement_id``),
        which must be in force and covers which fields go out in clear (``customers:read_clear``
        needed; only customers of units where it holds). Every export is audited."""
        access.require_anywhere("customers:read")
        stmt = select(Customer).where(
            access.unit_clause("customers:read", Customer.unit_id),
            Customer.anonymized_at.is_(None),
        )
        if kind is not None:
            stmt = stmt.where(Customer.kind == kind)
        if unit_id is not None:
            stmt = stmt.where(Customer.unit_id == unit_id)
        agreement = None
        if agreement_id is not None:
            access.require_anywhere(flows.READ_CLEAR)
            agreement = require_agreement(session, agreement_id, (), utcnow().date())
            stmt = stmt.where(access.unit_clause(flows.READ_CLEAR, Customer.unit_id))
        rows = session.scalars(stmt.order_by(Customer.id).limit(EXPORT_MAX + 1)).all()
        if len(rows) > EXPORT_MAX:
            raise Problem(
                413, f"more than {EXPORT_MAX} customers: narrow the export", slug="export-too-large"
            )
        document = flows.export_rows(rows, clear_fields=agreement.fields if agreement else None)
        record(
            session,
            action="customer.exported",
            actor=actor_from(access.principal, session),
            target=("customer_export", agreement.reference if agreement else "masked"),
            details={
                "format": format,
                "customers": len(rows),
                "clear_fields": list(agreement.fields) if agreement else [],
                "agreement": agreement.reference if agreement else None,
                "third_party": agreement.third_party if agreement else None,
                "purpose": agreement.purpose if agreement else None,
            },
            source=source_of(request),
        )
        session.commit()
        name = f"customers-{utcnow():%Y%m%dT%H%M%SZ}.{format}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if format == "csv":
            return Response(
                flows.export_csv(document), media_type="text/csv; charset=utf-8", headers=headers
            )
        return Response(
            {"customers": document, "agreement": agreement.reference if agreement else None},
            headers=headers,
        )

    @get(
        "/{customer_id:uuid}",
        operation_id="getCustomer",
        summary="One customer",
    )
    @uses_database
    def get_customer(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromPath[uuid.UUID],
        purpose: PurposeHeader = None,
    ) -> Response[CustomerOut]:
        """A customer by id (404 outside the caller's units), with its ``ETag``; masked unless
        ``X-Purpose`` is declared with ``customers:read_clear`` at its unit (audited)."""
        customer = services.get_customer(session, customer_id)
        access.require("customers:read", get_unit(session, customer.unit_id), hide=True)
        out = flows.disclose_one(
            session, access, customer, purpose=purpose, source=source_of(request)
        )
        session.commit()
        return _with_etag(customer, out)

    @post("/", operation_id="createCustomer", summary="Create a customer")
    @uses_database
    def create_customer(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[CustomerCreate],
        purpose: PurposeHeader = None,
    ) -> CustomerOut:
        """Create a customer at a unit where the caller holds ``customers:write``; the answer
        is masked like any read."""
        access.require("customers:write", get_unit(session, data.unit_id))
        customer = Customer(
            kind=data.kind,
            name=data.name,
            unit_id=data.unit_id,
            id_type=data.id_type,
            id_number=data.id_number,
            phone=data.phone,
            email=data.email,
            address=data.address,
            bank_account=data.bank_account,
            preferred_channel=data.preferred_channel,
            preferred_language=data.preferred_language,
        )
        session.add(customer)
        session.flush()
        flows.record_change(
            session,
            actor_from(access.principal, session),
            customer,
            dict.fromkeys(flows.TRACKED_FIELDS),
            action="customer.created",
            source=source_of(request),
        )
        out = flows.disclose_one(
            session, access, customer, purpose=purpose, source=source_of(request)
        )
        session.commit()
        return out

    @patch(
        "/{customer_id:uuid}",
        operation_id="updateCustomer",
        summary="Change a customer",
    )
    @uses_database
    def update_customer(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromPath[uuid.UUID],
        data: JSONBody[CustomerUpdate],
        if_match: IfMatch = None,
        purpose: PurposeHeader = None,
    ) -> Response[CustomerOut]:
        """Change a customer's name, identity or contact details (``If-Match`` required of
        integrators: 428 without it, 412 when stale). The audit log gets each changed field's
        before and after, masked and fingerprinted."""
        customer = services.get_customer(session, customer_id)
        unit = get_unit(session, customer.unit_id)
        access.require("customers:read", unit, hide=True)
        access.require("customers:write", unit)
        if customer.anonymized_at is not None:
            raise Problem(409, "the customer was anonymized", slug="customer-anonymized")
        check_if_match(
            if_match,
            timestamp_etag(customer.id, customer.updated_at),
            required=requires_if_match(access.principal),
            what="the customer",
        )
        claim_unchanged(session, customer, what="the customer")
        before = flows.snapshot(customer)
        for field in (
            "name",
            "phone",
            "email",
            "address",
            "bank_account",
            "id_type",
            "id_number",
            "preferred_channel",
            "preferred_language",
        ):
            value = getattr(data, field)
            if value is not None:
                setattr(customer, field, value)
        session.flush()
        flows.record_change(
            session,
            actor_from(access.principal, session),
            customer,
            before,
            source=source_of(request),
        )
        out = flows.disclose_one(
            session, access, customer, purpose=purpose, source=source_of(request)
        )
        session.commit()
        return _with_etag(customer, out)


class PolicyController(Controller):
    """Policies of the units the caller may read (``policies:read``)."""

    path = "/api/v1/policies"
    tags = ["customers"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listPolicies", summary="List policies")
    @uses_database
    def list_policies(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        customer_id: FromQuery[uuid.UUID | None] = None,
        unit_id: FromQuery[uuid.UUID | None] = None,
        number: Annotated[str | None, Parameter(max_length=64, pattern=PRINTABLE)] = None,
        line_of_business: FromQuery[LineOfBusiness | None] = None,
        started_after: FromQuery[date | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[PolicyOut]:
        """Policies owned by visible units, filtered."""
        access.require_anywhere("policies:read")
        stmt = select(Policy).where(access.unit_clause("policies:read", Policy.unit_id))
        if customer_id is not None:
            stmt = stmt.where(
                (Policy.policyholder_id == customer_id) | (Policy.insured_id == customer_id)
            )
        if unit_id is not None:
            stmt = stmt.where(Policy.unit_id == unit_id)
        if number:
            stmt = stmt.where(Policy.number == number)
        if line_of_business is not None:
            stmt = stmt.where(Policy.line_of_business == line_of_business)
        if started_after is not None:
            stmt = stmt.where(Policy.start_date > started_after)
        return paginate(session, stmt, Policy.id, cursor=cursor, limit=limit, to_item=PolicyOut.of)

    @get("/{policy_id:uuid}", operation_id="getPolicy", summary="One policy")
    @uses_database
    def get_policy(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        policy_id: FromPath[uuid.UUID],
    ) -> PolicyOut:
        """A policy by id (404 outside the caller's units)."""
        policy = services.get_policy(session, policy_id)
        access.require("policies:read", get_unit(session, policy.unit_id), hide=True)
        return PolicyOut.of(policy)

    @post("/", operation_id="createPolicy", summary="Create a policy")
    @uses_database
    def create_policy(
        self,
        session: NamedDependency[Session],
        access: NamedDependency[Access],
        data: JSONBody[PolicyCreate],
    ) -> PolicyOut:
        """Create a policy; the customers and agent must exist in the tenant."""
        access.require("policies:write", get_unit(session, data.unit_id))
        services.get_customer(session, data.policyholder_id)
        if data.insured_id is not None:
            services.get_customer(session, data.insured_id)
        if data.agent_id is not None:
            get_person(session, data.agent_id)
        if data.cooling_off_end is not None and data.cooling_off_end < data.start_date:
            raise Problem(422, "cooling_off_end is before start_date", slug="invalid-dates")
        services.ensure_policy_number_free(session, data.number)
        policy = Policy(
            number=data.number,
            product_code=data.product_code,
            product_name=data.product_name,
            line_of_business=data.line_of_business,
            term_months=data.term_months,
            start_date=data.start_date,
            unit_id=data.unit_id,
            policyholder_id=data.policyholder_id,
            insured_id=data.insured_id,
            agent_id=data.agent_id,
            cooling_off_end=data.cooling_off_end
            or services.default_cooling_off_end(
                data.line_of_business, data.start_date, data.term_months
            ),
        )
        session.add(policy)
        session.commit()
        return PolicyOut.of(policy)


ROUTES = [CustomerController, PolicyController]
