"""Platform-level tables: tenants and the platform audit log (not tenant-owned)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Timestamped, new_id, utcnow


class Tenant(Timestamped, Base):
    """An insurer, group or agency sharing the deployment. The root of all tenant data."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    status: Mapped[str] = mapped_column(String(16), default="active")
    case_number_format: Mapped[str] = mapped_column(String(64), default="{prefix}-{year}-{seq:06d}")
    manifest_digest: Mapped[str | None] = mapped_column(String(64), default=None)


class PlatformAuditEntry(Base):
    """What the platform path did: provisioning, manifests, sweeps. Append-only."""

    __tablename__ = "platform_audit"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text, default=None)
