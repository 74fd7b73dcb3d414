"""email_smtp — the e-mail notification channel (SMTP).

It declares the ``email`` channel and builds each message (RFC 5322, UTF-8, a ``Message-ID``
derived from the notification id so a redelivery is recognisable). Sending is the outbox
relay's job: it reads the same settings (host, port, security, username, password).
The password is ``writeOnly``: the API never shows it, the history masks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from core.hookspecs import Notification, NotificationChannel, OutboundMessage, PluginInfo, hookimpl

NAME = "email_smtp"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host", "from_address"],
    "properties": {
        "host": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 465},
        "security": {"enum": ["ssl", "starttls", "none"], "default": "ssl"},
        "username": {"type": "string", "maxLength": 254},
        "password": {"type": "string", "maxLength": 512, "writeOnly": True},
        "from_address": {"type": "string", "format": "email"},
        "from_name": {"type": "string", "maxLength": 100, "default": "客户服务中心"},
        "reply_to": {"type": "string", "format": "email"},
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="电子邮件通知（SMTP）",
    title_en="E-mail notifications (SMTP)",
    description_zh="通过SMTP发送电子邮件通知；本插件构建邮件，由发件箱（outbox）投递。",
    description_en="E-mail notifications over SMTP: this plugin builds the messages; the "
    "outbox delivers them.",
    kind="channel",
)


@dataclass(frozen=True)
class EmailChannel:
    """The ``email`` channel: one RFC 5322 message per recipient address."""

    settings: Mapping[str, Any]
    name: str = "email"
    title_zh: str = "电子邮件"
    title_en: str = "E-mail"

    def build(self, message: Notification) -> list[OutboundMessage]:
        """One message per recipient that is an e-mail address."""
        out = []
        for recipient in message.recipients:
            if "@" not in recipient:
                continue
            mail = EmailMessage()
            mail["From"] = formataddr((self.settings["from_name"], self.settings["from_address"]))
            mail["To"] = recipient
            mail["Subject"] = message.subject
            mail["Date"] = format_datetime(message.created_at)
            digest = hashlib.sha256(f"{message.id}:{recipient}".encode()).hexdigest()[:24]
            domain = self.settings["from_address"].rpartition("@")[2]
            mail["Message-ID"] = f"<{digest}@{domain}>"
            if self.settings.get("reply_to"):
                mail["Reply-To"] = self.settings["reply_to"]
            mail["X-Insurdesk-Notification"] = message.id
            mail.set_content(message.body, charset="utf-8")
            out.append(
                OutboundMessage(
                    channel=self.name,
                    destination=f"mailto:{recipient}",
                    headers={"Message-ID": mail["Message-ID"]},
                    body=mail.as_bytes(),
                    content_type="message/rfc822",
                )
            )
        return out


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return INFO


@hookimpl
def insurdesk_plugin_config_schema() -> dict[str, Any]:
    """The settings schema (``host`` and ``from_address`` are required)."""
    return SCHEMA


@hookimpl
def insurdesk_notification_channels(settings: Mapping[str, Any]) -> list[NotificationChannel]:
    """The ``email`` channel, configured with this unit's settings."""
    return [EmailChannel(settings)]
