"""The token-state cache (core/auth/state_cache.py, decision 0011) through the live server.

On PostgreSQL the second request with a token reads no token state; every change that could
refuse it or change its permissions counts from the very next request when it is committed in
this process (the notices are ignored in those tests, so only the commit-time invalidation can
explain it), and after PostgreSQL's notice when another connection commits it (raw SQL through
psycopg, which this process's engines never see). On SQLite nothing is cached.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from core.auth.keys import KeyStore
from core.auth.services import disable_client
from core.auth.state_cache import WATCHED_TABLES, AuthStateCache, writes_watched_table
from core.auth.tokens import access_token_claims, sign_access_token
from core.db import Database
from core.people.models import Person, Role, RoleAssignment
from core.people.services import assign_role, create_person, create_role
from core.settings import Settings
from tests.api.conftest import TokenFor, auth, client_token
from tests.auth.helpers import claims_of
from tests.conftest import LiveServer
from tests.factories import PASSWORD, TenantWorld

ME = "/api/v1/me"
UNITS = "/api/v1/org-units"

PersonIds = tuple[uuid.UUID, uuid.UUID, uuid.UUID]
"""A person, their role and its assignment at the group."""


@pytest.fixture(scope="module")
def cache(live_server: LiveServer) -> AuthStateCache:
    """The live app's cache."""
    app: Any = live_server.server.config.app
    found = app.state["auth_cache"]
    assert isinstance(found, AuthStateCache)
    return found


@pytest.fixture
def new_token(
    database: Database, live_server: LiveServer, tenant_a: TenantWorld
) -> Callable[..., str]:
    """New integrator tokens (``org:read``), each of a client of its own, of tenant A unless
    another tenant is given."""

    def make(world: TenantWorld | None = None) -> str:
        return client_token(database, live_server, world or tenant_a, ["org:read"])

    return make


@pytest.fixture
def no_notices(cache: AuthStateCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache ignores PostgreSQL's notices: only this process's commits invalidate it."""
    monkeypatch.setattr(cache, "_on_notify", lambda payload: None)


@contextmanager
def state_reads() -> Iterator[list[str]]:
    """The token-state statements any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "oauth_revoked_tokens" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def raw_sql(settings: Settings, sql: str, *params: Any) -> None:
    """Run ``sql`` through a psycopg connection of its own (owner): another process."""
    url = settings.effective_admin_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll ``check`` until it holds (a notice takes milliseconds to arrive)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def person_with_role(database: Database, world: TenantWorld, permissions: list[str]) -> PersonIds:
    """A new person holding a new role with ``permissions`` at the group: (person, role,
    assignment)."""
    tag = uuid.uuid4().hex[:8]
    with database.tenant_transaction(world.id) as s:
        person = create_person(s, username=f"p_{tag}", display_name=tag, password=PASSWORD)
        role = create_role(
            s, key=f"r_{tag}", name_zh=tag, name_en=tag, permissions=sorted(permissions)
        )
        assignment = assign_role(
            s, person_id=person.id, role_id=role.id, unit_id=world.units["group"].id
        )
        return person.id, role.id, assignment.id


def username_of(database: Database, world: TenantWorld, person_id: uuid.UUID) -> str:
    with database.tenant_session(world.id) as s:
        return str(s.scalar(select(Person.username).where(Person.id == person_id)))


def warm(api: httpx.Client, token: str, path: str = ME) -> None:
    """Two requests: the second is served from the cache where there is one."""
    for _ in range(2):
        assert api.get(path, headers=auth(token)).status_code == 200


# -- served from the cache -----------------------------------------------------------------------


@pytest.mark.postgres_only
def test_the_second_request_with_a_token_reads_no_token_state(
    api: httpx.Client, cache: AuthStateCache, new_token: Callable[..., str]
) -> None:
    assert cache.active
    token = new_token()
    with state_reads() as first:
        assert api.get(ME, headers=auth(token)).status_code == 200
    assert len(first) == 1
    hits = cache.stats["hits"]
    with state_reads() as reads:
        for _ in range(3):
            assert api.get(UNITS, headers=auth(token)).status_code == 200
    assert reads == []
    assert cache.stats["hits"] >= hits + 3


@pytest.mark.sqlite_only
def test_sqlite_reads_the_token_state_on_every_request(
    api: httpx.Client, cache: AuthStateCache, new_token: Callable[..., str]
) -> None:
    assert not cache.active
    token = new_token()
    with state_reads() as reads:
        for _ in range(3):
            assert api.get(ME, headers=auth(token)).status_code == 200
    assert len(reads) == 3
    assert len(cache) == 0


# -- changes made in this process count from the next request ------------------------------------


@pytest.mark.usefixtures("no_notices")
def test_a_revoked_token_is_refused_on_the_next_request(
    database: Database, api: httpx.Client, tenant_a: TenantWorld, new_token: Callable[..., str]
) -> None:
    token = new_token()
    warm(api, token)
    with database.tenant_transaction(tenant_a.id) as s:  # what /oauth/revoke writes
        from core.auth.models import RevokedToken

        s.add(RevokedToken(jti=claims_of(token)["jti"], expires_at=_in(900)))
    refused = api.get(ME, headers=auth(token))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "token revoked"
    assert api.get(ME, headers=auth(new_token())).status_code == 200


@pytest.mark.usefixtures("no_notices")
def test_a_disabled_client_is_refused_on_the_next_request(
    database: Database, api: httpx.Client, tenant_a: TenantWorld, new_token: Callable[..., str]
) -> None:
    token = new_token()
    warm(api, token)
    with database.tenant_transaction(tenant_a.id) as s:
        disable_client(s, claims_of(token)["client_id"])
    refused = api.get(ME, headers=auth(token))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "client disabled"


def _deactivate_person(s: Session, world: TenantWorld, ids: PersonIds) -> None:
    person = s.get(Person, (world.id, ids[0]))
    assert person is not None
    person.active = False


def _remove_assignment(s: Session, world: TenantWorld, ids: PersonIds) -> None:
    s.delete(s.get(RoleAssignment, (world.id, ids[2])))


def _narrow_role(s: Session, world: TenantWorld, ids: PersonIds) -> None:
    role = s.get(Role, (world.id, ids[1]))
    assert role is not None
    role.permissions = ["customers:read"]


@pytest.mark.usefixtures("no_notices")
@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        (_deactivate_person, 401, "person disabled"),
        (_remove_assignment, 403, None),
        (_narrow_role, 403, None),
    ],
    ids=["person-deactivated", "assignment-removed", "role-narrowed"],
)
def test_a_change_to_a_person_or_role_counts_from_the_next_request(
    database: Database,
    api: httpx.Client,
    tenant_a: TenantWorld,
    person_token: TokenFor,
    change: Callable[[Session, TenantWorld, PersonIds], None],
    status: int,
    detail: str | None,
) -> None:
    ids = person_with_role(database, tenant_a, ["org:read", "customers:read"])
    token = person_token(tenant_a, username_of(database, tenant_a, ids[0]))
    warm(api, token, UNITS)
    with database.tenant_transaction(tenant_a.id) as s:
        change(s, tenant_a, ids)
    answer = api.get(UNITS, headers=auth(token))
    assert answer.status_code == status
    if detail is not None:
        assert answer.json()["detail"] == detail


