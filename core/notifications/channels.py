"""Where notification channels come from: the plugins enabled at the unit concerned.

A channel (``insurdesk_notification_channels``) builds and signs wire messages; the worker
sends them (:mod:`core.notifications.transports`) with the settings of the plugin that offered
the channel (e.g. the SMTP server of ``email_smtp``). The built-in plugins ``email_smtp`` and
``webhook`` offer ``email`` and ``webhook``; SMS and instant-messaging channels plug in the
same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.plugins.types import NotificationChannel

HOOK = "insurdesk_notification_channels"


@dataclass(frozen=True)
class ResolvedChannel:
    """A channel, the plugin that offered it and that plugin's settings at the unit."""

    channel: NotificationChannel
    plugin: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The channel's name (``email``, ``webhook`` ...)."""
        return self.channel.name


class ChannelSource(Protocol):
    """The channels available for a tenant at a unit."""

    def channels(self, tenant_id: uuid.UUID, unit_path: str) -> Sequence[ResolvedChannel]:
        """Channels enabled at the unit with materialized path ``unit_path``."""
        ...


class PluginChannels:
    """Channels from the plugins enabled at the unit, through the process's plugin host.

    A plugin that raises or returns something that is not a channel fails the event with a
    ``plugin-failed`` problem naming it (the outbox retries it with backoff and then marks it
    failed); it is never skipped silently.
    """

    def __init__(self, host: Any) -> None:
        self.host = host

    def channels(self, tenant_id: uuid.UUID, unit_path: str) -> Sequence[ResolvedChannel]:
        """See :class:`ChannelSource`."""
        from core.plugins.flows import PluginFailed, call_each

        tp = self.host.for_unit(tenant_id, unit_path)
        found: list[ResolvedChannel] = []
        names: dict[str, str] = {}
        for plugin, value in call_each(tp, HOOK):
            for channel in value or ():
                if not isinstance(channel, NotificationChannel):
                    raise PluginFailed(plugin, HOOK, f"{channel!r} is not a NotificationChannel")
                if channel.name in names:
                    raise PluginFailed(
                        plugin,
                        HOOK,
                        f"channel {channel.name!r} is already offered by {names[channel.name]!r}",
                    )
                names[channel.name] = plugin
                found.append(ResolvedChannel(channel, plugin, tp.settings.get(plugin, {})))
        return found


class StaticChannels:
    """The same channels for every tenant and unit (tests, benchmarks, embedding)."""

    def __init__(self, channels: Sequence[ResolvedChannel]) -> None:
        self._channels = tuple(channels)

    def channels(self, tenant_id: uuid.UUID, unit_path: str) -> Sequence[ResolvedChannel]:
        """See :class:`ChannelSource`."""
        return self._channels
