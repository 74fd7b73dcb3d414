"""Liveness and readiness probes (Kubernetes ``livenessProbe`` / ``readinessProbe``)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from core.db import Database
from core.migrate import current_revision, head_revision


@get(
    "/healthz",
    exclude_from_auth=True,
    tags=["health"],
    operation_id="healthz",
    summary="Liveness: the process answers",
)
async def healthz() -> dict[str, str]:
    """Answers 200 while the process runs."""
    return {"status": "ok"}


@get(
    "/readyz",
    exclude_from_auth=True,
    tags=["health"],
    operation_id="readyz",
    summary="Readiness: database reachable and migrations at head",
    sync_to_thread=True,
)
def readyz(db: NamedDependency[Database]) -> Response[dict[str, Any]]:
    """200 when the database answers and its schema is at the newest migration, else 503."""
    checks: dict[str, Any] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = current_revision(db.engine), head_revision()
        checks["migrations"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:  # reported, not raised: this is the probe's answer
        checks["database"] = f"unreachable: {exc.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


ROUTES = [healthz, readyz]
