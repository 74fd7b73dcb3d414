from sqlalchemy import select, text

from core.db import Database
from core.orgs.models import OrgUnit
from tests.factories import make_tenant


def test_orm_filter_and_rls(database: Database) -> None:
    a = make_tenant(database, "a")
    b = make_tenant(database, "b")
    with database.tenant_transaction(a.id) as s:
        units = s.scalars(select(OrgUnit)).all()
        assert {u.tenant_id for u in units} == {a.id}
        if database.is_postgres:
            raw = s.execute(text("SELECT tenant_id FROM org_units")).scalars().all()
            assert set(raw) == {a.id}
    assert b.id != a.id
