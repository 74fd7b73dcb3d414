"""Sending built messages: SMTP for ``mailto:`` destinations, HTTP POST for ``http(s)://``.

Channels build and sign (:class:`~core.plugins.types.OutboundMessage`); this module only
moves bytes, with the settings of the plugin that offered the channel:

* ``mailto:<address>`` — the body is a complete RFC 5322 message; it is sent to ``<address>``
  through the SMTP server in the plugin's settings (``host``, ``port``, ``security`` =
  ``ssl`` | ``starttls`` | ``none``, optional ``username``/``password``; envelope sender
  ``from_address``);
* ``http://`` / ``https://`` — POST of the body with the message's headers, through the
  platform's one webhook client (:class:`core.webhooks.urls.GuardedClients`: a keep-alive client
  per worker thread, no redirects, and the SSRF guard checking every address it connects to,
  as for integrators' subscriptions).

A :class:`DeliveryError` says whether trying again may help (``permanent``): a refused
recipient (SMTP 5xx), an HTTP 4xx other than 408/425/429, or a refused (non-public) address is
permanent; connection errors, timeouts, SMTP 4xx and HTTP 5xx are not.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from core.plugins.types import OutboundMessage
from core.webhooks.urls import AddressRefused, GuardedClients

RETRYABLE_HTTP = frozenset({408, 425, 429})


class DeliveryError(Exception):
    """A message could not be delivered.

    :param permanent: True when retrying cannot help (the delivery goes dead at once).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transports:
    """Sends :class:`OutboundMessage` objects by destination scheme.

    :param allow_private_networks: allow webhook URLs that resolve to loopback, private or
        link-local addresses (tests and the embedded default; refused in production, where a
        tenant-set URL must not reach the platform's own network:
        ``INSURDESK_WEBHOOK_ALLOW_PRIVATE``).
    :param http: the webhook clients to send through (default: new ones); the worker shares
        one set with the integrators' webhook dispatcher.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private_networks: bool = True,
        http: GuardedClients | None = None,
    ) -> None:
        self.timeout = timeout
        self.allow_private_networks = allow_private_networks
        self._own_http = http is None
        self.http = http or GuardedClients(allow_private=allow_private_networks, timeout=timeout)

    def close(self) -> None:
        """Close pooled HTTP connections (when this object made them)."""
        if self._own_http:
            self.http.close()

    def send(self, message: OutboundMessage, settings: Mapping[str, Any]) -> None:
        """Deliver ``message``; raises :class:`DeliveryError` when it was not accepted."""
        destination = message.destination
        lowered = destination.lower()
        if lowered.startswith("mailto:"):
            self._smtp(message, destination[len("mailto:") :], settings)
        elif lowered.startswith(("http://", "https://")):
            self._post(message)
        else:
            scheme = destination.partition(":")[0]
            raise DeliveryError(f"no transport for {scheme!r} destinations", permanent=True)

    # -- HTTP ---------------------------------------------------------------------------------

    def _post(self, message: OutboundMessage) -> None:
        headers = {**dict(message.headers), "content-type": message.content_type}
        try:
            status = self.http.post(message.destination, content=message.body, headers=headers)
        except AddressRefused as exc:
            raise DeliveryError(str(exc), permanent=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"HTTP {type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return
        permanent = 400 <= status < 500 and status not in RETRYABLE_HTTP
        raise DeliveryError(f"HTTP {status} from the receiver", permanent=permanent)

    # -- SMTP ---------------------------------------------------------------------------------

    def _smtp(self, message: OutboundMessage, rcpt: str, settings: Mapping[str, Any]) -> None:
        host = settings.get("host")
        if not host:
            raise DeliveryError("the e-mail channel has no SMTP host configured")
        security = settings.get("security", "ssl")
        port = int(settings.get("port") or (465 if security == "ssl" else 25))
        sender = str(settings.get("from_address") or "")
        try:
            client: smtplib.SMTP
            if security == "ssl":
                client = smtplib.SMTP_SSL(
                    host, port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(host, port, timeout=self.timeout)
            with client:
                if security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if settings.get("username"):
                    client.login(str(settings["username"]), str(settings.get("password", "")))
                client.sendmail(sender, [rcpt], message.body)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(500 <= code < 600 for code in codes)
            raise DeliveryError(
                f"SMTP refused the recipient ({codes})", permanent=permanent
            ) from exc
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600 and exc.smtp_code != 535
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=permanent
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}") from exc
