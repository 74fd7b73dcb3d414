"""Sending built messages: SMTP for ``mailto:`` destinations, HTTP POST for ``http(s)://``.

Channels build and sign (:class:`~core.plugins.types.OutboundMessage`); this module only
moves bytes, with the settings of the plugin that offered the channel:

* ``mailto:<address>`` — the body is a complete RFC 5322 message; it is sent to ``<address>``
  through the SMTP server in the plugin's settings (``host``, ``port``, ``security`` =
  ``ssl`` | ``starttls`` | ``none``, optional ``username``/``password``; envelope sender
  ``from_address``);
* ``http://`` / ``https://`` — POST of the body with the message's headers.

A :class:`DeliveryError` says whether trying again may help (``permanent``): a refused
recipient (SMTP 5xx) or an HTTP 4xx other than 408/429 is permanent; connection errors,
timeouts, SMTP 4xx and HTTP 5xx are not.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.plugins.types import OutboundMessage

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
        tenant-set URL must not reach the platform's own network).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private_networks: bool = True,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.timeout = timeout
        self.allow_private_networks = allow_private_networks
        self._http = http_client or httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def close(self) -> None:
        """Close pooled HTTP connections."""
        self._http.close()

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
        if not self.allow_private_networks:
            _refuse_private(message.destination)
        headers = {**dict(message.headers), "content-type": message.content_type}
        try:
            response = self._http.post(message.destination, content=message.body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"HTTP {type(exc).__name__}: {exc}") from exc
        status = response.status_code
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


def _refuse_private(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local:
            raise DeliveryError(
                f"{host!r} resolves to a non-public address; refused", permanent=True
            )
