"""Benchmark: what encryption at rest and masking cost when reading a page of 50 customers.

    python bench/privacy.py                        # SQLite in a temporary directory
    python bench/privacy.py --database-url postgresql+psycopg://app@... --admin-url ...

One tenant with 2,000 customers (every personal field filled: name, identity number, phone,
e-mail, address, bank account). A "page" is what ``GET /api/v1/customers`` does below HTTP: a
new tenant session, one query for 50 rows ordered by id (a random cursor), every row rendered
as ``CustomerOut`` and the page encoded to JSON. Measured:

* ``plain`` — the same 2,000 people in a table without encryption (clear text columns), rendered
  without masking: the page before this feature;
* ``masked`` — the real ``customers`` table: six AES-256-GCM decryptions per row, then masking
  (what every caller gets by default);
* ``clear`` — the real table in clear (a caller with ``customers:read_clear`` and a purpose;
  the audit entries written in that case are not included).

The tenant's data key is unwrapped once before measuring (a process keeps it). It prints the
median and p95 per page and the ratios against ``plain``; the target is ``masked / plain`` under
1.5, and the exit status is 1 when it is not met.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import msgspec
from sqlalchemy import MetaData, String, Uuid, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.customers.models import ContactChannel, Customer, CustomerKind
from core.customers.schemas import CustomerOut
from core.db import Database, UTCDateTime, new_id, utcnow
from core.migrate import upgrade
from core.models import import_all_models
from core.orgs.models import UnitKind
from core.orgs.services import create_unit
from core.privacy.keys import attach, key_manager_for
from core.settings import load_settings
from tenants.provisioning import provision_tenant

PAGE = 50
TARGET = 1.5


class _PlainBase(DeclarativeBase):
    metadata = MetaData()


class PlainCustomer(_PlainBase):
    """The customers table as it was: personal fields in clear."""

    __tablename__ = "bench_plain_customers"

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    id_type: Mapped[str | None] = mapped_column(String(32))
    id_number: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(254))
    address: Mapped[str | None] = mapped_column(String(500))
    bank_account: Mapped[str | None] = mapped_column(String(34))
    preferred_channel: Mapped[str] = mapped_column(String(16))
    preferred_language: Mapped[str] = mapped_column(String(16))
    unit_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"


def person(i: int) -> dict[str, str]:
    """Realistic personal fields for customer ``i``."""
    return {
        "name": SURNAMES[i % 20] + GIVEN[(i * 7) % 20] + GIVEN[(i * 13) % 20],
        "id_type": "resident_id",
        "id_number": f"1101051980{i % 12 + 1:02d}{i % 28 + 1:02d}{i % 1000:03d}{i % 10}",
        "phone": f"139{i:08d}",
        "email": f"customer{i}@example.com",
        "address": f"北京市朝阳区建国路{i % 300 + 1}号院{i % 20 + 1}号楼{i % 30 + 1}01室",
        "bank_account": f"6222020200{i:09d}",
    }


def populate(db: Database, count: int) -> tuple[uuid.UUID, uuid.UUID]:
    """One tenant with ``count`` customers in both tables; returns (tenant id, unit id)."""
    tenant = provision_tenant(db, slug=f"bench-privacy-{uuid.uuid4().hex[:6]}", name="Bench")
    with db.tenant_transaction(tenant.id) as s:
        group = create_unit(s, code="G", name="集团", kind=UnitKind.GROUP, parent_id=None)
        unit_id = group.id
        for i in range(count):
            s.add(Customer(kind=CustomerKind.POLICYHOLDER, unit_id=unit_id, **person(i)))
            if i % 500 == 499:
                s.flush()
    now = utcnow()
    with db.platform_transaction() as s:
        for i in range(count):
            s.add(
                PlainCustomer(
                    tenant_id=tenant.id,
                    kind="policyholder",
                    unit_id=unit_id,
                    preferred_channel="phone",
                    preferred_language="zh-CN",
                    created_at=now,
                    updated_at=now,
                    **person(i),
                )
            )
    return tenant.id, unit_id


def _plain_out(c: PlainCustomer) -> CustomerOut:
    return CustomerOut(
        id=c.id,
        kind=CustomerKind(c.kind),
        name=c.name,
        unit_id=c.unit_id,
        id_type=c.id_type,
        id_number=c.id_number,
        phone=c.phone,
        email=c.email,
        address=c.address,
        bank_account=c.bank_account,
        preferred_channel=ContactChannel(c.preferred_channel),
        preferred_language=c.preferred_language,
        masked=False,
        purpose=None,
        anonymized=False,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def page(
    session: Session,
    model: type,
    render: Callable[[object], CustomerOut],
    after: uuid.UUID,
    tenant_id: uuid.UUID,
) -> bytes:
    """One page: 50 rows after ``after``, rendered and encoded."""
    rows: Sequence[object] = session.scalars(
        select(model)
        .where(model.tenant_id == tenant_id, model.id > after)  # type: ignore[attr-defined]
        .order_by(model.id)  # type: ignore[attr-defined]
        .limit(PAGE)
    ).all()
    return msgspec.json.encode({"items": [render(r) for r in rows], "next_cursor": None})


RENDER: dict[str, Callable[[object], CustomerOut]] = {
    "plain": _plain_out,  # type: ignore[dict-item]
    "masked": lambda c: CustomerOut.of(c),  # type: ignore[arg-type]
    "clear": lambda c: CustomerOut.of(c, clear=True, purpose="callback"),  # type: ignore[arg-type]
}


def one_page(db: Database, tenant_id: uuid.UUID, variant: str, after: uuid.UUID) -> float:
    """The time (ms) of one page of ``variant``, in a new tenant session."""
    model: type = PlainCustomer if variant == "plain" else Customer
    start = time.perf_counter()
    with db.tenant_session(tenant_id) as session:
        body = page(session, model, RENDER[variant], after, tenant_id)
    elapsed = (time.perf_counter() - start) * 1000
    assert body
    return elapsed


def measure(
    db: Database, tenant_id: uuid.UUID, ids: list[uuid.UUID], rounds: int, rng: random.Random
) -> dict[str, list[float]]:
    """Per-page times (ms) of every variant, interleaved (each round reads the same page in
    each variant, in a random order), so drift in the machine's load hits them alike."""
    times: dict[str, list[float]] = {v: [] for v in RENDER}
    for _ in range(rounds):
        after = ids[rng.randrange(0, len(ids) - PAGE)]
        order = list(RENDER)
        rng.shuffle(order)
        for variant in order:
            times[variant].append(one_page(db, tenant_id, variant, after))
    return times


