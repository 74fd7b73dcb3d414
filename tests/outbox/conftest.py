"""Fixtures of the background-work tests (see :mod:`tests.outbox.fixtures`)."""

from tests.outbox.fixtures import (  # noqa: F401  (fixtures)
    bg_db,
    bg_settings,
    namespace,
    require_rabbitmq,
    require_redis,
    smtp,
    webhooks,
    world,
)
