"""Helpers for the manifest tests: unique slugs, demo manifests under another slug, row counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import column, func, inspect, select, table, text

from core.db import Database
from tenants.demo import DEMO_DIR

DemoWriter = Callable[[str], tuple[Path, str]]


def unique_slug(prefix: str) -> str:
    """A slug no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


BACKGROUND_TABLES = frozenset({"alembic_version", "scheduler_runs"})
"""Tables no manifest writes that the session's live server writes on its own clock (its
embedded scheduler records each job slot it runs)."""


def row_counts(db: Database, *own: str) -> dict[str, int]:
    """Rows of every table of the database (platform path), except rows that background work
    of the session's live server writes on its own clock while a test runs: the scheduler's
    job slots, and the rows of other tests' tenants (their reminders, deliveries and sweeps
    may land at any moment). ``own`` names the slugs of the tenants the test works on.

    A manifest's partial write always shows: the rows of the tenants named in ``own``, the
    tenants table itself and the platform audit are all counted.
    """
    inspector = inspect(db.admin_engine)
    names = [n for n in inspector.get_table_names() if n not in BACKGROUND_TABLES]
    with db.platform_session() as session:
        others = [
            tid
            for tid, slug in session.execute(text("SELECT id, slug FROM tenants"))
            if slug not in own
        ]
        counts = {}
        for name in names:
            query = select(func.count()).select_from(table(name))
            if others and any(c["name"] == "tenant_id" for c in inspector.get_columns(name)):
                query = query.where(column("tenant_id").not_in(others))
            counts[name] = int(session.scalar(query) or 0)
        return counts


@pytest.fixture
def demo_as(tmp_path: Path) -> Callable[[str], DemoWriter]:
    """``demo_as("huaxia-group")(prefix)`` writes that demo manifest under a new unique slug
    into ``tmp_path`` and returns ``(path, slug)``."""

    def for_file(stem: str) -> DemoWriter:
        source = (DEMO_DIR / f"{stem}.yaml").read_text("utf-8")
        old = next(
            line.split(":", 1)[1].strip()
            for line in source.splitlines()
            if line.strip().startswith("slug:")
        )

        def write(prefix: str) -> tuple[Path, str]:
            slug = unique_slug(prefix)
            path = tmp_path / f"{slug}.yaml"
            path.write_text(source.replace(f"slug: {old}\n", f"slug: {slug}\n", 1), "utf-8")
            return path, slug

        return write

    return for_file


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_manifest(name, text)`` writes a manifest file into ``tmp_path``."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, "utf-8")
        return path

    return write
