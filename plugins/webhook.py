"""webhook — a signed-webhook notification channel to an endpoint the tenant configures.

This is a *notification channel*: the tenant's administrator points it (per unit, in the
plugin's settings) at one URL — a WeCom/DingTalk-style bot, an insurer's own system — which then
receives the rendered notification (subject and text in the tenant's language) of each event
it is subscribed to, recorded in the notification delivery log like an e-mail. Integrators'
event subscriptions (``/api/v1/webhooks``: id-only bodies, per-subscription secrets with
rotation, replay) are a different thing, in :mod:`core.webhooks` (docs/decisions/0007).

Both sign the same way, with the platform's one signer (:mod:`core.webhooks.signing`,
Standard Webhooks): a JSON body and three headers, ``webhook-id`` (the notification id:
receivers deduplicate on it), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` =
``v1,<base64 HMAC-SHA256>`` of ``"<id>.<timestamp>.<body>"`` keyed with the secret (``whsec_``
+ base64 of the key bytes); both are sent by the platform's one webhook client (SSRF-guarded).
:func:`verify` is the receiver's side, for tests and integrators. The secret is ``writeOnly``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from core.hookspecs import Notification, NotificationChannel, OutboundMessage, PluginInfo, hookimpl
from core.webhooks.signing import SECRET_PREFIX, sign, signed_headers, verify

NAME = "webhook"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "secret"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2000},
        "secret": {
            "type": "string",
            "pattern": "^whsec_[A-Za-z0-9+/]{22,}={0,2}$",
            "writeOnly": True,
            "description": "whsec_ followed by the base64 of at least 16 random bytes",
        },
        "events": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "default": ["*"],
            "description": "event patterns to send (fnmatch: case.*, deadline.breached ...)",
        },
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="签名 Webhook 通知",
    title_en="Signed webhook notifications",
    description_zh="向企业微信/钉钉机器人或集成方推送签名的 JSON 消息"
    "（Standard Webhooks，HMAC-SHA256）。",
    description_en="Signed JSON messages to WeCom/DingTalk-style bots or integrators "
    "(Standard Webhooks, HMAC-SHA256).",
    kind="channel",
)


@dataclass(frozen=True)
class WebhookChannel:
    """The ``webhook`` channel: one signed POST to the configured URL per notification."""

    settings: Mapping[str, Any]
    name: str = "webhook"
    title_zh: str = "Webhook"
    title_en: str = "Webhook"

    def build(self, message: Notification) -> list[OutboundMessage]:
        """The signed message, or nothing when the event is not subscribed."""
        if not any(fnmatchcase(message.event, p) for p in self.settings["events"]):
            return []
        body = json.dumps(
            {
                "type": message.event,
                "timestamp": message.created_at.isoformat(),
                "data": {
                    "id": message.id,
                    "tenant_id": str(message.tenant_id),
                    "subject": message.subject,
                    "body": message.body,
                    "recipients": list(message.recipients),
                    **dict(message.data),
                },
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        headers = signed_headers(
            self.settings["secret"], message.id, body, now=message.created_at.timestamp()
        )
        headers["content-type"] = "application/json"
        return [
            OutboundMessage(
                channel=self.name,
                destination=self.settings["url"],
                headers=headers,
                body=body,
                content_type="application/json",
            )
        ]


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return INFO


@hookimpl
def insurdesk_plugin_config_schema() -> dict[str, Any]:
    """The settings schema (``url`` and ``secret`` are required)."""
    return SCHEMA


@hookimpl
def insurdesk_notification_channels(settings: Mapping[str, Any]) -> list[NotificationChannel]:
    """The ``webhook`` channel, configured with this unit's settings."""
    return [WebhookChannel(settings)]


__all__ = ["SECRET_PREFIX", "WebhookChannel", "sign", "verify"]
