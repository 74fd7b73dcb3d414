"""Writing and reading the audit log: :func:`record` appends, :func:`verify` checks a chain.

:func:`record` is the one way to append. It works in the caller's session and transaction (the
entry is committed, or rolled back, with the change it describes), and serializes the appends
of a tenant by locking the tenant's :class:`~core.audit.models.AuditHead` row (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite serializes writers anyway). The head row is created with an
``INSERT ... ON CONFLICT DO NOTHING`` the first time, so two first appends cannot both create it.

What goes in ``details``: identifiers, names of fields, counts, reasons, masked values. Never a
secret (keys named like ``password``, ``secret``, ``token`` ... are refused with a ValueError)
and never clear personal data (use masked values and keyed fingerprints, as
:mod:`core.privacy` does for corrections).
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, bindparam, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit.chain import Verification, entry_hash, verify_entries
from core.audit.models import GENESIS_HASH, AuditEntry, AuditHead
from core.auth.principal import Principal
from core.db import TenantRequiredError, insert_new, new_id, new_object, utcnow
from core.db_batch import WriteBatch
from core.db_driver import kept_rows

ActorKind = Literal["person", "client", "platform", "system"]

FORBIDDEN_KEY_PARTS: tuple[str, ...] = (
    "password",
    "secret",
    "private_key",
    "access_token",
    "refresh_token",
    "code_verifier",
    "authorization",
)
"""Parts of a ``details`` key that mark a secret; such a key is refused."""


@dataclass(frozen=True)
class AuditActor:
    """Who acted.

    :param kind: ``person``, ``client`` (an integrator with its own credentials), ``platform``
        (provisioning, manifests, the CLI) or ``system`` (a scheduler job).
    :param label: ``person:<username>``, ``client:<client id>``, ``platform:<what>``,
        ``system:<job>``.
    :param person_id: the person, when a person acted.
    :param client_id: the OAuth client the request came through.
    """

    kind: ActorKind
    label: str
    person_id: uuid.UUID | None = None
    client_id: str | None = None

    @classmethod
    def platform(cls, what: str) -> AuditActor:
        """The platform path (provisioning, manifests, the command line): ``platform:<what>``."""
        return cls("platform", f"platform:{what}")

    @classmethod
    def system(cls, job: str) -> AuditActor:
        """A background job: ``system:<job>``."""
        return cls("system", f"system:{job}")


@dataclass(frozen=True)
class Target:
    """What an action was done to: a type (``customer``, ``case``, ``role`` ...) and an id."""

    type: str
    id: str


def actor_from(principal: Principal, session: Session | None = None) -> AuditActor:
    """The :class:`AuditActor` of an authenticated caller.

    With a ``session``, a person is labelled by their username (a token's subject is their
    id); without one, by the subject.
    """
    if principal.kind == "person":
        name = principal.subject
        if session is not None and principal.person_id is not None:
            from core.people.models import Person

            person = session.get(Person, (principal.tenant_id, principal.person_id))
            name = person.username if person is not None else name
        return AuditActor("person", f"person:{name}", principal.person_id, principal.client_id)
    client = principal.client_id or principal.subject
    return AuditActor("client", f"client:{client}", None, client)


_FORBIDDEN = re.compile("|".join(map(re.escape, FORBIDDEN_KEY_PARTS)))
"""Any of :data:`FORBIDDEN_KEY_PARTS` in a key (one scan of the key, not one per part)."""


def _check_details(value: Any, path: str = "details") -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            lowered = str(key).lower()
            if _FORBIDDEN.search(lowered):
                raise ValueError(f"{path}.{key}: secrets never go into the audit log")
            _check_details(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_details(item, f"{path}[{i}]")


_SCALARS = (str, int, bool, type(None))
"""Values that come back from JSON as they went in (floats may not: ``nan``, ``1e400``)."""


def _plain(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """``details`` as plain JSON (what the database gives back is what was hashed)."""
    if not details:
        return {}
    _check_details(details)
    if all(type(k) is str and type(v) in _SCALARS for k, v in details.items()):
        return dict(details)  # what the round trip below would give, for less
    result = json.loads(json.dumps(dict(details), default=str, ensure_ascii=False))
    assert isinstance(result, dict)
    return result


def _tenant(session: Session, tenant_id: uuid.UUID | None) -> uuid.UUID:
    found = tenant_id or session.info.get("tenant_id")
    if found is None:
        raise TenantRequiredError("an audit entry needs a tenant")
    if session.info.get("tenant_id") not in (None, found):
        raise TenantRequiredError("an audit entry of another tenant than the session's")
    return found if type(found) is uuid.UUID else uuid.UUID(str(found))


_HEADS = cast(Table, AuditHead.__table__)


def _lock_head(session: Session, tenant_id: uuid.UUID) -> tuple[int, str]:
    """The tenant's head ``(seq, hash)``, created if missing and locked until the transaction
    ends: one upsert whose no-op update takes the row lock and returns the head."""
    connection = session.connection()  # no autoflush: the caller's changes flush with its own
    ((seq, hash_),) = kept_rows(
        connection,
        _head_statement(connection.dialect.name),
        {"tenant_id": tenant_id, "id": new_id(), "seq": 0, "hash": GENESIS_HASH},
    )
    return int(seq), str(hash_)


@functools.cache
def _head_statement(dialect: str, prefix: str = "") -> Any:
    """``INSERT .. ON CONFLICT (tenant_id) DO UPDATE SET seq = seq RETURNING seq, hash``
    (built once per dialect), its parameters named ``<prefix><column>``."""
    table = _HEADS
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(
        {name: bindparam(f"{prefix}{name}") for name in ("tenant_id", "id", "seq", "hash")}
    )
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id"], set_={"seq": table.c.seq}
    ).returning(table.c.seq, table.c.hash)


def lock_head_with(
    session: Session,
    statement: Any,
    params: Mapping[str, Any],
    *,
    tenant_id: uuid.UUID | None = None,
) -> tuple[Any, tuple[int, str]]:
    """Run ``statement`` (a kept ``INSERT`` or ``UPDATE .. RETURNING`` of one row, built once by
    its caller) with ``params``, and lock the tenant's audit head as :func:`record` does, in
    **one** statement on PostgreSQL (two elsewhere): for a flow that needs both before it
    writes, e.g. a registration's case-number counter. Returns the statement's row and the
    head ``(seq, hash)``, to give to :func:`record` (``head=``) in the same transaction. The
    head's parameters may not share a name with the statement's (``head_*`` are taken)."""
    tid = _tenant(session, tenant_id)
    connection = session.connection()
    if connection.dialect.name != "postgresql":  # SQLite: no data-modifying CTEs
        (row,) = kept_rows(connection, statement, params)
        return row, _lock_head(session, tid)
    head = {"head_tenant_id": tid, "head_id": new_id(), "head_seq": 0, "head_hash": GENESIS_HASH}
    (row,) = kept_rows(connection, _with_head(statement), {**params, **head})
    return row, (int(row.head_seq), str(row.head_hash))


@functools.cache
def _with_head(statement: Any) -> Any:
    """``WITH w AS (<statement>), h AS (<head upsert>) SELECT w.*, h.seq, h.hash`` (kept per
    statement, so its compiled form is cached)."""
    written = statement.cte("w")
    head = _head_statement("postgresql", "head_").cte("h")
    return select(
        *written.c, head.c.seq.label("head_seq"), head.c.hash.label("head_hash")
    ).select_from(written.join(head, literal_column("true")))


_MOVE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.tenant_id == bindparam("tid"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"), at=bindparam("at"))
)
"""The head moved to a new entry (built once)."""


def record(
    session: Session,
    *,
    action: str,
    actor: AuditActor,
    target: Target | tuple[str, object] | None = None,
    details: Mapping[str, Any] | None = None,
    source: str | None = None,
    tenant_id: uuid.UUID | None = None,
    batch: WriteBatch | None = None,
    head: tuple[int, str] | None = None,
) -> AuditEntry:
    """Append an entry to the tenant's audit log, in the caller's transaction.

    :param action: what happened, ``<domain>.<verb>`` (``auth.sign_in``, ``customer.read_clear``,
        ``role.assigned``, ``plugin.settings_changed``, ``case.transitioned`` ...).
    :param actor: who did it (:func:`actor_from`, :meth:`AuditActor.platform`,
        :meth:`AuditActor.system`).
    :param target: what it was done to: a :class:`Target` or ``(type, id)``.
    :param details: JSON-able facts; never secrets or clear personal data (see module doc).
    :param source: the caller's network address, when known.
    :param tenant_id: required on the platform path; a tenant session supplies its own.
    :param batch: the head is still locked and read now, but the head's move and the entry
        are added to ``batch`` (:mod:`core.db_batch`), written when it is executed. Execute it
        before the transaction appends another entry (refused until then: the head has not
        moved yet).
    :param head: the head ``(seq, hash)`` as :func:`lock_head_with` locked and returned it in
        this transaction, with no entry appended since; else it is locked and read here.
    :returns: the new entry, with its ``seq`` and ``hash``, written (or in ``batch``); the head
        stays locked until the transaction ends.
    :raises ValueError: ``details`` holds a key that names a secret.
    """
    tid = _tenant(session, tenant_id)
    unsent = session.info.get(_UNSENT)
    if unsent is not None and unsent[0] is session.get_transaction() and len(unsent[1]):
        raise RuntimeError("this transaction's last audit entry is in a batch not yet executed")
    plain = _plain(details)
    if isinstance(target, tuple):
        target = Target(str(target[0]), str(target[1]))
    head_seq, head_hash = head if head is not None else _lock_head(session, tid)
    entry = new_object(
        AuditEntry,
        tenant_id=tid,
        id=new_id(),
        seq=head_seq + 1,
        at=utcnow(),
        actor_kind=actor.kind,
        actor=actor.label[:200],
        actor_id=str(actor.person_id) if actor.person_id else None,
        client_id=actor.client_id,
        action=action,
        target_type=target.type if target else None,
        target_id=target.id if target else None,
        details=plain,
        source=(source or None) and source[:100],
        prev_hash=head_hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    move = {"tid": tid, "seq": entry.seq, "hash": entry.hash, "at": entry.at}
    if batch is None:
        session.connection().execute(_MOVE_HEAD, move)
    else:
        batch.update(_MOVE_HEAD, move)
        session.info[_UNSENT] = (session.get_transaction(), batch)
    insert_new(session, [entry], batch)  # without waiting for (or running) a flush
    return entry


_UNSENT = "insurdesk.audit_unsent"
"""``session.info`` key: (transaction, batch) of the last entry :func:`record` added to a
batch; another entry in that transaction waits until the batch is executed."""


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit list and export (all optional, combined with AND)."""

    action: str | None = None
    """An exact action, or a prefix ending with ``.`` or ``*`` (``customer.``, ``auth.*``)."""
    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def filtered(stmt: Select[Any], f: AuditFilter) -> Select[Any]:
    """``stmt`` (over :class:`AuditEntry`) with the filters of ``f``."""
    if f.action:
        if f.action.endswith("*") or f.action.endswith("."):
            stmt = stmt.where(AuditEntry.action.startswith(f.action.rstrip("*"), autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == f.action)
    if f.actor:
        stmt = stmt.where(AuditEntry.actor == f.actor)
    if f.target_type:
        stmt = stmt.where(AuditEntry.target_type == f.target_type)
    if f.target_id:
        stmt = stmt.where(AuditEntry.target_id == f.target_id)
    if f.since:
        stmt = stmt.where(AuditEntry.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditEntry.at < f.until)
    return stmt


def iter_entries(
    session: Session, f: AuditFilter | None = None, batch: int = 1000
) -> Iterator[AuditEntry]:
    """The session tenant's entries in ``seq`` order, read in batches (keyset pagination)."""
    last = 0
    while True:
        stmt = select(AuditEntry).where(AuditEntry.seq > last)
        if f is not None:
            stmt = filtered(stmt, f)
        rows = session.scalars(stmt.order_by(AuditEntry.seq).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield row
            session.expunge(row)  # keep the identity map small on long logs
        last = rows[-1].seq


def verify(session: Session) -> Verification:
    """Check the chain of the session's tenant (see :mod:`core.audit.chain`)."""
    head = session.execute(select(AuditHead.seq, AuditHead.hash)).first()
    return verify_entries(iter_entries(session), (head[0], head[1]) if head else None)


def source_of(request: Any) -> str | None:
    """The caller's network address of an HTTP request (the peer; proxies are not trusted)."""
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    return str(host)[:100] if host else None
