"""Shared fixtures: real SQLite and real PostgreSQL databases, migrated with Alembic.

Each test module that uses ``database`` runs once per backend (``sqlite``, ``postgres``).
PostgreSQL tests connect as a non-owner role (``insurdesk_app_test``), so row-level security
applies to them exactly as in production. Every database is created here and dropped after
the session; a developer's data is never touched. With ``CI=true`` a missing PostgreSQL
fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from core.db import Database
from core.migrate import upgrade
from core.settings import Settings, load_settings

PG_SUPERUSER_URL = os.environ.get(
    "INSURDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
APP_ROLE = "insurdesk_app_test"
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_MASTER_KEY = "vN5/lIvmdKUzn/mW6p6qDnBuy93aCCzN6WDo3Du3BR8="
"""The platform master key of the test run (tests only). Set in the environment, so the test
process, its CLI invocations and the worker processes it starts all unwrap the same tenant keys;
a developer's ``var/master.key`` is never created or used."""
os.environ.setdefault("INSURDESK_MASTER_KEY", TEST_MASTER_KEY)


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_SUPERUSER_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # the reason goes into the skip or failure message
        return f"PostgreSQL not reachable at {PG_SUPERUSER_URL}: {exc.__class__.__name__}: {exc}"


def _require_pg() -> None:
    reason = _pg_available()
    if reason:
        if CI:
            pytest.fail(f"CI=true and the PostgreSQL service is missing: {reason}")
        pytest.skip(reason)


class PostgresDatabases:
    """Creates throw-away databases on the local server and drops them at the end."""

    def __init__(self) -> None:
        self.engine = create_engine(PG_SUPERUSER_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        with self.engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE}
            ).scalar()
            if not exists:
                conn.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))

    def create(self) -> tuple[str, str]:
        """A new empty database; returns (owner URL, application-role URL)."""
        name = f"insurdesk_t_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        base = self.engine.url
        admin = base.set(database=name).render_as_string(hide_password=False)
        app = base.set(database=name, username=APP_ROLE, password=None).render_as_string(
            hide_password=False
        )
        return admin, app

    def drop_all(self) -> None:
        """Drop every database this object created."""
        with self.engine.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases]:
    """Factory of throw-away PostgreSQL databases (fails with CI=true if the server is down)."""
    _require_pg()
    dbs = PostgresDatabases()
    yield dbs
    dbs.drop_all()


def make_settings(tmp: Path, url: str, admin_url: str | None = None) -> Settings:
    """Settings for a test: everything under ``tmp``, the given database URLs."""
    return load_settings(
        environ={},
        var_dir=tmp,
        database_url=url,
        admin_database_url=admin_url or "",
        issuer="http://testserver",
        master_key=os.environ["INSURDESK_MASTER_KEY"],
    )


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend the test runs on; every database test runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def settings(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Settings:
    """Settings pointing at a freshly migrated database of ``backend``."""
    tmp = tmp_path_factory.mktemp(f"insurdesk-{backend}")
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'test.db'}"
        upgrade(url)
        return make_settings(tmp, url)
    dbs: PostgresDatabases = request.getfixturevalue("pg_databases")
    admin, app = dbs.create()
    upgrade(admin, app)
    return make_settings(tmp, app, admin)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    """The migrated database of this backend, shared by the session's tests.

    Tests stay independent by creating their own tenants (random slugs), never by relying
    on an empty database.
    """
    db = Database(settings.effective_database_url, settings.effective_admin_database_url)
    yield db
    db.dispose()


class LiveServer:
    """The real app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        from core.api.http_protocol import server_options

        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            **server_options(),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        """Start serving and wait until the port answers."""
        import time

        import httpx

        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(settings: Settings, database: Database) -> Iterator[LiveServer]:
    """The platform served over real HTTP on this backend (issuer set to its URL)."""
    from dataclasses import replace

    from core.app import create_app

    server = LiveServer(None)
    app = create_app(replace(settings, issuer=server.url), database)
    server.server.config.app = app
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_settings(settings: Settings, live_server: LiveServer) -> Settings:
    """The settings the live server runs with (issuer = its URL)."""
    from dataclasses import replace

    return replace(settings, issuer=live_server.url)


@pytest.fixture(scope="session")
def pg_database(
    pg_databases: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """A migrated PostgreSQL database for PostgreSQL-only behaviour (RLS, roles, grants).

    Not parametrized: tests that use it run once, on PostgreSQL, and are never skipped
    with CI=true.
    """
    admin, app = pg_databases.create()
    upgrade(admin, app)
    db = Database(app, admin)
    yield db
    db.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres_only`` run on the PostgreSQL backend only, ``sqlite_only`` on
    SQLite only (deselected, not skipped, on the other: nothing is hidden, the behaviour simply
    has no form there)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        if (item.get_closest_marker("postgres_only") and backend == "sqlite") or (
            item.get_closest_marker("sqlite_only") and backend == "postgres"
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
