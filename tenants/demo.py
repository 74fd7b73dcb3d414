"""The demo tenants: every manifest in ``tenants/demo/`` (local use only, never production)."""

from __future__ import annotations

from pathlib import Path

from core.db import Database
from core.settings import Settings
from tenants.apply import apply_manifests
from tenants.manifests import load_manifests

DEMO_DIR = Path(__file__).with_name("demo")
"""Where the demo manifests live (``*.yaml``, each marked ``demo: true``)."""


class DemoRefusedError(RuntimeError):
    """Demo tenants were asked for where they are not allowed."""


def apply_demo_tenants(settings: Settings, db: Database | None = None) -> list[str]:
    """Apply every demo manifest and return the report lines (``huaxia: no changes`` ...).

    :param db: the database to use (default: the one ``settings`` names).
    :raises DemoRefusedError: with production settings, or if a manifest is not ``demo: true``.
    :raises tenants.schema.ManifestError: a demo manifest is invalid (nothing is written).
    """
    if settings.is_production:
        raise DemoRefusedError("demo tenants are refused with production settings")
    manifests = load_manifests([DEMO_DIR])
    not_demo = [m.source for m in manifests if not m.demo]
    if not_demo:
        raise DemoRefusedError(f"not marked 'demo: true': {', '.join(not_demo)}")
    own = db is None
    database = db or Database(
        settings.effective_database_url, settings.effective_admin_database_url
    )
    try:
        reports = apply_manifests(database, manifests, actor="demo")
    finally:
        if own:
            database.dispose()
    return [line for report in reports for line in report.lines()]