def main() -> int:
    """Run the benchmark; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--admin-url", default="")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    import_all_models()
    tmp = Path(tempfile.mkdtemp(prefix="insurdesk-bench-privacy-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    admin = args.admin_url or url
    upgrade(admin, url if args.admin_url else None)
    db = Database(url, admin)
    attach(db, key_manager_for(load_settings(environ={}, var_dir=tmp)))
    _PlainBase.metadata.create_all(db.admin_engine)
    if db.is_postgres:  # the same row-level security as every tenant table
        from core.rls import TENANT_SETTING

        with db.admin_engine.begin() as conn:
            role = db.engine.url.username
            conn.execute(text(f'GRANT SELECT ON bench_plain_customers TO "{role}"'))
            conn.execute(text("ALTER TABLE bench_plain_customers ENABLE ROW LEVEL SECURITY"))
            conn.execute(text("ALTER TABLE bench_plain_customers FORCE ROW LEVEL SECURITY"))
            conn.execute(
                text(
                    "CREATE POLICY tenant_isolation ON bench_plain_customers "
                    f"USING (tenant_id = {TENANT_SETTING}) "
                    f"WITH CHECK (tenant_id = {TENANT_SETTING})"
                )
            )
    tenant_id, _ = populate(db, args.customers)
    if db.is_postgres:  # fresh tables: give the planner statistics, as autovacuum would
        with db.admin_engine.begin() as conn:
            conn.execute(text("ANALYZE customers"))
            conn.execute(text("ANALYZE bench_plain_customers"))
    with db.tenant_session(tenant_id) as s:
        ids = list(s.scalars(select(Customer.id).order_by(Customer.id)))
    rng = random.Random(7)
    measure(db, tenant_id, ids, 30, rng)  # warm: statement caches, the unwrapped data key
    results = measure(db, tenant_id, ids, args.rounds, rng)
    backend = "PostgreSQL" if db.is_postgres else "SQLite"
    print(f"{backend}, {args.customers} customers, pages of {PAGE}, {args.rounds} pages each")
    base = statistics.median(results["plain"])
    for variant, times in results.items():
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[18]
        print(
            f"  {variant:<7} median {median:7.2f} ms   p95 {p95:7.2f} ms   "
            f"ratio {median / base:4.2f}x"
        )
    ratio = statistics.median(results["masked"]) / base
    verdict = "met" if ratio < TARGET else "MISSED"
    print(f"masked / plain = {ratio:.2f}x (target < {TARGET}x): {verdict}")
    db.dispose()
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
