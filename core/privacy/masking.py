"""Masking personal fields for display: enough to recognise a customer, not to use their data.

``138****5678``, ``110***********1234``, ``张*``, ``z***@example.com``, ``北京市朝阳区****``,
``6222***********3445``. Phone and e-mail masking are the delivery log's
(:mod:`core.notifications.masking`), so a customer looks the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from core.notifications.masking import mask_email
from core.notifications.masking import mask_phone as _mask_any_phone

__all__ = [
    "MASKERS",
    "mask",
    "mask_address_text",
    "mask_bank_account",
    "mask_email",
    "mask_id_number",
    "mask_name",
    "mask_phone",
    "mask_text",
]

_AREA_ENDS = ("区", "县", "旗", "州", "盟")


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678`` (the delivery log's rule; a fast path for digits)."""
    if phone.isdigit() and len(phone) >= 7:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return _mask_any_phone(phone)


def mask_name(name: str) -> str:
    """The first character, then one ``*`` per further character: ``张三丰`` → ``张**``."""
    name = name.strip()
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def mask_id_number(number: str) -> str:
    """The first 3 and last 4 characters: ``11010519491231002X`` → ``110***********002X``."""
    number = number.strip()
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def mask_address_text(address: str) -> str:
    """Down to the district (区/县): ``北京市朝阳区建国路88号`` → ``北京市朝阳区****``."""
    address = address.strip()
    cut = max((address.rfind(end, 0, 16) for end in _AREA_ENDS), default=-1)
    if cut < 0:
        cut = address.rfind("市", 0, 16)
    keep = address[: cut + 1] if cut >= 0 else address[:3]
    return keep if keep == address else keep + "****"


def mask_bank_account(account: str) -> str:
    """The first 4 and last 4 digits: ``6222020200112233445`` → ``6222***********3445``."""
    digits = account if account.isalnum() else "".join(c for c in account if c.isalnum())
    if len(digits) <= 8:
        return "*" * len(digits)
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


MASKERS: dict[str, Callable[[str], str]] = {
    "name": mask_name,
    "id_number": mask_id_number,
    "phone": mask_phone,
    "email": mask_email,
    "address": mask_address_text,
    "bank_account": mask_bank_account,
}
"""The masking function of each personal field."""


def mask(field: str, value: str | None) -> str | None:
    """``value`` masked as personal field ``field`` (None stays None)."""
    if value is None:
        return None
    return MASKERS[field](value)


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_NUMBER = re.compile(r"(?<![0-9A-Za-z])(?<![A-Za-z]-)\+?\d(?:[ \-]?\d){5,}[Xx]?(?![0-9A-Za-z])")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")
"""A run of digits, possibly with spaces or dashes inside and an ``X`` at the end (identity
numbers): phone, identity-card, bank-card numbers in free text. Not part of a code such as
``P2024…`` or ``DSR-20261126-…`` (a letter, or a letter and a dash, right before it)."""
_DIGIT = re.compile(r"\d")
"""Any digit: text without one has no number to mask (a much faster scan than ``_NUMBER``)."""


def _mask_number(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or _DATE.match(text):  # amounts, counts, dates (and their times)
        return text
    kept = "".join(c for c in text if c.isalnum())
    sign = "+" if text.startswith("+") else ""
    return sign + kept[:3] + "*" * (len(kept) - 7) + kept[-4:]


def mask_text(text: str) -> str:
    """Free text (a case's description, a decision, a notice) with the identifiers it
    contains masked: e-mail addresses (``z***@example.com``) and every number of seven
    digits or more (phone, identity, bank-card numbers: ``138****5678``). Names and the
    narrative stay: the people who may read the case need them to work it."""
    if not text:
        return text
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if _DIGIT.search(text) is None:  # most texts: no number to look at (a fast scan)
        return text
    return _NUMBER.sub(_mask_number, text)
