"""The hash chain: canonical serialization of an entry, its hash, and the verification.

An entry's hash is SHA-256 over a canonical JSON document (sorted keys, no whitespace, UTF-8)
of every field that matters, ``prev_hash`` included. The verification walks a tenant's log in
``seq`` order and reports the **first** entry where the chain breaks:

* ``edited`` — the entry's stored hash is not the hash of its content (a field was changed);
* ``relinked`` — its ``prev_hash`` is not the previous entry's hash (the previous entry was
  edited and re-hashed, or entries were removed before it);
* ``missing`` — a ``seq`` is skipped (an entry was deleted);
* ``truncated`` — the head records a later entry than the log holds (entries were deleted at
  the end), or the head is missing while entries exist.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.audit.models import GENESIS_HASH, AuditEntry

CHAIN_VERSION = 1


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""The canonical form's encoder: what ``json.dumps`` with these options uses, made once."""


def canonical(
    *,
    tenant_id: uuid.UUID,
    entry_id: uuid.UUID,
    seq: int,
    at: datetime,
    actor_kind: str,
    actor: str,
    actor_id: str | None,
    client_id: str | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    details: Mapping[str, Any],
    source: str | None,
    prev_hash: str,
) -> bytes:
    """The bytes an entry's hash is computed over."""
    doc = {
        "v": CHAIN_VERSION,
        "tenant_id": str(tenant_id),
        "id": str(entry_id),
        "seq": seq,
        "at": _iso(at),
        "actor_kind": actor_kind,
        "actor": actor,
        "actor_id": actor_id,
        "client_id": client_id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "details": details,
        "source": source,
        "prev_hash": prev_hash,
    }
    return _CANONICAL.encode(doc).encode()


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 (hex) of ``entry``'s canonical serialization."""
    return hashlib.sha256(
        canonical(
            tenant_id=entry.tenant_id,
            entry_id=entry.id,
            seq=entry.seq,
            at=entry.at,
            actor_kind=entry.actor_kind,
            actor=entry.actor,
            actor_id=entry.actor_id,
            client_id=entry.client_id,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=entry.details or {},
            source=entry.source,
            prev_hash=entry.prev_hash,
        )
    ).hexdigest()


@dataclass(frozen=True)
class Break:
    """Where a chain breaks first: the entry's ``seq`` (and id when it exists), and why."""

    seq: int
    reason: str
    """``edited``, ``relinked``, ``missing`` or ``truncated``."""
    detail: str
    entry_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Verification:
    """The result of checking a tenant's chain."""

    ok: bool
    checked: int
    last_seq: int
    first_broken: Break | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (CLI and API)."""
        broken = self.first_broken
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_seq": self.last_seq,
            "first_broken": None
            if broken is None
            else {
                "seq": broken.seq,
                "entry_id": str(broken.entry_id) if broken.entry_id else None,
                "reason": broken.reason,
                "detail": broken.detail,
            },
        }


def verify_entries(entries: Iterable[AuditEntry], head: tuple[int, str] | None) -> Verification:
    """Check ``entries`` (one tenant's, in ``seq`` order) against each other and the head.

    :param head: the head's ``(seq, hash)``, or None when there is no head row.
    """
    expected_seq, prev = 1, GENESIS_HASH
    checked = 0
    for entry in entries:
        if entry.seq != expected_seq:
            return Verification(
                False,
                checked,
                expected_seq - 1,
                Break(
                    expected_seq,
                    "missing",
                    f"entry {expected_seq} is missing (deleted): the log goes from "
                    f"{expected_seq - 1} to {entry.seq}",
                ),
            )
        if entry_hash(entry) != entry.hash:
            return Verification(
                False,
                checked,
                entry.seq - 1,
                Break(
                    entry.seq,
                    "edited",
                    f"entry {entry.seq} does not match its hash (its content was changed)",
                    entry.id,
                ),
            )
        if entry.prev_hash != prev:
            return Verification(
                False,
                checked,
                entry.seq - 1,
                Break(
                    entry.seq,
                    "relinked",
                    f"entry {entry.seq} does not chain to entry "
                    f"{entry.seq - 1} (that entry was changed or removed)",
                    entry.id,
                ),
            )
        checked += 1
        prev = entry.hash
        expected_seq += 1
    last = expected_seq - 1
    if head is None:
        if last:
            return Verification(
                False,
                checked,
                last,
                Break(last, "truncated", "the log's head record is missing"),
            )
        return Verification(True, 0, 0)
    head_seq, head_hash = head
    if head_seq > last:
        return Verification(
            False,
            checked,
            last,
            Break(
                last + 1,
                "truncated",
                f"entry {last + 1} is missing (deleted): the head "
                f"records entry {head_seq} but the log ends at {last}",
            ),
        )
    if head_seq < last:
        return Verification(
            False,
            checked,
            last,
            Break(
                head_seq + 1,
                "relinked",
                f"entries after {head_seq} were added outside the "
                f"application (the head records entry {head_seq}, the log ends at {last})",
            ),
        )
    if head_hash != prev:
        return Verification(
            False,
            checked,
            last,
            Break(
                last,
                "relinked",
                f"the head records another hash for entry {last} than the "
                "log holds (the entry was replaced)",
            ),
        )
    return Verification(True, checked, last)
