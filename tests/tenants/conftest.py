"""Helpers for the manifest tests: unique slugs, demo manifests under another slug, row counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, table

from core.db import Database
from tenants.demo import DEMO_DIR

DemoWriter = Callable[[str], tuple[Path, str]]


def unique_slug(prefix: str) -> str:
    """A slug no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def row_counts(db: Database) -> dict[str, int]:
    """Rows of every table of the database (platform path: every tenant)."""
    names = [n for n in inspect(db.admin_engine).get_table_names() if n != "alembic_version"]
    with db.platform_session() as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(table(name))) or 0)
            for name in names
        }


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