# -- changes made by another process count once the notice arrives -----------------------------


@pytest.mark.postgres_only
def test_a_change_committed_by_another_connection_counts_once_its_notice_arrives(
    settings: Settings, api: httpx.Client, new_token: Callable[..., str]
) -> None:
    token = new_token()
    warm(api, token)
    with state_reads() as reads:
        assert api.get(ME, headers=auth(token)).status_code == 200
    assert reads == []  # served from the cache
    raw_sql(
        settings,
        "UPDATE oauth_clients SET active = false WHERE client_id = %s",
        claims_of(token)["client_id"],
    )
    eventually(
        lambda: api.get(ME, headers=auth(token)).status_code == 401,
        "the change made by another connection was never seen",
    )
    assert api.get(ME, headers=auth(token)).json()["detail"] == "client disabled"


@pytest.mark.postgres_only
def test_a_change_in_one_tenant_keeps_the_other_tenants_entries(
    settings: Settings,
    api: httpx.Client,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    cache: AuthStateCache,
    new_token: Callable[..., str],
) -> None:
    token_a, token_b = new_token(), new_token(tenant_b)
    warm(api, token_a)
    warm(api, token_b)
    assert tenant_a.id in cache._entries and tenant_b.id in cache._entries
    raw_sql(
        settings,
        "UPDATE people SET display_name = display_name WHERE tenant_id = %s",
        tenant_a.id,
    )
    eventually(lambda: tenant_a.id not in cache._entries, "tenant A's entries were kept")
    assert tenant_b.id in cache._entries
    with state_reads() as reads:
        assert api.get(ME, headers=auth(token_b)).status_code == 200
    assert reads == []  # B still served from the cache


def test_another_tenants_cached_state_never_serves_a_token(
    database: Database,
    live_server: LiveServer,
    api: httpx.Client,
    tenant_a: TenantWorld,
    tenant_b: TenantWorld,
    new_token: Callable[..., str],
) -> None:
    token_b = new_token(tenant_b)
    warm(api, token_b)
    claims = claims_of(token_b)
    forged = access_token_claims(
        issuer=live_server.url,
        ttl=900,
        tenant_id=tenant_a.id,  # the same jti and client, another tenant
        tenant_slug=tenant_a.tenant.slug,
        kind="client",
        subject=claims["sub"],
        client_id=claims["client_id"],
        scope=claims["scope"],
    )
    forged["jti"] = claims["jti"]
    token = sign_access_token(forged, KeyStore(database).signing_key())
    refused = api.get(ME, headers=auth(token))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "client disabled"  # no such client in tenant A


