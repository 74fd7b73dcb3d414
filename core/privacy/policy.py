"""The privacy policy at a unit: ``privacy_cn``'s settings when a tenant enabled it there, the
same defaults otherwise. Retention never goes below the statutory minimum (保险法 第八十七条)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from core.plugins.registry import PluginRegistry, build_registry
from core.plugins.resolution import TenantPlugins, load_tenant_config, resolve

PLUGIN = "privacy_cn"
STATUTORY_RETENTION_YEARS_LONG = 10
"""保险法 第八十七条: records of a contract of over one year: at least 10 years after it ends."""
STATUTORY_RETENTION_YEARS_SHORT = 5
"""... of a contract of one year or less, at least 5 years."""


@dataclass(frozen=True)
class PrivacyPolicy:
    """The periods that apply at one unit."""

    dsr_working_days: int = 15
    prospect_retention_days: int = 730
    former_customer_retention_years: int = 10
    dsr_note_retention_days: int = 1095
    case_text_retention_years: int = 10
    """Years a closed case's personal free text is kept after closing (never below
    保险法 第八十七条's 5 years; and not while its policy's own period runs)."""
    delivery_log_retention_days: int = 365
    """Days the delivery log keeps whom a message went to (masked address, address hash)."""
    attachment_retention_years: int | None = None
    """Years a closed case's attachment files are kept after closing (never below
    保险法 第八十七条's 5 years; not while its policy's own period runs). None: as long as
    the case's free text (:attr:`case_text_retention_years`), see :attr:`attachment_years`."""
    source: str = "default"
    """``privacy_cn`` when the plugin's settings apply, else ``default``."""

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> PrivacyPolicy:
        """The policy from ``privacy_cn``'s effective settings (None: the defaults)."""
        if settings is None:
            return cls()
        base = cls()
        return cls(
            dsr_working_days=int(settings.get("dsr_working_days", base.dsr_working_days)),
            prospect_retention_days=int(
                settings.get("prospect_retention_days", base.prospect_retention_days)
            ),
            former_customer_retention_years=max(
                STATUTORY_RETENTION_YEARS_LONG,
                int(
                    settings.get(
                        "former_customer_retention_years", base.former_customer_retention_years
                    )
                ),
            ),
            dsr_note_retention_days=int(
                settings.get("dsr_note_retention_days", base.dsr_note_retention_days)
            ),
            case_text_retention_years=max(
                STATUTORY_RETENTION_YEARS_SHORT,
                int(settings.get("case_text_retention_years", base.case_text_retention_years)),
            ),
            delivery_log_retention_days=int(
                settings.get("delivery_log_retention_days", base.delivery_log_retention_days)
            ),
            attachment_retention_years=(
                None
                if settings.get("attachment_retention_years") is None
                else max(
                    STATUTORY_RETENTION_YEARS_SHORT, int(settings["attachment_retention_years"])
                )
            ),
            source=PLUGIN,
        )

    @property
    def attachment_years(self) -> int:
        """Years a closed case's attachments are kept: ``attachment_retention_years`` when
        set, else the case text's period (the files are the case's evidence and go with it)."""
        if self.attachment_retention_years is not None:
            return self.attachment_retention_years
        return self.case_text_retention_years


@lru_cache(maxsize=1)
def _registry() -> PluginRegistry:
    return build_registry()


def policy_from(plugins: TenantPlugins | None) -> PrivacyPolicy:
    """The policy of a unit's resolved plugins."""
    if plugins is None:
        return PrivacyPolicy()
    return PrivacyPolicy.of(plugins.settings.get(PLUGIN))


def policy_at(
    session: Session,
    tenant_id: uuid.UUID,
    unit_path: str,
    registry: PluginRegistry | None = None,
) -> PrivacyPolicy:
    """The policy at the unit with ``unit_path`` (reads the tenant's plugin configuration)."""
    reg = registry or _registry()
    if PLUGIN not in reg:
        return PrivacyPolicy()
    return policy_from(resolve(reg, load_tenant_config(session, tenant_id), unit_path))
