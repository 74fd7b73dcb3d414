"""The transactional outbox: side effects written with the change that causes them.

:func:`emit` adds an :class:`~core.outbox.models.OutboxEvent` to the caller's session, so it
commits (or rolls back) with the change. A relay (:mod:`core.outbox.relay`) hands pending
events to the Dramatiq broker; the actor (:mod:`core.outbox.actors`) processes each one
idempotently by its id. See docs/background.md.
"""

from core.outbox.services import emit

__all__ = ["emit"]
