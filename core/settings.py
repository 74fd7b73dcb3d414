"""Platform settings: one object, each field named after its environment variable.

Settings are read when :func:`load_settings` is called (in the app factory or the CLI),
never at import time, and are passed on as a dependency so tests can override them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_PREFIX = "INSURDESK_"


def _default_var_dir() -> Path:
    return Path.cwd() / "var"


@dataclass(frozen=True)
class Settings:
    """All platform settings. Each field is read from ``INSURDESK_<FIELD NAME IN CAPITALS>``."""

    environment: str = "development"
    """``INSURDESK_ENVIRONMENT``: ``development`` (demo tenants allowed) or ``production``."""

    var_dir: Path = field(default_factory=_default_var_dir)
    """``INSURDESK_VAR_DIR``: where the embedded default keeps its SQLite file, keys and uploads."""

    database_url: str = ""
    """``INSURDESK_DATABASE_URL``: the application's connection (a role that does not own the
    tables on PostgreSQL). Default: ``sqlite:///<var_dir>/insurdesk.db``."""

    admin_database_url: str = ""
    """``INSURDESK_ADMIN_DATABASE_URL``: the owner's connection, used by migrations and the
    audited platform path (provisioning, cross-tenant sweeps). Default: ``database_url``."""

    issuer: str = "http://127.0.0.1:8000"
    """``INSURDESK_ISSUER``: the OAuth issuer URL (the public base URL of the platform)."""

    access_token_ttl: int = 900
    """``INSURDESK_ACCESS_TOKEN_TTL``: lifetime of access tokens, in seconds."""

    host: str = "127.0.0.1"
    """``INSURDESK_HOST``: the address ``insurdesk serve`` binds."""

    port: int = 8000
    """``INSURDESK_PORT``: the port ``insurdesk serve`` binds."""

    max_body_bytes: int = 1_048_576
    """``INSURDESK_MAX_BODY_BYTES``: the largest JSON request body accepted (attachments aside)."""

    log_level: str = "INFO"
    """``INSURDESK_LOG_LEVEL``: structlog level."""

    broker_url: str = ""
    """``INSURDESK_BROKER_URL``: the Dramatiq broker: ``amqp://...`` (RabbitMQ, production) or
    ``redis://...``. Empty or ``stub``: the embedded default, where ``serve`` runs the outbox
    relay, an in-process worker and the scheduler itself (docs/background.md)."""

    redis_url: str = ""
    """``INSURDESK_REDIS_URL``: Redis for state shared by every process (rate-limit buckets),
    e.g. ``redis://127.0.0.1:6379/0``. Empty: see ``rate_limit_backend``."""

    rate_limit_backend: str = "auto"
    """``INSURDESK_RATE_LIMIT_BACKEND``: where the token buckets live: ``redis`` (needs
    ``redis_url``), ``database`` (PostgreSQL, one upsert per request), ``memory`` (this
    process only: the embedded default on SQLite), ``off``; ``auto`` picks ``redis`` when
    ``redis_url`` is set, else ``database`` on PostgreSQL, else ``memory`` (docs/integrators.md)."""

    rate_limit_client: int = 1200
    """``INSURDESK_RATE_LIMIT_CLIENT``: requests per minute of one API client (for a person's
    token: of that person), also the burst size."""

    rate_limit_tenant: int = 6000
    """``INSURDESK_RATE_LIMIT_TENANT``: requests per minute of all of a tenant's callers
    together."""

    rate_limit_overrides: str = ""
    """``INSURDESK_RATE_LIMIT_OVERRIDES``: per-tenant limits as JSON, by tenant slug:
    ``{"huaxia": {"client": 3000, "tenant": 20000}}`` (0 = unlimited)."""

    auth_cache_seconds: int = 60
    """``INSURDESK_AUTH_CACHE_SECONDS``: on PostgreSQL, how long an accepted access token's
    state (revocation, client, person, roles) may be reused by a process without reading it
    again; changes invalidate it at once either way (docs/decisions/0011-auth-state-cache.md).
    0: read it on every request."""

    idempotency_ttl: int = 86_400
    """``INSURDESK_IDEMPOTENCY_TTL``: seconds an ``Idempotency-Key`` and its response are kept."""

    webhook_allow_private: bool | None = None
    """``INSURDESK_WEBHOOK_ALLOW_PRIVATE``: allow webhook URLs on loopback, private, link-local
    and other non-public addresses (e.g. an insurer's intranet). Unset: allowed in development
    and tests, refused with production settings. Webhook URLs must use https with production
    settings either way."""

    master_key: str = field(default="", repr=False)
    """``INSURDESK_MASTER_KEY``: the platform master key that wraps every tenant's data keys
    (32 bytes, base64; ``insurdesk privacy master-key`` makes one). Keep it in a secret store.
    Empty: ``master_key_file``, else ``<var_dir>/master.key``, generated on first use
    (docs/privacy.md)."""

    master_key_file: Path | None = None
    """``INSURDESK_MASTER_KEY_FILE``: a file holding the master key (base64), e.g. a mounted
    Kubernetes secret."""

    attachment_storage: str = "local"
    """``INSURDESK_ATTACHMENT_STORAGE``: where attachment files are kept: ``local`` (a directory,
    ``<var_dir>/attachments``; the embedded default) or ``s3`` (an S3-compatible object store,
    configured by the ``INSURDESK_S3_*`` variables)."""

    s3_bucket: str = ""
    """``INSURDESK_S3_BUCKET``: the bucket of the ``s3`` store (it must exist)."""

    s3_prefix: str = ""
    """``INSURDESK_S3_PREFIX``: prepended to every object key (e.g. ``insurdesk/``)."""

    s3_endpoint_url: str = ""
    """``INSURDESK_S3_ENDPOINT_URL``: the S3-compatible endpoint (MinIO, Ceph, a cloud's
    object storage); empty: AWS. With an endpoint, path-style addressing is used."""

    s3_region: str = ""
    """``INSURDESK_S3_REGION``: the region name, where the store needs one."""

    s3_access_key_id: str = ""
    """``INSURDESK_S3_ACCESS_KEY_ID``: the access key; empty: boto3's usual credential chain
    (``AWS_ACCESS_KEY_ID``..., an instance role)."""

    s3_secret_access_key: str = field(default="", repr=False)
    """``INSURDESK_S3_SECRET_ACCESS_KEY``: the secret key (keep it in a secret store)."""

    @property
    def webhooks_may_reach_private(self) -> bool:
        """Whether webhook deliveries may go to non-public addresses (see
        ``webhook_allow_private``)."""
        if self.webhook_allow_private is None:
            return not self.is_production
        return self.webhook_allow_private

    @property
    def is_production(self) -> bool:
        """True when running with production settings (no demo data, strict checks)."""
        return self.environment == "production"

    @property
    def effective_database_url(self) -> str:
        """The application database URL with the embedded default filled in."""
        return self.database_url or f"sqlite:///{self.var_dir / 'insurdesk.db'}"

    @property
    def effective_admin_database_url(self) -> str:
        """The owner's database URL (falls back to the application URL)."""
        return self.admin_database_url or self.effective_database_url


def _coerce(raw: str, annotation: Any) -> Any:
    text = str(annotation)
    if "bool" in text:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in text:
        return int(raw)
    if "Path" in text:
        return Path(raw)
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``) and keyword overrides.

    :raises ValueError: naming the variable when a value cannot be read.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = _PREFIX + f.name.upper()
        if name in env and env[name] != "":
            try:
                values[f.name] = _coerce(env[name], f.type)
            except ValueError as exc:
                raise ValueError(f"{name}: cannot read {env[name]!r}: {exc}") from exc
    values.update(overrides)
    settings = Settings(**values)
    from core.cases.storage import check_settings

    check_settings(settings)
    return settings
