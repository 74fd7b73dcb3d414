"""HTTP API of customers and policies. Visibility follows the owning unit."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from litestar import Controller, Response, get, patch, post
from litestar.params import Parameter
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
from core.api.pagination import Page, paginate
from core.api.problems import Problem
from core.auth.guards import Access
from core.customers import services
from core.customers.models import Customer, CustomerKind, LineOfBusiness, Policy
from core.customers.schemas import (
    CustomerCreate,
    CustomerOut,
    CustomerUpdate,
    PolicyCreate,
    PolicyOut,
)
from core.orgs.services import get_unit
from core.people.services import get_person


def _with_etag(customer: Customer) -> Response[CustomerOut]:
    return Response(
        CustomerOut.of(customer),
        headers={"ETag": timestamp_etag(customer.id, customer.updated_at)},
    )


class CustomerController(Controller):
    """Customers of the units the caller may read (``customers:read``)."""

    path = "/api/v1/customers"
    tags = ["customers"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listCustomers", summary="List customers", sync_to_thread=True)
    def list_customers(
        self,
        session: Session,
        access: Access,
        kind: CustomerKind | None = None,
        unit_id: uuid.UUID | None = None,
        phone: str | None = None,
        name: Annotated[str | None, Parameter(max_length=200)] = None,
        cursor: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> Page[CustomerOut]:
        """Customers owned by visible units; filter by kind, unit, exact phone or name."""
        access.require_anywhere("customers:read")
        stmt = select(Customer).where(access.unit_clause("customers:read", Customer.unit_id))
        if kind is not None:
            stmt = stmt.where(Customer.kind == kind)
        if unit_id is not None:
            stmt = stmt.where(Customer.unit_id == unit_id)
        if phone:
            stmt = stmt.where(Customer.phone == phone)
        if name:
            stmt = stmt.where(Customer.name == name)
        return paginate(
            session, stmt, Customer.id, cursor=cursor, limit=limit, to_item=CustomerOut.of
        )

    @get(
        "/{customer_id:uuid}",
        operation_id="getCustomer",
        summary="One customer",
        sync_to_thread=True,
    )
    def get_customer(
        self, session: Session, access: Access, customer_id: uuid.UUID
    ) -> Response[CustomerOut]:
        """A customer by id (404 outside the caller's units), with its ``ETag``."""
        customer = services.get_customer(session, customer_id)
        access.require("customers:read", get_unit(session, customer.unit_id), hide=True)
        return _with_etag(customer)

    @post("/", operation_id="createCustomer", summary="Create a customer", sync_to_thread=True)
    def create_customer(
        self, session: Session, access: Access, data: CustomerCreate
    ) -> CustomerOut:
        """Create a customer at a unit where the caller holds ``customers:write``."""
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
            preferred_channel=data.preferred_channel,
            preferred_language=data.preferred_language,
        )
        session.add(customer)
        session.commit()
        return CustomerOut.of(customer)

    @patch(
        "/{customer_id:uuid}",
        operation_id="updateCustomer",
        summary="Change a customer",
        sync_to_thread=True,
    )
    def update_customer(
        self,
        session: Session,
        access: Access,
        customer_id: uuid.UUID,
        data: CustomerUpdate,
        if_match: IfMatch = None,
    ) -> Response[CustomerOut]:
        """Change a customer's name or contact details (``If-Match`` required of integrators:
        428 without it, 412 when stale)."""
        customer = services.get_customer(session, customer_id)
        unit = get_unit(session, customer.unit_id)
        access.require("customers:read", unit, hide=True)
        access.require("customers:write", unit)
        check_if_match(
            if_match,
            timestamp_etag(customer.id, customer.updated_at),
            required=requires_if_match(access.principal),
            what="the customer",
        )
        claim_unchanged(session, customer, what="the customer")
        for field in (
            "name",
            "phone",
            "email",
            "address",
            "preferred_channel",
            "preferred_language",
        ):
            value = getattr(data, field)
            if value is not None:
                setattr(customer, field, value)
        session.commit()
        return _with_etag(customer)


class PolicyController(Controller):
    """Policies of the units the caller may read (``policies:read``)."""

    path = "/api/v1/policies"
    tags = ["customers"]
    dependencies = API_DEPENDENCIES

    @get("/", operation_id="listPolicies", summary="List policies", sync_to_thread=True)
    def list_policies(
        self,
        session: Session,
        access: Access,
        customer_id: uuid.UUID | None = None,
        unit_id: uuid.UUID | None = None,
        number: str | None = None,
        line_of_business: LineOfBusiness | None = None,
        started_after: date | None = None,
        cursor: str | None = None,
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

    @get("/{policy_id:uuid}", operation_id="getPolicy", summary="One policy", sync_to_thread=True)
    def get_policy(self, session: Session, access: Access, policy_id: uuid.UUID) -> PolicyOut:
        """A policy by id (404 outside the caller's units)."""
        policy = services.get_policy(session, policy_id)
        access.require("policies:read", get_unit(session, policy.unit_id), hide=True)
        return PolicyOut.of(policy)

    @post("/", operation_id="createPolicy", summary="Create a policy", sync_to_thread=True)
    def create_policy(self, session: Session, access: Access, data: PolicyCreate) -> PolicyOut:
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
