"""Schema migrations (Alembic) and the PostgreSQL grants for the application role."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from core.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
APPEND_ONLY_TABLES: frozenset[str] = frozenset({"platform_audit", "audit_log"})
"""Tables the application role may read and insert into, never update or delete."""


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at ``migrations/`` and ``url``."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(admin_url: str, app_url: str | None = None, revision: str = "head") -> None:
    """Upgrade the schema with the owner's connection, then grant the application role.

    On PostgreSQL, when ``app_url`` names another user than ``admin_url``, that role gets
    DML on tenant tables (subject to RLS), SELECT on platform tables and INSERT-only on
    append-only tables.
    """
    command.upgrade(alembic_config(admin_url), revision)
    if app_url:
        grant_app_role(admin_url, app_url)


def downgrade(admin_url: str, revision: str = "base") -> None:
    """Downgrade the schema (tests and emergencies)."""
    command.downgrade(alembic_config(admin_url), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def grant_app_role(admin_url: str, app_url: str) -> str | None:
    """Grant the application role what it needs; return its name, or None if not applicable."""
    admin, app = make_url(admin_url), make_url(app_url)
    if not admin.drivername.startswith("postgresql") or admin.username == app.username:
        return None
    role = app.username
    if not role or not role.replace("_", "").isalnum():
        raise ValueError(f"unusable application role name: {role!r}")
    engine = make_engine(admin_url)
    try:
        with engine.begin() as conn:
            tables = inspect(conn).get_table_names()
            tenant_tables = {
                t
                for t in tables
                if "tenant_id" in {c["name"] for c in inspect(conn).get_columns(t)}
            }
            conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
            for table in tables:
                if table == "alembic_version" or table in APPEND_ONLY_TABLES:
                    privileges = "SELECT" if table == "alembic_version" else "SELECT, INSERT"
                elif table in tenant_tables and table != "platform_audit":
                    privileges = "SELECT, INSERT, UPDATE, DELETE"
                else:
                    privileges = "SELECT"
                conn.execute(text(f'REVOKE ALL ON TABLE "{table}" FROM "{role}"'))
                conn.execute(text(f'GRANT {privileges} ON TABLE "{table}" TO "{role}"'))
            conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    finally:
        engine.dispose()
    return role
