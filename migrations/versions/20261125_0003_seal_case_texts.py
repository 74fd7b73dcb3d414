"""case free text sealed with the tenant data key; index-key versions; requests link a case

* ``cases``: the free text (subject, description, reasons, plan, decision, answer, review,
  regulator report) and the whistle-blower's identity move into ``sealed_enc`` (one AES-256-GCM
  record under the tenant's active data key, as customers have), ``key_version``;
  ``anonymized_at`` (retention). Existing rows are encrypted in place; the clear columns go.
* ``case_events``: ``reason`` and the free text inside ``before``/``after``/``data`` (notice
  bodies, decisions ...) move into ``sealed_enc``; existing rows are encrypted in place.
* ``customers.index_version``: the index-key version of the blind indexes (1 for existing).
* ``privacy_requests.case_id``: the request's case in the work queue.

The data keys come from ``tenant_keys`` (created for a tenant that has none yet), unwrapped with
the key manager of the environment (``INSURDESK_MASTER_KEY``, as every process uses).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 19:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CASE_TEXTS: dict[str, sa.types.TypeEngine[Any]] = {
    "subject": sa.String(length=300),
    "description": sa.Text(),
    "not_accepted_reason": sa.Text(),
    "plan": sa.Text(),
    "decision": sa.Text(),
    "answer": sa.Text(),
    "review_reason": sa.Text(),
    "review_decision": sa.Text(),
    "regulator_report": sa.Text(),
    "withdrawn_reason": sa.Text(),
    "reporter_name": sa.String(length=200),
    "reporter_contact": sa.String(length=200),
    "reporter_id_number": sa.String(length=64),
}
EVENT_TEXT_KEYS = frozenset({k for k in CASE_TEXTS if not k.startswith("reporter_")} | {"content"})

_tenants = sa.table("tenants", sa.column("id", sa.Uuid()))
_keys = sa.table(
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


def _cases(with_texts: bool) -> sa.TableClause:
    columns = [
        sa.column("tenant_id", sa.Uuid()),
        sa.column("id", sa.Uuid()),
        sa.column("sealed_enc", sa.Text()),
        sa.column("key_version", sa.Integer()),
    ]
    if with_texts:
        columns += [sa.column(name, kind) for name, kind in CASE_TEXTS.items()]
    return sa.table("cases", *columns)


def _events(with_reason: bool) -> sa.TableClause:
    columns = [
        sa.column("tenant_id", sa.Uuid()),
        sa.column("id", sa.Uuid()),
        sa.column("before", sa.JSON()),
        sa.column("after", sa.JSON()),
        sa.column("data", sa.JSON()),
        sa.column("sealed_enc", sa.Text()),
        sa.column("key_version", sa.Integer()),
    ]
    if with_reason:
        columns.append(sa.column("reason", sa.Text()))
    return sa.table("case_events", *columns)


class _Sealer:
    """Seals and opens records of one tenant with its active data key (the keyring's own
    primitives; keys created as the application would)."""

    def __init__(self, conn: sa.Connection, tenant_id: Any) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from core.privacy.crypto import Keyring
        from core.privacy.keys import default_key_manager

        manager = context.config.attributes.get("key_manager") or default_key_manager()
        self.keyring = Keyring(manager)
        self.conn, self.tenant_id = conn, tenant_id
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)}
            )
        for purpose in ("data", "index"):
            found = conn.execute(
                sa.select(_keys.c.id).where(
                    _keys.c.tenant_id == tenant_id, _keys.c.purpose == purpose
                )
            ).first()
            if found is None:
                conn.execute(
                    _keys.insert().values(**self.keyring.new_key_row(tenant_id, purpose, 1))
                )
        rows = conn.execute(
            sa.select(_keys).where(
                _keys.c.tenant_id == tenant_id,
                _keys.c.purpose == "data",
                _keys.c.wrapped.isnot(None),
            )
        ).all()
        self.aeads = {row.version: AESGCM(self.keyring.unwrap_row(row)) for row in rows}
        self.active = next(row.version for row in rows if row.status == "active")

    def seal(self, table: str, row_id: Any, record: dict[str, str]) -> str:
        from core.privacy.fields import MASK_VERSION, aad_for, encode_record

        return self.keyring.seal(
            self.aeads[self.active],
            self.active,
            encode_record({**record, "#": MASK_VERSION}),
            aad_for(self.tenant_id, table, row_id),
        )

    def open(self, table: str, row_id: Any, token: str) -> dict[str, str]:
        from core.privacy.fields import aad_for, decode_record
        from core.privacy.tokens import token_version

        plain = self.aeads[token_version(token)].decrypt(
            *_split(token), aad_for(self.tenant_id, table, row_id)
        )
        return {k: v for k, v in decode_record(plain).items() if not k.startswith("#")}


def _split(token: str) -> tuple[bytes, bytes]:
    import binascii

    raw = binascii.a2b_base64(token.split(":", 2)[2])
    return raw[:12], raw[12:]


def _tenant_ids(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.select(_tenants.c.id)).scalars())


def upgrade() -> None:
    for table, column in (
        ("cases", sa.Column("sealed_enc", sa.Text(), nullable=True)),
        ("cases", sa.Column("key_version", sa.Integer(), nullable=False, server_default="0")),
        ("cases", sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True)),
        ("case_events", sa.Column("sealed_enc", sa.Text(), nullable=True)),
        (
            "case_events",
            sa.Column("key_version", sa.Integer(), nullable=False, server_default="0"),
        ),
        (
            "customers",
            sa.Column("index_version", sa.Integer(), nullable=False, server_default="0"),
        ),
    ):
        op.add_column(table, column)
    with op.batch_alter_table("privacy_requests") as batch:
        batch.add_column(sa.Column("case_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_privacy_requests_tenant_id_case_id_cases"),
            "cases",
            ["tenant_id", "case_id"],
            ["tenant_id", "id"],
        )

    conn = op.get_bind()
    cases, events = _cases(with_texts=True), _events(with_reason=True)
    customers = sa.table(
        "customers",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("key_version", sa.Integer()),
        sa.column("index_version", sa.Integer()),
    )
    for tenant_id in _tenant_ids(conn):
        sealer: _Sealer | None = None
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)}
            )
        conn.execute(
            customers.update()
            .where(customers.c.tenant_id == tenant_id, customers.c.key_version > 0)
            .values(index_version=1)
        )
        for row in conn.execute(sa.select(cases).where(cases.c.tenant_id == tenant_id)).all():
            record = {k: getattr(row, k) for k in CASE_TEXTS if getattr(row, k) is not None}
            if not record:
                continue
            sealer = sealer or _Sealer(conn, tenant_id)
            conn.execute(
                cases.update()
                .where(cases.c.tenant_id == tenant_id, cases.c.id == row.id)
                .values(sealed_enc=sealer.seal("cases", row.id, record), key_version=sealer.active)
            )
        for row in conn.execute(sa.select(events).where(events.c.tenant_id == tenant_id)).all():
            parts: dict[str, dict[str, Any]] = {}
            plain: dict[str, dict[str, Any]] = {}
            for name in ("before", "after", "data"):
                values = dict(getattr(row, name) or {})
                texts = {k: v for k, v in values.items() if k in EVENT_TEXT_KEYS}
                if texts:
                    parts[name] = texts
                plain[name] = {k: v for k, v in values.items() if k not in EVENT_TEXT_KEYS}
            record = {}
            if row.reason is not None:
                record["reason"] = row.reason
            if parts:
                import json

                record["texts"] = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
            if not record:
                continue
            sealer = sealer or _Sealer(conn, tenant_id)
            conn.execute(
                events.update()
                .where(events.c.tenant_id == tenant_id, events.c.id == row.id)
                .values(
                    sealed_enc=sealer.seal("case_events", row.id, record),
                    key_version=sealer.active,
                    **plain,
                )
            )

    for name in CASE_TEXTS:
        op.drop_column("cases", name)
    op.drop_column("case_events", "reason")


def downgrade() -> None:
    import json

    for name, kind in CASE_TEXTS.items():
        op.add_column("cases", sa.Column(name, kind, nullable=True))
    op.add_column("case_events", sa.Column("reason", sa.Text(), nullable=True))
    conn = op.get_bind()
    cases, events = _cases(with_texts=True), _events(with_reason=True)
    for tenant_id in _tenant_ids(conn):
        sealer: _Sealer | None = None
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)}
            )
        for row in conn.execute(
            sa.select(cases.c.id, cases.c.sealed_enc).where(
                cases.c.tenant_id == tenant_id, cases.c.sealed_enc.isnot(None)
            )
        ).all():
            sealer = sealer or _Sealer(conn, tenant_id)
            record = sealer.open("cases", row.id, row.sealed_enc)
            conn.execute(
                cases.update()
                .where(cases.c.tenant_id == tenant_id, cases.c.id == row.id)
                .values(**{k: record.get(k) for k in CASE_TEXTS})
            )
        for row in conn.execute(
            sa.select(events).where(
                events.c.tenant_id == tenant_id, events.c.sealed_enc.isnot(None)
            )
        ).all():
            sealer = sealer or _Sealer(conn, tenant_id)
            record = sealer.open("case_events", row.id, row.sealed_enc)
            parts = json.loads(record["texts"]) if record.get("texts") else {}
            conn.execute(
                events.update()
                .where(events.c.tenant_id == tenant_id, events.c.id == row.id)
                .values(
                    reason=record.get("reason"),
                    **{
                        name: {**(getattr(row, name) or {}), **parts.get(name, {})}
                        for name in ("before", "after", "data")
                    },
                )
            )
    conn.execute(sa.text("UPDATE cases SET subject = '' WHERE subject IS NULL"))
    if conn.dialect.name == "postgresql":  # SQLite would have to rebuild a referenced table
        op.alter_column("cases", "subject", existing_type=sa.String(length=300), nullable=False)
    for table, column in (
        ("cases", "anonymized_at"),
        ("cases", "key_version"),
        ("cases", "sealed_enc"),
        ("case_events", "key_version"),
        ("case_events", "sealed_enc"),
        ("customers", "index_version"),
    ):
        op.drop_column(table, column)
    with op.batch_alter_table("privacy_requests") as batch:
        batch.drop_constraint(
            op.f("fk_privacy_requests_tenant_id_case_id_cases"), type_="foreignkey"
        )
        batch.drop_column("case_id")
