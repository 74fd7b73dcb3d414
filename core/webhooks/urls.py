"""Where webhooks may go: the SSRF guard, at subscription time and at every connection.

A tenant-chosen URL must not reach the platform's own network. Rules:

* ``https`` only with production settings (``http`` is accepted elsewhere, for tests and
  development receivers);
* no user-info in the URL, no fragment, a host name or address;
* every address the host resolves to must be public (:func:`is_public`): loopback, private
  (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
  multicast, reserved and unspecified addresses are refused, IPv4-mapped IPv6 included, unless
  ``INSURDESK_WEBHOOK_ALLOW_PRIVATE`` allows them.

The check runs when a subscription is saved and again when a delivery connects: the HTTP
client's network backend (:class:`GuardedBackend`) resolves the host, checks the addresses
and connects to the checked address itself, so a DNS answer that changes in between (DNS
rebinding) cannot slip a private address through. TLS still verifies the certificate for the
host name.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpcore
import httpx

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; :func:`resolve` by default (tests substitute one)."""


class AddressRefused(Exception):
    """A webhook URL or the address it resolves to is not allowed."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return bool(ip.is_global) and not ip.is_multicast


def allowed_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve
) -> list[str]:
    """The addresses of ``host`` a webhook may connect to; raises :class:`AddressRefused`."""
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise AddressRefused(f"the host {host!r} cannot be resolved: {exc}") from exc
    if not addresses:
        raise AddressRefused(f"the host {host!r} has no address")
    if allow_private:
        return addresses
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise AddressRefused(
            f"the host {host!r} resolves to a non-public address ({refused[0]}); webhooks may "
            "only reach public addresses"
        )
    return addresses


def check_url(
    url: str, *, https_only: bool, allow_private: bool, resolver: Resolver = resolve
) -> None:
    """Refuse a subscription URL that breaks the rules above (raises :class:`AddressRefused`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"the URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("the URL must use https (or http outside production)")
    if https_only and scheme != "https":
        raise AddressRefused("webhook URLs must use https")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("the URL must not carry a user name or password")
    if parts.fragment:
        raise AddressRefused("the URL must not have a fragment")
    if any(ch.isspace() for ch in url):
        raise AddressRefused("the URL must not contain spaces")
    allowed_addresses(
        parts.hostname,
        port or (443 if scheme == "https" else 80),
        allow_private=allow_private,
        resolver=resolver,
    )


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that connects only to allowed addresses (see above)."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve ``host``, refuse non-public addresses, connect to a checked one."""
        addresses = allowed_addresses(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error


USER_AGENT = "insurdesk-webhooks/1"


def _guarded_pool(*, allow_private: bool, resolver: Resolver) -> httpcore.ConnectionPool:
    """The connection pool of a webhook client: TLS verified, keep-alive, guarded backend."""
    return httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        max_connections=64,
        max_keepalive_connections=16,
        keepalive_expiry=30.0,
        network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver),
    )


def guarded_client(
    *, allow_private: bool, timeout: float = 10.0, resolver: Resolver = resolve
) -> httpx.Client:
    """An HTTP client for webhook deliveries: no redirects, no proxies from the environment,
    and every connection through :class:`GuardedBackend`."""
    transport = httpx.HTTPTransport(retries=0)
    # the same pool httpx builds, guarded
    transport._pool = _guarded_pool(allow_private=allow_private, resolver=resolver)
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProxyError: httpx.ProxyError,
}
_CAUGHT = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


class GuardedClients:
    """The platform's one way to POST to a webhook: a guarded keep-alive pool per thread.

    Both webhook paths send through it — the ``webhook`` notification channel
    (:mod:`core.notifications.transports`) and integrators' subscriptions
    (:mod:`core.webhooks.delivery`) — so one SSRF rule set applies to every tenant-chosen URL:
    the same :class:`GuardedBackend` as :func:`guarded_client`, no redirects, no proxies. Each
    worker thread keeps its own connection pool (no pool lock shared by the threads), and a
    receiver sees a few long-lived connections instead of one per message. Requests go to the
    pool directly (``httpcore``, the engine under ``httpx``): a webhook POST needs none of the
    client layer's cookies, auth, redirects or response decoding, which cost as much CPU as
    the HTTP exchange itself.
    """

    def __init__(
        self, *, allow_private: bool, timeout: float = 10.0, resolver: Resolver = resolve
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._local = threading.local()
        self._all: list[httpcore.ConnectionPool] = []
        self._lock = threading.Lock()

    def _pool(self) -> httpcore.ConnectionPool:
        found: httpcore.ConnectionPool | None = getattr(self._local, "pool", None)
        if found is None:
            found = _guarded_pool(allow_private=self.allow_private, resolver=self.resolver)
            self._local.pool = found
            with self._lock:
                self._all.append(found)
        return found

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> int:
        """POST ``content`` to ``url``; returns the response's status code (the body is read
        and dropped, so the connection can be reused).

        :raises AddressRefused: the host resolves to an address that is not allowed.
        :raises httpx.TransportError: the request failed (connection, timeout, protocol).
        """
        sent = [("user-agent", USER_AGENT), *headers.items()]
        try:
            answer = self._pool().request(
                "POST", url, headers=sent, content=content, extensions={"timeout": self._timeouts}
            )
        except _CAUGHT as exc:
            kind = next((v for k, v in _ERRORS.items() if isinstance(exc, k)), None)
            raise (kind or httpx.TransportError)(str(exc) or type(exc).__name__) from exc
        return int(answer.status)

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            pools, self._all = self._all, []
        for pool in pools:
            pool.close()
        self._local = threading.local()


__all__ = [
    "AddressRefused",
    "GuardedBackend",
    "GuardedClients",
    "allowed_addresses",
    "check_url",
    "guarded_client",
    "is_public",
    "resolve",
]
