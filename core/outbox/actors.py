"""The Dramatiq actor that carries out outbox messages.

Actors are declared on a broker built at start-up (:func:`declare_actor`), never on a global
broker at import time, so a process can hold several brokers (tests) and settings are read
only when the worker starts. The message carries ids only (``tenant_id`` and a list of
``outbox_ids`` of that tenant); everything else is read from the outbox rows, so a message is
small and cannot be stale.
"""

from __future__ import annotations

import uuid

import dramatiq

from core.outbox.broker import BrokerHandle
from core.outbox.processing import Processor
from core.outbox.relay import ACTOR_NAME


def declare_actor(handle: BrokerHandle, processor: Processor) -> dramatiq.Actor[..., None]:
    """Declare ``insurdesk_outbox`` on ``handle``'s broker, processing with ``processor``.

    Dramatiq's own retries (3, from 1 s) only cover failures to *record* an outcome (the
    database is down); handler failures are retried by the outbox with backoff.
    """

    def insurdesk_outbox(tenant_id: str, outbox_ids: list[str]) -> None:
        processor.process_many(uuid.UUID(tenant_id), [uuid.UUID(i) for i in outbox_ids])

    declare = dramatiq.actor(
        broker=handle.broker,
        actor_name=ACTOR_NAME,
        queue_name=handle.queue_name,
        max_retries=3,
        time_limit=300_000,
    )
    return declare(insurdesk_outbox)
