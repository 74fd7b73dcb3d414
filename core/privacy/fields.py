"""Encrypted personal fields on ORM models: one sealed record per row, and the :class:`Sealed`
descriptor for each of its fields.

A model keeps all of a row's personal fields in one ciphertext column (``__sealed_column__``,
e.g. ``personal_enc``): a JSON object encrypted with AES-256-GCM under the tenant's active data
key, bound to the tenant, table and row. One decryption per row, however many fields a reader
uses. Exact-match search goes through keyed blind-index columns beside it::

    personal_enc: Mapped[str | None] = mapped_column(SealedText, default=None)
    phone_bidx: Mapped[str | None] = mapped_column(String(32), default=None)
    key_version: Mapped[int] = mapped_column(default=0)
    phone = Sealed[str | None](index="phone_bidx", normalize=normalize_phone)

Reading ``customer.phone`` decrypts the record once per ciphertext (the tenant key comes from
the process keyring). Assigning it (or passing it to the constructor) keeps the clear value in
memory only; the session's ``before_flush`` seals the whole record with the active data key,
computes the blind indexes of the fields that changed and sets ``key_version``, so nothing
clear ever reaches SQL.

Queries cannot go wrong silently: ``Customer.phone == x`` raises (compare the blind-index
column instead, :func:`core.customers.services.index_of`), and anything but ciphertext written
to the sealed column (e.g. a bulk ``UPDATE``) is refused by :class:`SealedText`.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec
from sqlalchemy import Text, TypeDecorator, event
from sqlalchemy.orm import Session, object_session

from core.db import TENANT_KEY, TenantRequiredError, new_id
from core.privacy.tokens import is_token, token_version

if TYPE_CHECKING:
    from core.privacy.crypto import Keyring

T = TypeVar("T", str, str | None)
PENDING = "pending:"
_CLEAR = "_sealed_clear"
_PENDING = "_sealed_pending"
_KEYRING = "_sealed_keyring"
_SESSION_KEYRING = "privacy.keyring"
_decode = msgspec.json.Decoder(dict[str, str])
_encode = msgspec.json.Encoder()


class SealedText(TypeDecorator[str]):
    """A ciphertext column: refuses anything but ``None`` and ciphertext tokens."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None or is_token(value):
            return value
        raise ValueError(
            "personal data was about to be written unencrypted: assign it through the model "
            "(e.g. customer.phone = ...), never to the sealed column or in a bulk UPDATE"
        )


def normalize_phone(value: str) -> str:
    """Digits only (a leading ``+`` kept): ``138 0013-8000`` → ``13800138000``."""
    digits = "".join(c for c in value if c.isdigit())
    return ("+" + digits) if value.strip().startswith("+") else digits


def normalize_id_number(value: str) -> str:
    """Upper case without spaces or dashes (``11010519491231002x`` → ``...002X``)."""
    return "".join(c for c in value.upper() if c.isalnum())


