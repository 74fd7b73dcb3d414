"""Applying a manifest: compare it with the database and write only the differences.

One manifest is applied in ONE platform transaction (the audited cross-tenant path, no tenant
filter, so every query here filters on ``tenant_id`` itself and every object gets it set
explicitly): the tenant row, its built-in roles and its contents are committed together or
not at all. Re-applying the same manifest writes nothing and reports ``no changes``.

What a manifest does not list is never deleted: it is reported as ``not in manifest, kept``.
Passwords are set only when a person is created. Cases are created once and afterwards change
only through their workflow. See docs/manifests.md.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.auth.passwords import hash_password
from core.cases.models import Case
from core.customers.models import Customer, Policy
from core.db import Database, new_id
from core.orgs.models import OrgUnit
from core.people.models import Person, Role, RoleAssignment
from core.tenancy.models import Tenant
from tenants.integrations import SectionError, apply_clients, apply_plugin_settings
from tenants.integrations import plugin_registry as build_plugin_registry
from tenants.manifests import Manifest
from tenants.provisioning import get_tenant_by_slug, record_platform_action, seed_tenant
from tenants.schema import ManifestError

__all__ = [
    "ApplyError",
    "ApplyReport",
    "Change",
    "apply_manifest",
    "apply_manifests",
    "customer_id",
]

CUSTOMER_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-5b8e-9a57-1c2f3e4d5a6b")
"""Namespace of the UUIDv5 ids of customers created from manifests (see :func:`customer_id`)."""

CASE_STATE = "state" if "state" in Case.__table__.c else "status"
"""The case's lifecycle column (``status`` until the case lifecycle lands as ``state``)."""

KEPT_LISTED = 10
"""How many rows not in the manifest are named one by one before the report just counts."""

T = TypeVar("T")


def customer_id(tenant_id: uuid.UUID, key: str) -> uuid.UUID:
    """The id of the customer a manifest calls ``key``: a UUIDv5 of tenant and key.

    Customers have no natural unique key (an id number is optional and may be corrected), so
    the manifest's key is folded into the row id; re-applying finds the same row without an
    extra column, and a customer edited through the API stays the same customer.
    """
    return uuid.uuid5(CUSTOMER_NAMESPACE, f"{tenant_id}:{key}")


class ApplyError(RuntimeError):
    """The database refused a manifest that passed validation; nothing was written."""


@dataclass(frozen=True)
class Change:
    """One difference written (or, in a dry run, that would be written)."""

    entity: str
    action: str
    text: str


_PLURAL = {
    "unit": "units",
    "role": "roles",
    "person": "people",
    "grant": "role grants",
    "customer": "customers",
    "policy": "policies",
    "case": "cases",
    "plugin": "plugin settings",
    "client": "API clients",
}


