"""Request and response bodies of the plugin API (msgspec; unknown request fields refused)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec


class Texts(msgspec.Struct):
    """A text in Chinese and English."""

    zh: str
    en: str


class PluginOut(msgspec.Struct):
    """An installed plugin."""

    name: str
    version: str
    kind: str
    title: Texts
    description: Texts
    builtin: bool
    always_on: bool
    on_by_default: bool
    hooks: list[str]
    citations: list[str]
    config_schema: dict[str, Any]
    distribution: str | None = None


class ChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    """Enable, disable or inherit: an optional reason for the history."""

    reason: str | None = None


class SettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    """The unit's own settings of a plugin (the keys it overrides), replacing the previous."""

    settings: dict[str, Any]
    reason: str | None = None


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """Restore the state of an earlier version (as a new version)."""

    to_version: int
    reason: str | None = None


class SettingOut(msgspec.Struct):
    """A plugin's own state at one unit (not merged with the units above)."""

    plugin: str
    unit_id: uuid.UUID
    unit_code: str
    enabled: bool | None
    settings: dict[str, Any]
    version: int
    updated_at: dt.datetime | None = None


class VersionOut(msgspec.Struct):
    """One version in a plugin's history at a unit."""

    version: int
    action: str
    enabled: bool | None
    settings: dict[str, Any]
    changes: list[dict[str, Any]]
    changed_by: str
    changed_at: dt.datetime
    reason: str | None = None
    restored_version: int | None = None


class HistoryOut(msgspec.Struct):
    """A page of history, newest first; pass ``next_cursor`` as ``before`` for the next."""

    plugin: str
    unit_id: uuid.UUID
    items: list[VersionOut]
    next_cursor: int | None = None


class SourceOut(msgspec.Struct):
    """Where a value comes from: a unit, the schema's default, or the platform (always on)."""

    source: Literal["unit", "default", "always_on", "none"]
    unit_id: uuid.UUID | None = None
    unit_code: str | None = None


class EffectivePluginOut(msgspec.Struct):
    """A plugin at a unit: enabled or not and why, its merged settings and their provenance."""

    plugin: str
    enabled: bool
    enabled_by: SourceOut
    settings: dict[str, Any]
    provenance: dict[str, SourceOut]


class EffectiveOut(msgspec.Struct):
    """Every installed plugin's effective state at a unit."""

    unit_id: uuid.UUID
    unit_code: str
    revision: int
    plugins: list[EffectivePluginOut]


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    """Customer facts for a preview."""

    age: int | None = None
    vip: bool = False
    vulnerable: bool = False


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    """Policy facts for a preview."""

    line_of_business: str
    term_months: int | None = None
    start_date: dt.date | None = None
    cooling_off_end: dt.date | None = None
    group: bool = False


CaseTypeIn = Literal[
    "complaint", "appeal", "consultation", "claim_report", "whistleblowing", "service_request"
]


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True):
    """A hypothetical case: what would the plugins enabled at ``unit_id`` decide?"""

    unit_id: uuid.UUID
    case_type: CaseTypeIn
    received_at: dt.datetime
    channel: str = "hotline"
    trigger: str = "received"
    customer: CustomerIn | None = None
    policy: PolicyIn | None = None
    service_kind: str | None = None
    complexity: list[str] = msgspec.field(default_factory=list)


class RuleOut(msgspec.Struct):
    """A deadline rule."""

    clock: str
    amount: int
    unit: str
    citation: str
    source: str
    statutory: bool
    description: str = ""


class ClockOut(msgspec.Struct):
    """A resolved clock: the winning rule, its due and the other candidates."""

    clock: str
    due: dt.datetime
    last_day: dt.date
    provisional: bool
    rule: RuleOut
    candidates: list[RuleOut]


class FollowUpOut(msgspec.Struct):
    """A follow-up the plugins ask for."""

    kind: str
    due: dt.datetime | None
    recipients: list[str]
    sources: list[str]
    notes: list[str]


class PreviewOut(msgspec.Struct):
    """What the enabled plugins decide for the hypothetical case (nothing is stored)."""

    unit_code: str
    revision: int
    plugins: list[str]
    clocks: list[ClockOut]
    warnings: list[str]
    follow_ups: list[FollowUpOut]
