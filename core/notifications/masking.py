"""Masking recipients for the delivery log: enough to recognise, not enough to contact."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

_DIGITS = re.compile(r"\d")


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``; keeps a ``+86`` prefix, hides the middle digits."""
    digits = "".join(_DIGITS.findall(phone))
    if len(digits) < 7:
        return "*" * len(digits)
    prefix = "+" if phone.strip().startswith("+") else ""
    if prefix and digits.startswith("86") and len(digits) == 13:
        return f"+86 {mask_phone(digits[2:])}"
    return f"{prefix}{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_email(address: str) -> str:
    """``zhang.san@example.com`` → ``z***@example.com``."""
    local, _, domain = address.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_url(url: str) -> str:
    """Scheme and host only: ``https://hooks.example.com/…`` (paths and queries carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def mask_address(address: str) -> str:
    """Mask whatever ``address`` is: a ``mailto:``/e-mail, a ``tel:``/``sms:``/phone, a URL."""
    lowered = address.lower()
    for scheme in ("mailto:", "tel:", "sms:"):
        if lowered.startswith(scheme):
            return mask_address(address[len(scheme) :])
    if "://" in address:
        return mask_url(address)
    if "@" in address:
        return mask_email(address)
    if _DIGITS.search(address) and re.fullmatch(r"[+\d\s\-()]+", address):
        return mask_phone(address)
    return address[:1] + "***"


def recipient_key(channel: str, address: str) -> str:
    """The delivery key's recipient part: SHA-256 of the channel and the normalized address."""
    normalized = address.strip()
    if "://" not in normalized:
        normalized = normalized.lower()
    return hashlib.sha256(f"{channel}\n{normalized}".encode()).hexdigest()