@dataclass
class ApplyReport:
    """What applying one manifest did."""

    slug: str
    source: str
    dry_run: bool = False
    created: bool = False
    tenant_id: uuid.UUID | None = None
    digest_changed: bool = False
    changes: list[Change] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the database was (or, in a dry run, would be) changed."""
        return bool(self.changes)

    def lines(self, *, verbose: bool = False) -> list[str]:
        """The report as lines, each starting with the slug (``huaxia: no changes``).

        A new tenant is summarised in one line unless ``verbose``.
        """
        prefix = f"{self.slug} (dry run): " if self.dry_run else f"{self.slug}: "
        out: list[str] = []
        if not self.changes:
            out.append("no changes")
        elif not self.created and not self.digest_changed:
            out += [
                "manifest unchanged since the last apply, but the database differed from it:",
                *(c.text for c in self.changes),
            ]
        elif self.created and not verbose:
            counts = Counter(c.entity for c in self.changes if c.entity in _PLURAL)
            parts = [f"{n} {_PLURAL[e]}" for e, n in counts.items()]
            out.append("tenant created" + (" with " + ", ".join(parts) if parts else ""))
        else:
            out += [c.text for c in self.changes]
        return [prefix + line for line in [*out, *self.kept, *self.notes]]


def apply_manifest(
    db: Database,
    manifest: Manifest,
    *,
    dry_run: bool = False,
    actor: str = "manifest",
    plugin_registry: Any | None = None,
) -> ApplyReport:
    """Make the database match ``manifest`` in one platform transaction.

    :param dry_run: compute and report the changes, then roll everything back.
    :param actor: who applies it, for the platform audit log.
    :param plugin_registry: the process's ``PluginRegistry`` (None: built when needed).
    :raises ManifestError: a service refused an entry (e.g. plugin settings its schema
        rejects); nothing was written.
    :raises ApplyError: the database refused a write; nothing was written.
    """
    report = ApplyReport(slug=manifest.slug, source=manifest.source, dry_run=dry_run)
    with db.platform_session() as session:
        transaction = session.begin()
        try:
            _Applier(session, manifest, report, actor, plugin_registry).run()
        except SectionError as exc:
            transaction.rollback()
            raise ManifestError([manifest.issue(exc.path, exc.reason)]) from exc
        except SQLAlchemyError as exc:
            transaction.rollback()
            raise ApplyError(
                f"{manifest.source}: {manifest.slug}: the database refused the "
                f"manifest, nothing was written: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    return report


def apply_manifests(
    db: Database,
    manifests: Sequence[Manifest],
    *,
    dry_run: bool = False,
    actor: str = "manifest",
    plugin_registry: Any | None = None,
) -> list[ApplyReport]:
    """Apply several (already validated) manifests, one transaction per tenant.

    The plugin registry, when not given and needed, is built once for all of them.
    """
    own = plugin_registry is None and any(m.plugins for m in manifests)
    registry = build_plugin_registry()[0] if own else plugin_registry
    try:
        return [
            apply_manifest(db, m, dry_run=dry_run, actor=actor, plugin_registry=registry)
            for m in manifests
        ]
    finally:
        if own and registry is not None:
            registry.close()


def _chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _diff(obj: object, wanted: dict[str, Any]) -> list[str]:
    """Set the attributes of ``obj`` that differ from ``wanted``; return their names."""
    changed = []
    for name, value in wanted.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.append(name)
    return changed


class _Applier:
    """Applies one manifest in the given platform session (no commit here)."""

    def __init__(
        self,
        session: Session,
        manifest: Manifest,
        report: ApplyReport,
        actor: str,
        plugin_registry: Any | None,
    ) -> None:
        self.s = session
        self.m = manifest
        self.report = report
        self.actor = actor
        self.plugin_registry = plugin_registry
        self.tenant: Tenant
        self.unit_ids: dict[str, uuid.UUID] = {}
        self.role_ids: dict[str, uuid.UUID] = {}
        self.person_ids: dict[str, uuid.UUID] = {}
        self.customer_ids: dict[str, uuid.UUID] = {}
        self.policy_ids: dict[str, uuid.UUID] = {}

    @property
    def tid(self) -> uuid.UUID:
        return self.tenant.id

    def change(self, entity: str, action: str, text: str) -> None:
        self.report.changes.append(Change(entity, action, text))

    def kept(self, entity: str, names: Iterable[str]) -> None:
        names = sorted(names)
        plural = _PLURAL.get(entity, entity)
        if len(names) > KEPT_LISTED:
            self.report.kept.append(f"{len(names)} {plural} not in manifest, kept")
            return
        self.report.kept += [f"{entity} {n} not in manifest, kept" for n in names]

    def run(self) -> None:
        self._tenant()
        self._units()
        self._roles()
        self._people()
        self._grants()
        self._customers()
        self._policies()
        self._cases()
        for changes, kept, notes in (
            apply_plugin_settings(
                self.s,
                tenant_id=self.tid,
                specs=self.m.plugins,
                unit_ids=self.unit_ids,
                actor=self.actor,
                source=self.m.source,
                registry=self.plugin_registry,
            ),
            apply_clients(
                self.s,
                tenant_id=self.tid,
                slug=self.m.slug,
                specs=self.m.clients,
                unit_ids=self.unit_ids,
                dry_run=self.report.dry_run,
            ),
        ):
            self.report.changes += [Change(c.split()[0], "changed", c) for c in changes]
            self.report.kept += kept
            self.report.notes += notes
        self._finish()

    # --- sections ---------------------------------------------------------------------------

    def _tenant(self) -> None:
        spec = self.m.tenant
        tenant = get_tenant_by_slug(self.s, spec.slug)
        wanted: dict[str, Any] = {
            "name": spec.name,
            "time_zone": spec.time_zone,
            "locale": spec.locale,
        }
        if spec.case_number_format is not None:
            wanted["case_number_format"] = spec.case_number_format
        if tenant is None:
            tenant = Tenant(slug=spec.slug, **wanted)
            self.s.add(tenant)
            self.s.flush()
            self.tenant = tenant
            self.report.created = True
            self.change("tenant", "added", f"tenant {spec.slug} created")
            seed_tenant(self.s, tenant.id)
        else:
            self.tenant = tenant
            for name in _diff(tenant, wanted):
                self.change("tenant", "changed", f"tenant {name} set to {wanted[name]!r}")
            for what in seed_tenant(self.s, tenant.id):  # defaults added to the platform since
                self.change("tenant", "added", f"built-in {what} added")
        self.report.tenant_id = tenant.id

    def _units(self) -> None:
        existing = {
            u.code: u for u in self.s.scalars(select(OrgUnit).where(OrgUnit.tenant_id == self.tid))
        }
        by_id = {u.id: u for u in existing.values()}
        ids = {
            u.code: existing[u.code].id if u.code in existing else new_id() for u in self.m.units
        }
        parent_of: dict[uuid.UUID, uuid.UUID | None] = {u.id: u.parent_id for u in by_id.values()}
        for spec in self.m.units:
            parent_of[ids[spec.code]] = ids[spec.parent] if spec.parent else None
        placed = _paths(parent_of)
        code_of = {uid: u.code for uid, u in by_id.items()} | {v: k for k, v in ids.items()}

        def where(uid: uuid.UUID | None) -> str:
            return f"under {code_of[uid]}" if uid else "at the root"

        for spec in sorted(self.m.units, key=lambda u: placed[ids[u.code]][1]):
            uid = ids[spec.code]
            path, depth = placed[uid]
            unit = existing.get(spec.code)
            if unit is None:
                self.s.add(
                    OrgUnit(
                        tenant_id=self.tid,
                        id=uid,
                        code=spec.code,
                        name=spec.name,
                        name_en=spec.name_en,
                        kind=spec.kind,
                        parent_id=parent_of[uid],
                        path=path,
                        depth=depth,
                    )
                )
                self.change(
                    "unit",
                    "added",
                    f"unit {spec.code} added ({spec.name}, {spec.kind.value}, "
                    f"{where(parent_of[uid])})",
                )
                continue
            if unit.name != spec.name:
                self.change(
                    "unit", "changed", f"unit {spec.code} renamed: {unit.name!r} → {spec.name!r}"
                )
            if unit.name_en != spec.name_en:
                self.change(
                    "unit",
                    "changed",
                    f"unit {spec.code} English name changed: {unit.name_en!r} → {spec.name_en!r}",
                )
            if unit.kind != spec.kind:
                self.change(
                    "unit",
                    "changed",
                    f"unit {spec.code} kind changed: {unit.kind.value} → {spec.kind.value}",
                )
            if unit.parent_id != parent_of[uid]:
                self.change(
                    "unit",
                    "changed",
                    f"unit {spec.code} moved: {where(unit.parent_id)} → {where(parent_of[uid])}",
                )
            _diff(
                unit,
                {
                    "name": spec.name,
                    "name_en": spec.name_en,
                    "kind": spec.kind,
                    "parent_id": parent_of[uid],
                },
            )
        for uid, unit in by_id.items():  # paths below a moved unit follow it
            _diff(unit, {"path": placed[uid][0], "depth": placed[uid][1]})
        self.s.flush()
        self.unit_ids = {code: u.id for code, u in existing.items()} | ids
        self.kept("unit", (f"{c} ({u.name})" for c, u in existing.items() if c not in ids))

    def _roles(self) -> None:
        roles = self.s.scalars(select(Role).where(Role.tenant_id == self.tid))
        existing = {r.key: r for r in roles}
        for spec in self.m.roles:
            perms = sorted(set(spec.permissions))
            role = existing.get(spec.key)
            if role is None:
                role = Role(
                    tenant_id=self.tid,
                    key=spec.key,
                    name_zh=spec.name_zh,
                    name_en=spec.name_en,
                    permissions=perms,
                    builtin=False,
                )
                self.s.add(role)
                existing[spec.key] = role
                self.change("role", "added", f"role {spec.key} added ({spec.name_zh})")
                continue
            old = set(role.permissions)
            changed = _diff(role, {"name_zh": spec.name_zh, "name_en": spec.name_en})
            if sorted(old) != perms:
                role.permissions = perms
                delta = [f"+{p}" for p in perms if p not in old]
                delta += [f"-{p}" for p in sorted(old - set(perms))]
                changed.append("permissions " + " ".join(delta))
            if changed:
                self.change("role", "changed", f"role {spec.key} changed: {', '.join(changed)}")
        self.s.flush()
        self.role_ids = {k: r.id for k, r in existing.items()}
        listed = {r.key for r in self.m.roles}
        self.kept("role", (k for k, r in existing.items() if not r.builtin and k not in listed))

    def _people(self) -> None:
        people = self.s.scalars(select(Person).where(Person.tenant_id == self.tid))
        existing = {p.username: p for p in people}
        for spec in self.m.people:
            wanted = {
                "display_name": spec.display_name,
                "email": spec.email,
                "phone": spec.phone,
                "locale": spec.locale,
            }
            person = existing.get(spec.username)
            if person is None:
                person = Person(
                    tenant_id=self.tid,
                    username=spec.username,
                    password_hash=hash_password(spec.password) if spec.password else None,
                    **wanted,
                )
                self.s.add(person)
                existing[spec.username] = person
                self.change("person", "added", f"person {spec.username} added")
                continue
            changed = _diff(person, wanted)
            if changed:
                self.change(
                    "person", "changed", f"person {spec.username} changed: {', '.join(changed)}"
                )
        self.s.flush()
        self.person_ids = {u: p.id for u, p in existing.items()}
        listed = {p.username for p in self.m.people}
        self.kept("person", (u for u in existing if u not in listed))

    def _grants(self) -> None:
        rows = self.s.execute(
            select(RoleAssignment.person_id, RoleAssignment.role_id, RoleAssignment.unit_id).where(
                RoleAssignment.tenant_id == self.tid
            )
        ).all()
        existing = {(r.person_id, r.role_id, r.unit_id) for r in rows}
        wanted: set[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = set()
        for spec in self.m.people:
            pid = self.person_ids[spec.username]
            for g in spec.roles:
                key = (pid, self.role_ids[g.role], self.unit_ids[g.unit])
                wanted.add(key)
                if key in existing:
                    continue
                self.s.add(
                    RoleAssignment(
                        tenant_id=self.tid, person_id=key[0], role_id=key[1], unit_id=key[2]
                    )
                )
                existing.add(key)
                self.change(
                    "grant", "added", f"person {spec.username}: role {g.role} at {g.unit} granted"
                )
        self.s.flush()
        listed = {self.person_ids[p.username]: p.username for p in self.m.people}
        role_key = {v: k for k, v in self.role_ids.items()}
        unit_code = {v: k for k, v in self.unit_ids.items()}
        for pid, rid, uid in sorted(existing - wanted, key=str):
            if pid in listed:
                self.report.kept.append(
                    f"person {listed[pid]}: role {role_key[rid]} at "
                    f"{unit_code[uid]} not in manifest, kept"
                )

    def _load(self, model: Any, column: Any, keys: Sequence[Any]) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        for chunk in _chunks(list(keys)):
            stmt = select(model).where(model.tenant_id == self.tid, column.in_(chunk))
            for row in self.s.scalars(stmt):
                found[getattr(row, column.key)] = row
        return found

    def _count(self, model: Any) -> int:
        return int(
            self.s.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == self.tid)
            )
            or 0
        )

    def _kept_count(self, model: Any, entity: str, matched: int) -> None:
        extra = self._count(model) - matched
        if extra > 0:
            self.report.kept.append(f"{extra} {_PLURAL[entity]} not in manifest, kept")

    def _customers(self) -> None:
        self.customer_ids = {c.key: customer_id(self.tid, c.key) for c in self.m.customers}
        existing = self._load(Customer, Customer.id, list(self.customer_ids.values()))
        for spec in self.m.customers:
            cid = self.customer_ids[spec.key]
            wanted = {
                "kind": spec.kind,
                "name": spec.name,
                "phone": spec.phone,
                "email": spec.email,
                "id_type": spec.id_type,
                "id_number": spec.id_number,
                "address": spec.address,
                "preferred_channel": spec.preferred_channel,
                "preferred_language": spec.preferred_language,
                "unit_id": self.unit_ids[spec.unit],
            }
            customer = existing.get(cid)
            if customer is None:
                self.s.add(Customer(tenant_id=self.tid, id=cid, **wanted))
                self.change("customer", "added", f"customer {spec.key} added")
                continue
            changed = _diff(customer, wanted)  # field names only: no personal data in reports
            if changed:
                self.change(
                    "customer", "changed", f"customer {spec.key} changed: {', '.join(changed)}"
                )
        self.s.flush()
        self._kept_count(Customer, "customer", len(self.m.customers))

    def _policies(self) -> None:
        existing = self._load(Policy, Policy.number, [p.number for p in self.m.policies])
        for spec in self.m.policies:
            wanted = {
                "product_code": spec.product_code,
                "product_name": spec.product_name,
                "line_of_business": spec.line_of_business,
                "term_months": spec.term_months,
                "start_date": spec.start_date,
                "cooling_off_end": spec.cooling_off_end,
                "status": spec.status,
                "unit_id": self.unit_ids[spec.unit],
                "agent_id": self.person_ids[spec.agent] if spec.agent else None,
                "policyholder_id": self.customer_ids[spec.policyholder],
                "insured_id": self.customer_ids[spec.insured] if spec.insured else None,
            }
            policy = existing.get(spec.number)
            if policy is None:
                policy = Policy(tenant_id=self.tid, id=new_id(), number=spec.number, **wanted)
                self.s.add(policy)
                existing[spec.number] = policy
                self.change("policy", "added", f"policy {spec.number} added")
                continue
            changed = _diff(policy, wanted)
            if changed:
                self.change(
                    "policy", "changed", f"policy {spec.number} changed: {', '.join(changed)}"
                )
        self.s.flush()
        self.policy_ids = {n: p.id for n, p in existing.items()}
        self._kept_count(Policy, "policy", len(self.m.policies))

    def _cases(self) -> None:
        existing = self._load(Case, Case.number, [c.number for c in self.m.cases])
        for spec in self.m.cases:
            wanted = {
                "type": spec.type,
                "channel": spec.channel,
                CASE_STATE: spec.state,
                "subject": spec.subject,
                "description": spec.description,
                "received_at": spec.received_at,
                "unit_id": self.unit_ids[spec.unit],
                "customer_id": self.customer_ids[spec.customer] if spec.customer else None,
                "policy_id": self.policy_ids[spec.policy] if spec.policy else None,
                "assignee_id": self.person_ids[spec.assignee] if spec.assignee else None,
            }
            case = existing.get(spec.number)
            if case is None:
                self.s.add(Case(tenant_id=self.tid, id=new_id(), number=spec.number, **wanted))
                self.change("case", "added", f"case {spec.number} added")
                continue
            differs = [k for k, v in wanted.items() if not _same(getattr(case, k), v)]
            if differs:  # cases move through their workflow (and timeline), not manifests
                self.report.kept.append(
                    f"case {spec.number} differs from the manifest ({', '.join(differs)}), "
                    "kept: cases change through their workflow"
                )
        self.s.flush()
        self._kept_count(Case, "case", len(self.m.cases))

    def _finish(self) -> None:
        if self.tenant.manifest_digest != self.m.digest:
            self.tenant.manifest_digest = self.m.digest
            self.report.digest_changed = True
        if self.report.changes or self.report.digest_changed:
            record_platform_action(
                self.s,
                actor=self.actor,
                action="tenant.manifest.apply",
                tenant_id=self.tid,
                slug=self.m.slug,
                source=self.m.source,
                digest=self.m.digest,
                created=self.report.created,
                changes=[c.text for c in self.report.changes[:500]],
            )
        self.s.flush()


def _same(stored: Any, wanted: Any) -> bool:
    """Equality, reading a naive stored date-time as UTC (SQLite may return naive values)."""
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return bool(stored == wanted)


def _paths(parent_of: dict[uuid.UUID, uuid.UUID | None]) -> dict[uuid.UUID, tuple[str, int]]:
    """Materialized path and depth of every unit, from the final parent of each."""
    placed: dict[uuid.UUID, tuple[str, int]] = {}
    for start in parent_of:
        chain: list[uuid.UUID] = []
        uid: uuid.UUID | None = start
        while uid is not None and uid not in placed:
            if uid in chain or uid not in parent_of:
                raise ApplyError(f"the organization tree would not be a tree at unit {uid}")
            chain.append(uid)
            uid = parent_of[uid]
        base, depth = placed[uid] if uid is not None else ("/", -1)
        for node in reversed(chain):
            depth += 1
            base = f"{base}{node}/"
            placed[node] = (base, depth)
    return placed