def normalize_name(value: str) -> str:
    """NFKC, outer spaces removed, inner runs of spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


class Sealed(Generic[T]):
    """A personal field inside the row's sealed record (see the module docstring).

    :param index: the attribute of its blind-index column, if searchable by exact match.
    :param normalize: what is indexed: the normalized value (so ``138 0013 8000`` finds
        ``13800138000``).
    :param mask: how the field is shown masked; the masked form is computed when the record
        is sealed and kept inside it (``#<field>``), so masked reads cost no more than a
        dictionary lookup (:func:`masked`).
    """

    def __init__(
        self,
        *,
        index: str | None = None,
        normalize: Callable[[str], str] | None = None,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        self.index = index
        self.normalize = normalize or (lambda v: v)
        self.mask = mask
        self.name = ""
        self.column = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.column = str(getattr(owner, "__sealed_column__", ""))
        fields = dict(getattr(owner, "__sealed_fields__", {}))
        fields[name] = self
        owner.__sealed_fields__ = fields  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Sealed({self.name!r})"

    def __eq__(self, other: object) -> bool:
        raise TypeError(
            f"{self.name} is encrypted: compare its blind index ({self.index}) with "
            "core.customers.services.index_of(...), never the field"
        )

    __hash__ = object.__hash__

    @overload
    def __get__(self, obj: None, owner: type) -> Sealed[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> Sealed[T] | T:
        if obj is None:
            return self
        pending = obj.__dict__.get(_PENDING)
        if pending and self.name in pending:
            return pending[self.name]
        return record_of(obj, self.column).get(self.name)  # type: ignore[return-value]

    def __set__(self, obj: object, value: T) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{self.name} must be a string or None")
        pending = obj.__dict__.get(_PENDING)
        if not pending:
            pending = obj.__dict__[_PENDING] = {}
            column = sealed_column(obj)
            current = getattr(obj, column)
            if current is not None and not current.startswith(PENDING):
                fields = sealed_fields(obj)  # keep the other fields of the record
                pending.update({k: v for k, v in record_of(obj).items() if k in fields})
            setattr(obj, column, f"{PENDING}{uuid.uuid4().hex}")
        pending[self.name] = value


def sealed_fields(obj: object) -> dict[str, Sealed[Any]]:
    """The sealed fields of ``obj``'s model (empty for other models)."""
    return getattr(type(obj), "__sealed_fields__", {})


def sealed_column(obj: object) -> str:
    """The attribute of the model's sealed-record column."""
    return str(type(obj).__sealed_column__)  # type: ignore[attr-defined]


def aad(obj: Any) -> bytes:
    """The associated data binding a record to its tenant, table and row:
    ``<tenant id bytes>|<table>|<row id bytes>``."""
    return aad_for(obj.tenant_id, obj.__tablename__, obj.id)


def aad_for(tenant_id: uuid.UUID, table: str, row_id: uuid.UUID) -> bytes:
    """:func:`aad` from its parts (re-encryption and migrations work on rows, not objects)."""
    return b"|".join((tenant_id.bytes, table.encode(), row_id.bytes))


def encode_record(record: dict[str, str]) -> bytes:
    """The plaintext of a sealed record."""
    return _encode.encode(record)


def decode_record(plaintext: bytes) -> dict[str, str]:
    """A sealed record's fields from its plaintext."""
    return _decode.decode(plaintext)


def _keyring(obj: Any, session: Session | None) -> Keyring:
    found: Keyring | None = obj.__dict__.get(_KEYRING)
    if found is None:
        if session is None:
            raise TenantRequiredError("an encrypted record without a session or keyring")
        found = session.info.get(_SESSION_KEYRING)
        if found is None:
            from core.privacy.crypto import keyring_of

            found = session.info[_SESSION_KEYRING] = keyring_of(session)
        obj.__dict__[_KEYRING] = found
    return found


def record_of(obj: Any, column: str | None = None) -> dict[str, str]:
    """The decrypted record of ``obj`` (cached per ciphertext; empty when there is none)."""
    column = column or sealed_column(obj)
    state = obj.__dict__
    cached = state.get(_CLEAR)
    if cached is not None and state.get(column) is cached[0]:
        return cached[1]
    token = getattr(obj, column)
    if token is None or token.startswith(PENDING):
        return {}
    session = object_session(obj)
    keyring = _keyring(obj, session)
    record = _decode.decode(keyring.open(session, obj.tenant_id, token, aad(obj)))
    obj.__dict__[_CLEAR] = (token, record)
    return record


def _session_keyring(session: Session) -> Keyring:
    keyring: Keyring | None = session.info.get(_SESSION_KEYRING)
    if keyring is None:
        from core.privacy.crypto import keyring_of

        keyring = session.info[_SESSION_KEYRING] = keyring_of(session)
    return keyring


def row_record(
    session: Session, model: type, tenant_id: uuid.UUID, row_id: uuid.UUID, token: str | None
) -> dict[str, str]:
    """The decrypted record of a row read without the ORM (:func:`record_of` for a plain
    ``SELECT`` of ``model``'s columns, e.g. a page of a list): empty when there is none."""
    if token is None or token.startswith(PENDING):
        return {}
    keyring = _session_keyring(session)
    bound = aad_for(tenant_id, str(model.__tablename__), row_id)  # type: ignore[attr-defined]
    return _decode.decode(keyring.open(session, tenant_id, token, bound))


def sealed_records(
    session: Session, model: type, tenant_id: uuid.UUID, rows: Sequence[Any]
) -> list[dict[str, str]]:
    """The decrypted record of each of ``rows`` (plain rows of ``model``'s table, with ``id``
    and the sealed column), in order, empty where there is none: :func:`row_record` for a
    page, with the key lookups and the associated-data prefix done once. As sealed: with the
    masked forms beside the fields (:data:`MASK_VERSION`)."""
    if not rows:
        return []
    keys = rows[0]._fields
    at_id, at_token = keys.index("id"), keys.index(str(model.__sealed_column__))  # type: ignore[attr-defined]
    open_token = _session_keyring(session).opener(session, tenant_id)
    table = str(model.__tablename__)  # type: ignore[attr-defined]
    prefix = aad_for(tenant_id, table, uuid.UUID(int=0))[:-16]  # + the row id's bytes
    out: list[dict[str, str]] = []
    for row in rows:
        token = row[at_token]
        if token is None or token.startswith(PENDING):
            out.append({})
            continue
        out.append(_decode.decode(open_token(token, prefix + row[at_id].bytes)))
    return out


def sealed_objects(
    model: type, rows: Sequence[Any], records: Sequence[dict[str, str]]
) -> list[Any]:
    """Each of ``rows`` (plain rows of ``model``'s table) with its decrypted record
    (:func:`sealed_records`) as an object that reads like the model's: the row's columns and
    the sealed fields (None where the record has no value)."""
    if not rows:
        return []
    keys = rows[0]._fields
    fields = tuple(getattr(model, "__sealed_fields__", {}))
    out: list[Any] = []
    for row, record in zip(rows, records, strict=True):
        values = dict(zip(keys, row, strict=True))
        values.update((name, record.get(name)) for name in fields)
        out.append(SimpleNamespace(**values))
    return out


MASK_VERSION = "2"
"""The masked forms a sealed record keeps: ``"#" + name`` holds field ``name`` masked where that
differs from the value (absent: the value shows as it is, e.g. a text without identifiers),
and ``"#"`` this version. Bump when a masking rule changes: records sealed before are masked
on the fly until they are sealed again (``insurdesk privacy reencrypt`` after a rotation).
Version 1 kept a masked form for every masked field, even an unchanged one."""


def masked_form(record: Mapping[str, str], name: str) -> str | None:
    """Field ``name`` masked as ``record`` keeps it, for a record of :data:`MASK_VERSION`
    (check ``record.get("#") == MASK_VERSION`` first)."""
    return record.get("#" + name, record.get(name))


def masked_forms(fields: Mapping[str, Sealed[Any]], record: Mapping[str, str]) -> dict[str, str]:
    """The masked forms ``record`` keeps beside its fields, by today's rules: ``"#" + name``
    for each field of ``fields`` with a mask that changes its value, and ``"#"``, the
    :data:`MASK_VERSION` (what sealing adds to a record, and re-encryption to an older one)."""
    out: dict[str, str] = {}
    for name, value in record.items():
        field = fields.get(name)
        if field is None or field.mask is None or value is None:
            continue
        masked_value = field.mask(value)
        if masked_value != value:
            out["#" + name] = masked_value
    out["#"] = MASK_VERSION
    return out


def masked(obj: Any, name: str) -> str | None:
    """Field ``name`` of ``obj`` masked (precomputed in the sealed record when it can be)."""
    field = sealed_fields(obj)[name]
    pending = obj.__dict__.get(_PENDING)
    if not pending or name not in pending:
        record = record_of(obj, field.column)
        if record.get("#") == MASK_VERSION:
            return masked_form(record, name)
        value: str | None = record.get(name)
    else:
        value = pending[name]
    if value is None or field.mask is None:
        return value
    return field.mask(value)


def view(obj: Any, *, clear: bool) -> dict[str, str | None]:
    """Every sealed field of ``obj``, in clear or masked, read with one lookup of the record
    (what a page of customers uses: one decryption per row, no per-field work)."""
    pending = obj.__dict__.get(_PENDING)
    fields = sealed_fields(obj)
    if not pending:
        record = record_of(obj, type(obj).__sealed_column__)
        if clear:
            return {name: record.get(name) for name in fields}
        if record.get("#") == MASK_VERSION:
            return {name: masked_form(record, name) for name in fields}
    if clear:
        return {name: getattr(obj, name) for name in fields}
    return {name: masked(obj, name) for name in fields}


def decrypted(obj: Any) -> dict[str, str | None]:
    """Every sealed field of ``obj`` in clear (exports, re-encryption)."""
    return {name: getattr(obj, name) for name in sealed_fields(obj)}


def reseal(obj: Any) -> None:
    """Have ``obj``'s record sealed again with the active key at the next flush."""
    fields = sealed_fields(obj)
    if fields:
        name = next(iter(fields))
        setattr(obj, name, getattr(obj, name))


def _seal_pending(
    session: Session,
    obj: Any,
    versions: dict[uuid.UUID, int],
    index_versions: dict[uuid.UUID, int],
) -> None:
    pending: dict[str, str | None] = obj.__dict__.get(_PENDING) or {}
    if not pending:
        return
    fields = sealed_fields(obj)
    tenant_id = obj.tenant_id or session.info.get(TENANT_KEY)
    if tenant_id is None:
        raise TenantRequiredError(f"{type(obj).__name__} with personal data but no tenant")
    obj.tenant_id = tenant_id
    if obj.id is None:
        obj.id = new_id()
    keyring = _keyring(obj, session)
    version = versions.get(tenant_id)
    if version is None:
        version = versions[tenant_id] = keyring.active_version(session, tenant_id)
    before = obj.__dict__.get(_CLEAR)
    old = before[1] if before else {}
    record: dict[str, str] = {k: v for k, v in pending.items() if v is not None and k in fields}
    column = sealed_column(obj)
    if record:
        record.update(masked_forms(fields, record))
        token = keyring.seal(
            keyring.cipher(session, tenant_id, version), version, _encode.encode(record), aad(obj)
        )
        setattr(obj, column, token)
        obj.__dict__[_CLEAR] = (token, record)
    else:
        setattr(obj, column, None)
        obj.__dict__.pop(_CLEAR, None)
    indexed = {name: field for name, field in fields.items() if field.index is not None}
    if indexed:
        from core.privacy.crypto import INDEX

        index_version = index_versions.get(tenant_id)
        if index_version is None:
            index_version = index_versions[tenant_id] = keyring.active_version(
                session, tenant_id, INDEX
            )
        # A row still indexed with a retired index key is indexed afresh, every field.
        everything = getattr(obj, "index_version", None) != index_version
        for name, field in indexed.items():
            if everything or name not in old or old.get(name) != record.get(name):
                indexed_value: str | None = record.get(name)
                setattr(
                    obj,
                    str(field.index),
                    None
                    if indexed_value is None
                    else keyring.blind_index(
                        session, tenant_id, name, field.normalize(indexed_value), index_version
                    ),
                )
        obj.index_version = index_version
    obj.key_version = version if record else 0
    obj.__dict__[_PENDING] = {}


def seal_new(session: Session, objects: Any, versions: dict[uuid.UUID, int] | None = None) -> None:
    """Seal the pending personal fields of ``objects`` now, as the session's ``before_flush``
    would: for objects written without a flush (:func:`core.db.insert_new`). The active key
    version is read once for all of them, unless ``versions`` gives it (per tenant; the
    caller read it ``FOR SHARE`` in this transaction, as
    :meth:`~core.privacy.crypto.Keyring.active_version` does)."""
    versions = dict(versions or {})
    index_versions: dict[uuid.UUID, int] = {}
    for obj in objects:
        if sealed_fields(obj):
            _seal_pending(session, obj, versions, index_versions)


@event.listens_for(Session, "before_flush")
def _encrypt_before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    versions: dict[uuid.UUID, int] = {}
    index_versions: dict[uuid.UUID, int] = {}
    for obj in list(session.new) + list(session.dirty):
        if sealed_fields(obj):
            _seal_pending(session, obj, versions, index_versions)


__all__ = [
    "Sealed",
    "SealedText",
    "aad",
    "decrypted",
    "normalize_id_number",
    "normalize_name",
    "normalize_phone",
    "record_of",
    "reseal",
    "seal_new",
    "sealed_column",
    "sealed_fields",
    "token_version",
]
