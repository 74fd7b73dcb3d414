"""The purposes personal data may be read in clear for, and how a caller declares one.

保险行业客户信息管理制度 (2): customer information is used only for stated purposes (核保、理赔、
营销 ...). A caller holding ``customers:read_clear`` sees personal fields in clear only when it
declares one of these purposes in the ``X-Purpose`` request header; every such read is written
to the audit log (who, which customer, which fields, which purpose, from which client).
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import HeaderParameter

from core.api.problems import Problem

PURPOSES: dict[str, tuple[str, str]] = {
    "complaint_handling": ("投诉处理", "Handling a complaint or appeal"),
    "claims_handling": ("理赔", "Handling a claim"),
    "callback": ("回访", "A callback visit"),
    "underwriting": ("核保", "Underwriting"),
    "policy_service": ("保全服务", "Policy service (changes, renewals, queries)"),
    "data_subject_request": ("个人信息权利请求", "Answering the customer's own request"),
}
"""Purpose → (Chinese, English)."""

PURPOSE_HEADER = "X-Purpose"

PurposeHeader = Annotated[
    str | None,
    HeaderParameter(
        name=PURPOSE_HEADER,
        required=False,
        max_length=40,
        description="Why you need personal fields in clear: one of "
        + ", ".join(f"`{k}` ({v[0]})" for k, v in PURPOSES.items())
        + ". Without it (or without `customers:read_clear` at the customer's unit) personal "
        "fields are masked. Every clear read is audited.",
    ),
]
"""The ``X-Purpose`` request header, for handler signatures."""


def check_purpose(purpose: str) -> str:
    """``purpose`` if it is a known purpose, else a 422 problem listing them."""
    if purpose not in PURPOSES:
        raise Problem(
            422,
            f"unknown purpose {purpose!r}; declare one of: {', '.join(PURPOSES)}",
            slug="unknown-purpose",
            purposes=sorted(PURPOSES),
        )
    return purpose
