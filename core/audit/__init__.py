"""The tenant audit log: append-only, hash-chained, verifiable (see :mod:`core.audit.services`).

Use :func:`record` (in the caller's transaction) with an actor from :func:`actor_from`.
"""

from core.audit.services import AuditActor, Target, actor_from, record

__all__ = ["AuditActor", "Target", "actor_from", "record"]