# -- without its listener, nothing is served from the cache --------------------------------------


@pytest.mark.postgres_only
def test_while_the_listener_is_down_every_request_reads_the_token_state(
    database: Database,
    api: httpx.Client,
    tenant_a: TenantWorld,
    cache: AuthStateCache,
    new_token: Callable[..., str],
) -> None:
    token = new_token()
    warm(api, token)
    cache.stop_listening()  # the connection is lost, say
    try:
        assert not cache.active
        with state_reads() as reads:
            for _ in range(3):
                assert api.get(ME, headers=auth(token)).status_code == 200
        assert len(reads) == 3
        with database.tenant_transaction(tenant_a.id) as s:
            disable_client(s, claims_of(token)["client_id"])
        assert api.get(ME, headers=auth(token)).status_code == 401
    finally:
        cache.start()
    assert cache.active
    assert tenant_a.id not in cache._entries  # dropped when it listened again


# -- the cache itself ------------------------------------------------------------------------------


def _in(seconds: int) -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def _claims(tenant_id: uuid.UUID, jti: str = "j") -> dict[str, Any]:
    return {
        "tenant": str(tenant_id),
        "jti": jti,
        "client_id": "c",
        "sub": "c",
        "kind": "client",
        "scope": "org:read",
    }


@pytest.fixture
def own_cache(database: Database) -> Iterator[Callable[..., AuthStateCache]]:
    """Caches of the test's own, started (listening on PostgreSQL) and closed afterwards."""
    made: list[AuthStateCache] = []

    def make(**kwargs: Any) -> AuthStateCache:
        made.append(AuthStateCache(database, **kwargs).start())
        return made[-1]

    yield make
    for c in made:
        c.close()


def _access(tenant_id: uuid.UUID) -> tuple[Any, Any]:
    from core.auth.guards import Access
    from core.auth.principal import Principal

    principal = Principal(tenant_id=tenant_id, subject="c", kind="client", scopes=frozenset())
    return principal, Access(principal, [])


@pytest.mark.postgres_only
def test_a_load_racing_with_an_invalidation_is_not_kept(
    own_cache: Callable[..., AuthStateCache],
) -> None:
    cache = own_cache()
    tenant = uuid.uuid4()
    generation = cache.generation(tenant)
    cache.invalidate(tenant)  # a change committed while the state was read
    assert not cache.put(_claims(tenant), generation, *_access(tenant))
    assert cache.get(_claims(tenant)) is None
    assert cache.put(_claims(tenant), cache.generation(tenant), *_access(tenant))
    assert cache.get(_claims(tenant)) is not None
    generation = cache.generation(tenant)
    cache.invalidate()  # every tenant (the listener reconnected)
    assert not cache.put(_claims(tenant, "k"), generation, *_access(tenant))


@pytest.mark.postgres_only
def test_entries_are_bounded_in_number_and_age(
    own_cache: Callable[..., AuthStateCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = own_cache(max_entries=3, max_age=60)
    tenant = uuid.uuid4()
    for jti in "abc":
        assert cache.put(_claims(tenant, jti), cache.generation(tenant), *_access(tenant))
    assert len(cache) == 3
    assert cache.put(_claims(tenant, "d"), cache.generation(tenant), *_access(tenant))
    assert len(cache) <= 3
    assert cache.get(_claims(tenant, "d")) is not None
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert cache.get(_claims(tenant, "d")) is None  # too old


def test_sqlite_or_an_unstarted_cache_keeps_nothing(database: Database) -> None:
    cache = AuthStateCache(database)
    tenant = uuid.uuid4()
    assert not cache.active
    assert not cache.put(_claims(tenant), cache.generation(tenant), *_access(tenant))
    assert cache.get(_claims(tenant)) is None
    off = AuthStateCache(database, max_age=0).start()
    assert not off.active
    off.close()


def test_which_statements_mark_a_write() -> None:
    assert writes_watched_table("UPDATE people SET active=%(active)s WHERE people.id = %(id)s")
    assert writes_watched_table('INSERT INTO "oauth_revoked_tokens" (tenant_id) VALUES ($1)')
    assert writes_watched_table("delete from role_assignments where id = ?")
    assert writes_watched_table("WITH x AS (UPDATE roles SET key = 'a' RETURNING id) SELECT 1")
    assert not writes_watched_table("SELECT people.active FROM people WHERE id = $1")
    assert not writes_watched_table("INSERT INTO audit_log (x) SELECT 1 FROM people")
    assert not writes_watched_table("UPDATE people_archive SET x = 1")


@pytest.mark.postgres_only
def test_every_watched_table_has_the_notify_trigger(database: Database) -> None:
    with database.platform_session() as s:
        tables = s.scalars(
            text(
                "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgname = 'trg_auth_state_notify'"
            )
        ).all()
    assert sorted(tables) == sorted(WATCHED_TABLES)
