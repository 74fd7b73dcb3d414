"""The ciphertext token format, shared by the keyring and the encrypted-field columns.

``v1:<data-key version>:<base64(nonce || AES-GCM ciphertext || tag)>``.
"""

from __future__ import annotations

TOKEN_PREFIX = "v1:"


class DecryptionError(RuntimeError):
    """A personal field does not decrypt with its tenant's key (wrong tenant, row or key)."""


def token_version(token: str) -> int:
    """The data-key version a ciphertext was made with."""
    try:
        _, version, _ = token.split(":", 2)
        return int(version)
    except ValueError as exc:
        raise DecryptionError("not an insurdesk ciphertext") from exc


def is_token(value: object) -> bool:
    """Whether ``value`` looks like a ciphertext token."""
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX) and value.count(":") >= 2
