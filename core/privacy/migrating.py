"""Sealing rows inside a migration: the keyring's primitives on a plain connection.

A migration that moves clear columns under encryption cannot use the ORM (the models are the
head's, not the revision's). :class:`TenantSealer` seals and opens records of one tenant with
its active data key, read from ``tenant_keys`` (created for a tenant that has none, as the
application would) and unwrapped with the key manager of the environment, and binds them to
their tenant, table and row exactly as :mod:`core.privacy.fields` does.
"""

from __future__ import annotations

import binascii
import uuid
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.privacy.crypto import Keyring
from core.privacy.fields import aad_for, decode_record, encode_record
from core.privacy.keys import NONCE_BYTES, KeyManager, default_key_manager
from core.privacy.tokens import token_version

KEYS = sa.table(
    "tenant_keys",
    sa.column("tenant_id", sa.Uuid()),
    sa.column("id", sa.Uuid()),
    sa.column("purpose", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("status", sa.String()),
    sa.column("wrapped", sa.Text()),
    sa.column("master_key_id", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
TENANTS = sa.table("tenants", sa.column("id", sa.Uuid()))


def tenant_ids(conn: sa.Connection) -> list[uuid.UUID]:
    """Every tenant (a platform table: no row-level security)."""
    return list(conn.execute(sa.select(TENANTS.c.id)).scalars())


def enter_tenant(conn: sa.Connection, tenant_id: uuid.UUID) -> None:
    """Make the tenant's rows visible under PostgreSQL row-level security (no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)})


class TenantSealer:
    """Seals and opens one tenant's records on ``conn``."""

    def __init__(
        self, conn: sa.Connection, tenant_id: uuid.UUID, manager: KeyManager | None = None
    ) -> None:
        self.keyring = Keyring(manager or default_key_manager())
        self.tenant_id = tenant_id
        enter_tenant(conn, tenant_id)
        for purpose in ("data", "index"):
            found = conn.execute(
                sa.select(KEYS.c.id).where(KEYS.c.tenant_id == tenant_id, KEYS.c.purpose == purpose)
            ).first()
            if found is None:
                conn.execute(
                    KEYS.insert().values(**self.keyring.new_key_row(tenant_id, purpose, 1))
                )
        rows = conn.execute(
            sa.select(KEYS).where(
                KEYS.c.tenant_id == tenant_id, KEYS.c.purpose == "data", KEYS.c.wrapped.isnot(None)
            )
        ).all()
        self.aeads = {row.version: AESGCM(self.keyring.unwrap_row(row)) for row in rows}
        self.active = next(row.version for row in rows if row.status == "active")

    def seal(self, table: str, row_id: uuid.UUID, record: dict[str, str]) -> str:
        """The token of ``record``'s clear fields. Masked forms are the model's business: any
        in ``record`` are dropped (a migration may have changed a field without them), so the
        record is masked on the fly until the model seals it again."""
        return self.keyring.seal(
            self.aeads[self.active],
            self.active,
            encode_record({k: v for k, v in record.items() if not k.startswith("#")}),
            aad_for(self.tenant_id, table, row_id),
        )

    def open(self, table: str, row_id: uuid.UUID, token: str) -> dict[str, Any]:
        """The fields of a token (with the ``#`` entries of masked forms, if any)."""
        raw = binascii.a2b_base64(token.split(":", 2)[2])
        plain = self.aeads[token_version(token)].decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad_for(self.tenant_id, table, row_id)
        )
        return dict(decode_record(plain))
