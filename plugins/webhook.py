"""webhook — a generic signed-webhook channel (WeCom/DingTalk-style bots, integrators).

Messages follow the Standard Webhooks convention: a JSON body and three headers,
``webhook-id`` (the notification id: receivers deduplicate on it), ``webhook-timestamp``
(Unix seconds) and ``webhook-signature`` = ``v1,<base64 HMAC-SHA256>`` of
``"<id>.<timestamp>.<body>"`` keyed with the secret (``whsec_`` + base64 of the key bytes).
:func:`verify` is the receiver's side, for tests and integrators. The secret is ``writeOnly``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from core.hookspecs import Notification, NotificationChannel, OutboundMessage, PluginInfo, hookimpl

NAME = "webhook"
SECRET_PREFIX = "whsec_"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "secret"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2000},
        "secret": {
            "type": "string", "pattern": "^whsec_[A-Za-z0-9+/]{22,}={0,2}$", "writeOnly": True,
            "description": "whsec_ followed by the base64 of at least 16 random bytes",
        },
        "events": {
            "type": "array", "items": {"type": "string", "minLength": 1}, "default": ["*"],
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


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """Whether a received message is authentic and fresh (``tolerance`` seconds)."""
    try:
        msg_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = sign(secret, msg_id, stamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)


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
        timestamp = int(message.created_at.timestamp())
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
        headers = {
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.settings["secret"], message.id, timestamp, body),
            "content-type": "application/json",
        }
        return [OutboundMessage(
            channel=self.name, destination=self.settings["url"], headers=headers, body=body,
            content_type="application/json",
        )]


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
