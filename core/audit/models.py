"""The audit log: one append-only, hash-chained log per tenant, and its head.

* :class:`AuditEntry` (``audit_log``) — one sensitive action: who (person, client, platform or
  system), what (``action``), on what (``target_type``/``target_id``), details (JSON, never a
  secret nor clear personal data), from where (source address, OAuth client). ``seq`` numbers a
  tenant's entries 1, 2, 3 ... and ``hash`` is SHA-256 over the entry's canonical serialization,
  which includes ``prev_hash``, the hash of the tenant's previous entry. Editing an entry
  changes its hash; deleting one breaks the sequence and the chain (:mod:`core.audit.chain`).
* :class:`AuditHead` (``audit_heads``) — the tenant's newest ``seq`` and ``hash``. Every append
  locks it (``SELECT ... FOR UPDATE``), so appends of a tenant are serialized, and it lets the
  verification notice entries cut off at the end of the log.

The ORM refuses updates and deletes of entries; on PostgreSQL the application role has only
``SELECT, INSERT`` on ``audit_log`` (:data:`core.migrate.APPEND_ONLY_TABLES`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from core.db import Base, TenantScoped, utcnow

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a tenant's first entry."""


class AuditEntry(TenantScoped, Base):
    """One entry of a tenant's audit log. Append-only; see the module docstring."""

    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq"),
        Index("ix_audit_log_tenant_at", "tenant_id", "at"),
        Index("ix_audit_log_tenant_action", "tenant_id", "action", "seq"),
        Index("ix_audit_log_tenant_target", "tenant_id", "target_type", "target_id"),
    )

    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_kind: Mapped[str] = mapped_column(String(16))
    """``person``, ``client``, ``platform`` or ``system``."""
    actor: Mapped[str] = mapped_column(String(200))
    """``person:<username>``, ``client:<client id>``, ``platform:<what>``, ``system:<job>``."""
    actor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The person's id, when a person acted (no foreign key: the log outlives what it names)."""
    client_id: Mapped[str | None] = mapped_column(String(160), default=None)
    """The OAuth client the request came through (a person's console, an integrator)."""
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(64), default=None)
    target_id: Mapped[str | None] = mapped_column(String(200), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str | None] = mapped_column(String(100), default=None)
    """The caller's network address, when known."""
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(TenantScoped, Base):
    """The newest entry of a tenant's log (one row per tenant), locked by every append."""

    __tablename__ = "audit_heads"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
    at: Mapped[datetime | None] = mapped_column(default=None)


class AuditLogAppendOnlyError(RuntimeError):
    """An update or delete of an audit entry was attempted through the ORM."""


@event.listens_for(AuditEntry, "before_update")
def _refuse_update(_mapper: Mapper[Any], _conn: Any, target: AuditEntry) -> None:
    raise AuditLogAppendOnlyError(f"audit entry {target.seq} is append-only")


@event.listens_for(AuditEntry, "before_delete")
def _refuse_delete(_mapper: Mapper[Any], _conn: Any, target: AuditEntry) -> None:
    raise AuditLogAppendOnlyError(f"audit entry {target.seq} is append-only")
