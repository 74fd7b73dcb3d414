"""Factories for tests: a tenant with a small tree, people in roles, customers and policies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from core.cases.models import Case, CaseType, Channel
from core.customers.models import Customer, CustomerKind, LineOfBusiness, Policy
from core.db import Database
from core.orgs.models import OrgUnit, UnitKind
from core.orgs.services import create_unit
from core.people.models import Person
from core.people.services import assign_role, create_person, get_role_by_key
from core.plugins.registry import PluginRegistry, build_registry
from core.plugins.services import Actor, apply_config
from core.tenancy.models import Tenant
from tenants.provisioning import provision_tenant
from tests.auth.rows import add_auth_rows
from tests.cases.rows import add_case_rows
from tests.integrators.rows import add_integrator_rows
from tests.notifications.rows import add_background_rows
from tests.privacy.rows import add_privacy_rows

PASSWORD = "correct horse battery staple"


@dataclass
class TenantWorld:
    """A provisioned tenant: group → company → two branches, people, a customer, a policy."""

    tenant: Tenant
    units: dict[str, OrgUnit] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)

    @property
    def id(self) -> uuid.UUID:
        """The tenant id."""
        return self.tenant.id


def make_tenant(db: Database, prefix: str = "t") -> TenantWorld:
    """Provision a tenant with a unique slug and a small, realistic world in it."""
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    tenant = provision_tenant(db, slug=slug, name=f"Tenant {slug}")
    world = TenantWorld(tenant=tenant)
    with db.tenant_transaction(tenant.id) as s:
        group = create_unit(s, code="GRP", name="集团", kind=UnitKind.GROUP, parent_id=None)
        company = create_unit(
            s, code="CO", name="财险公司", kind=UnitKind.COMPANY, parent_id=group.id
        )
        bj = create_unit(
            s, code="BJ", name="北京分公司", kind=UnitKind.BRANCH, parent_id=company.id
        )
        sh = create_unit(
            s, code="SH", name="上海分公司", kind=UnitKind.BRANCH, parent_id=company.id
        )
        world.units = {"group": group, "company": company, "bj": bj, "sh": sh}
        for username, role, unit in [
            ("admin", "tenant_admin", group),
            ("agent_bj", "agent", bj),
            ("agent_sh", "agent", sh),
            ("auditor", "auditor", group),
        ]:
            person = create_person(s, username=username, display_name=username, password=PASSWORD)
            role_obj = get_role_by_key(s, role)
            assert role_obj is not None
            assign_role(s, person_id=person.id, role_id=role_obj.id, unit_id=unit.id)
            world.people[username] = person
        for key, unit in [("bj", bj), ("sh", sh)]:
            customer = Customer(
                kind=CustomerKind.POLICYHOLDER,
                name=f"客户{key}",
                phone="13800138000",
                unit_id=unit.id,
            )
            s.add(customer)
            s.flush()
            policy = Policy(
                number=f"P-{key}-{uuid.uuid4().hex[:6]}",
                product_code="L01",
                product_name="终身寿险",
                line_of_business=LineOfBusiness.LIFE,
                term_months=240,
                start_date=date(2026, 1, 5),
                cooling_off_end=date(2026, 1, 20),
                unit_id=unit.id,
                policyholder_id=customer.id,
                agent_id=world.people[f"agent_{key}"].id,
            )
            s.add(policy)
            s.flush()
            world.customers[key] = customer
            world.policies[key] = policy
            case = Case(
                number=f"TS-2026-{key}-{uuid.uuid4().hex[:6]}",
                type=CaseType.COMPLAINT,
                channel=Channel.HOTLINE,
                subject=f"投诉 {key}",
                unit_id=unit.id,
                customer_id=customer.id,
                policy_id=policy.id,
                assignee_id=world.people[f"agent_{key}"].id,
            )
            s.add(case)
            s.flush()
            world.cases[key] = case
            add_case_rows(s, case=case, person_id=world.people[f"agent_{key}"].id)
        add_auth_rows(s, person_id=world.people["agent_bj"].id, unit_id=bj.id)
        add_background_rows(s, case_id=world.cases["bj"].id)
        add_privacy_rows(
            s, customer_id=world.customers["sh"].id, unit_id=sh.id, case_id=world.cases["sh"].id
        )
        add_integrator_rows(s)
        apply_config(
            s,
            _registry(),
            plugin="group_policy",
            unit=group,
            enabled=True,
            settings={},
            actor=Actor("factory", world.people["admin"].id),
        )
    return world


@lru_cache(maxsize=1)
def _registry() -> PluginRegistry:
    return build_registry(entry_points=False)
